#!/usr/bin/env bash
# Everything only a GPU shows, in one command; the results are appended to docs/benchmarks.md.
#
#   bash tools/gpu_check.sh            # on a machine with a CUDA GPU, from the repository root
#
# 1. backend, devices and versions (python -m models)
# 2. the GPU tests: Triton and CuPy LIF kernels on CUDA in fp32/fp16/bf16, the model on CUDA
# 3. tools/benchmark.py --compare for SpiLiFormer-4-384 (batch 64) and -10-768 (batch 32) under
#    bf16 and fp16 AMP (targets: fast >= 1.35x the straight port, >= 1.0x QKFormer's straight port),
#    and 4-384 bf16 once more with --compile
# 4. the LIF kernels' effective GB/s against the HBM peak (target: >= 70 %)
# 5. a 1-GPU torchrun smoke run of cifar10/train.py on generated data, with --compile
# 6. spike storage (issue 20): what backward keeps for SpiLiFormer-10-768 under fp16 AMP (--memory-report),
#    and the --compare table with `fast` on spike storage at batch 32 and 64 under fp16 AMP
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${GPU_CHECK_OUT:-gpu_check_out}
mkdir -p "$OUT"
status=0

step() {  # step NAME COMMAND...: run, keep the output, remember a failure
    local name=$1; shift
    echo "== $name: $*"
    if ! "$@" 2>&1 | tee "$OUT/$name.txt"; then status=1; echo "!! $name failed" | tee -a "$OUT/$name.txt"; fi
}

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible')" || exit 2
step env python -m models
step tests python -m pytest -q -rs tests/test_lif_kernels.py tests/test_neurons.py tests/test_speed.py \
    tests/test_triton_aot.py tests/test_spike_storage.py
for amp in bf16 fp16; do
    step "compare_4_384_$amp" python tools/benchmark.py --model spiliformer_4_384 -b 64 -T 4 --device cuda \
        --compare --amp "$amp" --json "$OUT/compare_4_384_$amp.json"
    step "compare_10_768_$amp" python tools/benchmark.py --model spiliformer_10_768 -b 32 -T 4 --device cuda \
        --compare --amp "$amp" --json "$OUT/compare_10_768_$amp.json"
done
step compare_4_384_bf16_compile python tools/benchmark.py --model spiliformer_4_384 -b 64 -T 4 --device cuda \
    --compare --amp bf16 --compile --json "$OUT/compare_4_384_bf16_compile.json"
step bandwidth python tools/lif_bandwidth.py
step memory_10_768_fp16 python tools/benchmark.py --model spiliformer_10_768 -b 32 -T 4 --device cuda --amp fp16 \
    --memory-report --json "$OUT/memory_10_768_fp16.json"
for batch in 32 64; do
    step "compare_10_768_fp16_storage_b$batch" python tools/benchmark.py --model spiliformer_10_768 -b "$batch" -T 4 \
        --device cuda --compare --amp fp16 --spike-storage --json "$OUT/compare_10_768_fp16_storage_b$batch.json"
done
DATA=$(mktemp -d)
python -c "import sys; sys.path.insert(0, 'tests'); from datagen import write_cifar; write_cifar('$DATA', train_per_batch=256, test=128)"
step torchrun torchrun --nproc_per_node=1 ./cifar10/train.py --config ./cifar10/cifar10.yml -data-dir "$DATA" \
    --no-verify -T 4 -b 64 --epochs 1 --warmup-epochs 0 --cooldown-epochs 0 -j 2 --compile --output "$OUT/run"

python - "$OUT" <<'PY'
import datetime, pathlib, sys, torch
out = pathlib.Path(sys.argv[1])
device = f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}"
parts = [f"\n## GPU check: {device}, {datetime.date.today()}\n", "Written by `bash tools/gpu_check.sh`.\n"]
for name in ["env", "compare_4_384_bf16", "compare_10_768_bf16", "compare_4_384_fp16", "compare_10_768_fp16",
             "compare_4_384_bf16_compile", "bandwidth", "memory_10_768_fp16", "compare_10_768_fp16_storage_b32",
             "compare_10_768_fp16_storage_b64", "tests"]:
    text = (out / f"{name}.txt").read_text() if (out / f"{name}.txt").exists() else "(missing)"
    lines = [l for l in text.splitlines() if not l.startswith(("W1", "V1", "I1"))]
    parts.append(f"### {name}\n\n```\n" + "\n".join(lines[-25:]) + "\n```\n")
run = (out / "torchrun.txt").read_text().splitlines() if (out / "torchrun.txt").exists() else ["(missing)"]
parts.append("### torchrun smoke (1 GPU, --compile)\n\n```\n" + "\n".join(l for l in run if l.startswith(("epoch", "done", "error", "!!")))[-3000:] + "\n```\n")
with open("docs/benchmarks.md", "a") as f:
    f.write("\n".join(parts))
print(f"appended the results to docs/benchmarks.md ({out}/ keeps the full outputs)")
PY
exit $status
