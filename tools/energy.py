"""Theoretical energy (Table 1 "Power", eqs 25-27): firing rates measured on data, FLOPs counted by
torch.utils.flop_counter, both passes of the feedback included.

    python tools/energy.py --dataset imagenet --data-path DIR --checkpoint CKPT -T 4 --output energy.csv

A layer whose input is not spike counts (the first conv on the image, a head on averaged
features, the feedback decoders on the gated output) does multiply-accumulates (E_MAC); every
other layer does fr x MACs accumulates (SOPs, E_AC). The static image is the same at every time
step, so the first conv is counted once (eq 26).
"""
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from models import SpiLiFormer  # noqa: E402
from models.neurons import is_spike_count  # noqa: E402

from tools.common import (DATASETS, InputSpace, batches, build_parser, eval_data, load_model,  # noqa: E402
                          main_guard, write_csv)

E_MAC = 4.6e-12  # J, 45 nm (eq 26)
E_AC = 0.9e-12
COUNTED = (nn.Conv1d, nn.Conv2d, nn.Linear)


class _Rate:
    """Running mean of a tensor's values, and whether they were all spike counts."""

    def __init__(self):
        self.total, self.count, self.spikes, self.first_call = 0.0, 0, True, None

    def add(self, x, call=None):
        x = x.detach().float()
        self.total += x.sum().item()
        self.count += x.numel()
        self.spikes &= is_spike_count(x)
        self.first_call = call if self.first_call is None else self.first_call

    @property
    def mean(self):
        return self.total / max(self.count, 1)


def layer_energy(model, data, static_T=1):
    """Per-layer rows over the batches of `data` (inputs ready for `model`).

    Each row: layer, kind ('MAC' or 'AC'), MACs per image (all time steps, both passes; one step
    where `counted_once`), input firing rate (mean spike count per neuron and step; None for MAC
    layers), SOPs, energy (J).
    Spiking self-attention's matmuls (Q K^T V) are a row of their own, at the query's firing rate,
    read through each SpiLiFormer's `record_attention` (the model may be wrapped, e.g. InputSpace).
    static_T: T over which a static image is repeated (its first layer is counted once).
    """
    calls = []
    rates, attn_rates = {}, {}
    handles = []
    def on_input(rate):
        def hook(module, inputs, output):
            rate.add(inputs[0], len(calls))
            calls.append(rate)
        return hook

    for name, module in model.named_modules():
        if isinstance(module, COUNTED):
            rates[name] = _Rate()
            handles.append(module.register_forward_hook(on_input(rates[name])))
    nets = {prefix: m for prefix, m in model.named_modules() if isinstance(m, SpiLiFormer)}
    counter = FlopCounterMode(display=False)
    images = 0
    try:
        with torch.no_grad(), counter:
            for x in data:
                with contextlib.ExitStack() as stack:
                    recorded = {prefix: stack.enter_context(net.record_attention()) for prefix, net in nets.items()}
                    model(x)
                for prefix, records in recorded.items():
                    for name, record in records.items():
                        rate = attn_rates.setdefault(f"{prefix}.{name}" if prefix else name, _Rate())
                        for query in record.query:  # both passes
                            rate.add(query)
                images += x.shape[0]
    finally:
        for h in handles:
            h.remove()
    flops = counter.get_flop_counts()
    root = type(model).__name__

    def macs_of(name, exclude_conv=False):
        counts = flops.get(f"{root}.{name}", {})
        return sum(v for op, v in counts.items() if not (exclude_conv and "convolution" in str(op))) / 2 / images

    def before_output_projection(name):  # Q K^T V runs just before the attention's last layer
        return max(r.first_call for n, r in rates.items() if n.startswith(f"{name}.") and r.count) - 0.5

    entries = [(r.first_call, name, r, macs_of(name)) for name, r in rates.items() if r.count]
    entries += [(before_output_projection(name), f"{name}.matmul", r, macs_of(name, exclude_conv=True))
                for name, r in attn_rates.items() if r.count and macs_of(name, exclude_conv=True)]
    rows = []
    for call, name, rate, macs in sorted(entries, key=lambda e: e[0]):
        once = not rate.spikes and call == 0 and static_T > 1
        if rate.spikes:
            row = {"kind": "AC", "macs": macs, "firing_rate": rate.mean, "sops": rate.mean * macs}
            row["energy_j"] = E_AC * row["sops"]
        else:
            if once:
                macs /= static_T  # the same image at every step: computed once
            row = {"kind": "MAC", "macs": macs, "firing_rate": None, "sops": 0.0, "energy_j": E_MAC * macs}
        row["counted_once"] = once
        rows.append({"layer": name.removeprefix("model."), **row})
    return rows


def summary(rows, T):
    snn = sum(r["energy_j"] for r in rows)
    # eq 27: the same network as an ANN runs one step; a row counted once already is one step
    ann_macs = sum(r["macs"] if r["counted_once"] else r["macs"] / T for r in rows)
    return {"snn_mj": snn * 1e3, "ann_mj": E_MAC * ann_macs * 1e3, "ann_macs": ann_macs,
            "sops": sum(r["sops"] for r in rows), "macs": sum(r["macs"] for r in rows)}


def print_table(rows, totals):
    print(f"{'layer':<48} {'kind':<4} {'MACs/img':>12} {'fire rate':>9} {'SOPs/img':>12} {'energy mJ':>10}")
    for r in rows:
        rate = "-" if r["firing_rate"] is None else f"{r['firing_rate']:.4f}"
        print(f"{r['layer']:<48} {r['kind']:<4} {r['macs']:>12.4g} {rate:>9} {r['sops']:>12.4g} "
              f"{r['energy_j'] * 1e3:>10.5f}")
    print(f"total: {totals['snn_mj']:.4f} mJ per image (E_MAC 4.6 pJ x first-layer MACs + E_AC 0.9 pJ x "
          f"{totals['sops']:.4g} SOPs); the same network as an ANN: {totals['ann_mj']:.4f} mJ")


def main(argv=None):
    parser = build_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    model = load_model(args)
    dataset, mean, std = eval_data(args, model)
    wrapped = InputSpace(model, mean, std).to(args.device)
    static = not DATASETS[args.dataset].event
    rows = layer_energy(wrapped, (x for x, _ in batches(dataset, args)), static_T=model.T if static else 1)
    totals = summary(rows, model.T)  # event frames are integrated into the model's T as well
    print_table(rows, totals)
    write_csv(args.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
