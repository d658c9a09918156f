"""Effective memory bandwidth of the LIF kernels (eqs 1-3) on CUDA, against a device copy and the
GPU's HBM peak. The fused Triton kernels should reach >= 70 % of the peak.

    python tools/lif_bandwidth.py                        # T=4, the 10-768 stem's largest neuron, fp32/bf16/fp16
    python tools/lif_bandwidth.py --shape 4 64 192 56 56 --dtype bf16
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from models.lif_backends import lif_kernels  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# HBM peak bandwidth (GB/s) from the vendors' data sheets, by device-name fragment (most specific first)
HBM_PEAK_GBS = {"H200": 4800, "H100 NVL": 3900, "H100 PCIe": 2000, "H100": 3350, "A100-SXM4-80GB": 2039,
                "A100 80GB PCIe": 1935, "A100": 1555, "L40S": 864, "V100": 900, "RTX 4090": 1008}


def hbm_peak_gbs(name):
    return next((gbs for key, gbs in HBM_PEAK_GBS.items() if key in name), None)


def lif_bandwidth(shape, dtype, backends=("triton", "torch"), d_dtype=None):
    """Effective GB/s of each LIF kernel's forward and backward on CUDA, and of a device copy.

    Bytes counted are the minimum each pass must move: forward reads x and writes spikes, d and
    the last v; backward reads d and the spike gradient and writes the input gradient and v's.
    """
    from triton.testing import do_bench

    x = torch.randn(shape, device="cuda", dtype=dtype) + 1
    d_dtype = d_dtype or dtype
    T, n = shape[0], x[0].numel()
    xb, db = x.element_size(), torch.empty(0, dtype=d_dtype).element_size()
    fwd_bytes = T * n * (2 * xb + db) + 4 * n
    bwd_bytes = T * n * (2 * xb + db) + 4 * n
    rows = []
    for backend in backends:
        fwd, bwd = lif_kernels(backend)
        d_seq = torch.empty(shape, device="cuda", dtype=d_dtype)
        ms_f = do_bench(lambda: fwd(x, None, 1.0, d_seq))
        grad = torch.randn_like(x)
        ms_b = do_bench(lambda: bwd(d_seq, grad, None, dtype))
        rows.append((backend, fwd_bytes / ms_f / 1e6, bwd_bytes / ms_b / 1e6))
    src = torch.empty(T * n * xb // 4, device="cuda", dtype=torch.float32)
    dst = torch.empty_like(src)
    ms_c = do_bench(lambda: dst.copy_(src))
    copy_gbs = 2 * src.numel() * 4 / ms_c / 1e6
    return rows, copy_gbs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs="+", default=[4, 64, 192, 56, 56], help="[T, ...] (default: "
                   "T=4, batch 64, SpiLiFormer-10-768's stem output)")
    p.add_argument("--dtype", choices=sorted(DTYPES), nargs="+", default=["fp32", "bf16", "fp16"],
                   help="input dtypes to measure")
    p.add_argument("--backends", choices=("triton", "torch"), nargs="+", default=["triton", "torch"],
                   help="LIF kernels to measure")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: the LIF bandwidth is measured on CUDA; no GPU here (the kernels' correctness is tested on "
              "CPU with TRITON_INTERPRET=1: python -m pytest tests/test_lif_kernels.py)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name()
    peak = hbm_peak_gbs(name)
    print(f"{name}; HBM peak {peak or '?'} GB/s (data sheet); shape {args.shape}")
    print(f"{'dtype':<6} {'kernel':<8} {'fwd GB/s':>9} {'bwd GB/s':>9} {'fwd/peak':>9} {'bwd/peak':>9} {'copy GB/s':>10}")
    for dname in args.dtype:
        rows, copy_gbs = lif_bandwidth(tuple(args.shape), DTYPES[dname], args.backends)
        for backend, fwd, bwd in rows:
            frac = (lambda g: f"{g / peak:>8.0%}") if peak else (lambda g: f"{'?':>8}")
            print(f"{dname:<6} {backend:<8} {fwd:>9.0f} {bwd:>9.0f} {frac(fwd):>9} {frac(bwd):>9} {copy_gbs:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
