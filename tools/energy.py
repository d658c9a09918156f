"""Theoretical energy (Table 1 "Power", eqs 25-27) counted two ways, and the memory traffic next to it:
firing rates measured on data, FLOPs counted by torch.utils.flop_counter, both passes of the feedback
included.

    python tools/energy.py --dataset imagenet --data-path DIR --checkpoint CKPT -T 4 --output energy.csv

--accounting paper (eq 26, the default; Table 1 is counted this way): only the encoding layer, the
first conv fed the real-valued image, costs E_MAC per MAC; every other term (convs, attention, the
FB-LiDiff feedback decoders, the head) costs E_AC per SOP, fr x MACs (eq 25). The static image is
the same at every time step, so the first conv is counted once (eq 26 has no T there).
--accounting strict: every layer whose input is not spike counts (the first conv, the feedback
decoders on the gated output, the head on averaged features) costs E_MAC per MAC.
The summary prints both. Memory access (weights read, spikes read and written, membrane state read
and written at every step) is a third figure at E_MEM_BIT per bit; see docs/decisions.md T8.
"""
import contextlib
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import models  # noqa: E402
from models import SpiLiFormer  # noqa: E402
from models.neurons import ILIF, LIF, is_spike_count  # noqa: E402

from tools.common import (DATASETS, InputSpace, batches, build_parser, parse, eval_data, load_model,  # noqa: E402
                          main_guard, write_csv)

E_MAC = 4.6e-12  # J per 32-bit float MAC at 45 nm (Horowitz, ISSCC 2014; eq 26)
E_AC = 0.9e-12   # J per 32-bit float add
# J per bit moved to or from memory: 3.12 pJ/bit, the figure of STEP (Shen et al. 2025, arXiv
# 2505.11151) after Horowitz 2014, and spikingjelly 2.0 op_counter's simple model (24.96 pJ/byte)
E_MEM_BIT = 3.12e-12
WORD_BITS = 32   # weights and membrane potentials are fp32
ACCOUNTINGS = ("paper", "strict")
COUNTED = (nn.Conv1d, nn.Conv2d, nn.Linear)
NEURONS = (LIF, ILIF)


@dataclass
class Layer:
    """What one layer did per image over the batches, before any accounting.

    kind: 'synapse' (conv/linear), 'matmul' (an attention's Q K^T V) or 'neuron'.
    macs: MACs per image, all time steps and both passes (0 for neurons).
    rate: for synapses and matmuls the input's mean spike count per element and step when it is
        spike counts, else the fraction of its elements that are non-zero (the events an
        event-driven core would see); for neurons the rate they fire at. None where not measured
        (a model on the meta device: set it by hand).
    spikes: the input is spike counts (non-negative integers); neurons: True.
    elements: input elements (synapses, matmuls) or neuron outputs (neurons), per image, all steps.
    bits: bits to store one of those elements: 1 per binary spike, enough for the largest count,
        the dtype's width for analog values.
    bias_outputs: outputs that read a bias (layers with one), per image.
    state_bits: bits of one neuron's membrane state.
    """
    name: str
    order: float
    kind: str
    macs: float = 0.0
    rate: Optional[float] = None
    spikes: Optional[bool] = None
    elements: float = 0.0
    bits: int = WORD_BITS
    bias_outputs: float = 0.0
    state_bits: int = WORD_BITS


class _Tally:
    """Running statistics of the tensors one module reads (or a neuron writes)."""

    def __init__(self):
        self.total, self.count, self.nonzero, self.elements, self.outputs = 0.0, 0, 0, 0, 0
        self.spikes, self.largest, self.dtype_bits, self.first_call = True, 0.0, WORD_BITS, None

    def add(self, x, call):
        self.first_call = call if self.first_call is None else self.first_call
        self.elements += x.numel()
        self.dtype_bits = x.element_size() * 8
        if x.is_meta:  # shapes only: nothing to measure
            self.spikes = None
            return
        x = x.detach()
        self.total += x.float().sum().item()
        self.nonzero += int(x.count_nonzero().item())
        self.count += x.numel()
        self.spikes = self.spikes and is_spike_count(x)
        self.largest = max(self.largest, x.abs().max().item() if x.numel() else 0.0)

    @property
    def rate(self):
        if not self.count:
            return None
        return (self.total if self.spikes else self.nonzero) / self.count

    @property
    def bits(self):
        if not self.spikes:
            return self.dtype_bits
        return max(1, int(self.largest).bit_length())  # 1 bit per binary spike, 3 for I-LIF's 0..4


def measure(model, data):
    """[Layer] over the batches of `data` (inputs ready for `model`), in the order they first run.

    FLOPs come from torch.utils.flop_counter (modules called twice, as in the two passes, count
    twice); spiking self-attention's matmuls (Q K^T V) are a layer of their own at the query's rate,
    read through each SpiLiFormer's `record_attention` (the model may be wrapped, e.g. InputSpace).
    On the meta device only the counts are filled (no rates).
    """
    calls = itertools.count()  # the order modules run in
    tallies, kinds, attn_tallies, handles = {}, {}, {}, []

    def on_input(tally):
        def hook(module, inputs, output):
            tally.add(inputs[0], next(calls))
            tally.outputs += output.numel()
        return hook

    def on_output(tally):
        def hook(module, inputs, output):
            tally.add(output, next(calls))
        return hook

    for name, module in model.named_modules():
        if isinstance(module, COUNTED):
            tallies[name], kinds[name] = _Tally(), "synapse"
            handles.append(module.register_forward_hook(on_input(tallies[name])))
        elif isinstance(module, NEURONS):
            tallies[name], kinds[name] = _Tally(), "neuron"
            handles.append(module.register_forward_hook(on_output(tallies[name])))
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
                        tally = attn_tallies.setdefault(f"{prefix}.{name}" if prefix else name, _Tally())
                        for query in record.query:  # both passes
                            tally.add(query, None)
                images += x.shape[0]
    finally:
        for h in handles:
            h.remove()
    if not images:
        raise models.ConfigError("no images to measure firing rates on: the data gave no batches")
    flops = counter.get_flop_counts()
    root = type(model).__name__

    def flops_of(name):
        return sum(flops.get(f"{root}.{name}", {}).values())

    def macs_of(name):
        return flops_of(name) / 2 / images

    def own_macs(name):  # an attention's MACs outside its conv/linear layers (counted there): Q K^T V
        inner = [n for n, kind in kinds.items() if kind == "synapse" and n.startswith(f"{name}.")]
        return (flops_of(name) - sum(flops_of(n) for n in inner)) / 2 / images

    def before_attention_neuron(name):  # Q K^T V, its neuron, then the attention's last layer
        return max(t.first_call for n, t in tallies.items()
                   if n.startswith(f"{name}.") and kinds[n] == "synapse" and t.first_call is not None) - 1.5

    def layer(name, order, kind, tally, macs=0.0):
        label = f"{name}.matmul" if kind == "matmul" else name
        module = model.get_submodule(name)
        bias = getattr(module, "bias", None) if kind == "synapse" else None
        # our LIF keeps an fp32 membrane whatever the input's dtype; I-LIF keeps the input's
        state = tally.dtype_bits if kind == "neuron" and not isinstance(module, LIF) else WORD_BITS
        return Layer(label.removeprefix("model."), order, kind, macs=macs, rate=tally.rate, spikes=tally.spikes,
                     elements=tally.elements / images, bits=tally.bits,
                     bias_outputs=tally.outputs / images if bias is not None else 0.0, state_bits=state)

    layers = [layer(n, t.first_call, kinds[n], t, macs_of(n) if kinds[n] == "synapse" else 0.0)
              for n, t in tallies.items() if t.first_call is not None]
    layers += [layer(n, before_attention_neuron(n), "matmul", t, own_macs(n))
               for n, t in attn_tallies.items() if t.elements and own_macs(n)]
    return sorted(layers, key=lambda entry: entry.order)


def energy_rows(layers, accounting="paper", static_T=1):
    """Per-layer rows of `accounting` ('paper' or 'strict', module docstring) for `measure`'s layers.

    Each row: layer, kind ('MAC', 'AC' or 'neuron'), MACs per image (all steps and passes; one step
    where `counted_once`), firing rate (the input's for AC rows, the neuron's own for neuron rows,
    None for MAC rows), SOPs, compute energy (J), and the memory traffic as hardware sees it, the
    same in both accountings: weight bits read (one weight per MAC or SOP, no reuse), spike bits
    read and written, membrane-state bits read and written (once each per neuron and step), and
    its energy (J).
    static_T: T over which a static image is repeated (its encoding layer is counted once).
    """
    if accounting not in ACCOUNTINGS:
        raise ValueError(f"accounting must be one of {ACCOUNTINGS}, got {accounting!r}")
    missing = [entry.name for entry in layers if entry.rate is None]
    if missing:
        raise ValueError(f"no firing rate for {missing[:3]}...: measure the model on data or set the rates")
    encoding = next((entry for entry in layers if entry.kind == "synapse"), None)
    rows = []
    for entry in layers:
        row = {"layer": entry.name, "macs": entry.macs, "firing_rate": entry.rate, "sops": 0.0, "energy_j": 0.0,
               "counted_once": False, "weight_bits": 0.0, "spike_bits": 0.0, "state_bits": 0.0}
        if entry.kind == "neuron":
            # every step each neuron reads and writes its membrane and writes its spike (or count)
            row.update(kind="neuron", spike_bits=entry.elements * entry.bits,
                       state_bits=2 * entry.elements * entry.state_bits)
        else:
            analog = not entry.spikes
            once = entry is encoding and analog and static_T > 1
            scale = 1 / static_T if once else 1.0
            macs = entry.macs * scale
            charged_mac = (entry is encoding and analog) if accounting == "paper" else analog
            sops = entry.rate * macs
            row.update(kind="MAC" if charged_mac else "AC", macs=macs, counted_once=once,
                       firing_rate=None if charged_mac else entry.rate,
                       sops=0.0 if charged_mac else sops,
                       energy_j=E_MAC * macs if charged_mac else E_AC * sops,
                       # hardware reads one weight per MAC (analog input) or per SOP (spikes)
                       weight_bits=WORD_BITS * ((macs if analog else sops) + entry.bias_outputs * scale),
                       spike_bits=entry.elements * scale * entry.bits)
        row["memory_j"] = E_MEM_BIT * (row["weight_bits"] + row["spike_bits"] + row["state_bits"])
        rows.append(row)
    return rows


def layer_energy(model, data, static_T=1, accounting="paper"):
    """`energy_rows` of `accounting` for `model` measured over `data`."""
    return energy_rows(measure(model, data), accounting, static_T)


def summary(rows, T):
    snn = sum(r["energy_j"] for r in rows)
    # eq 27: the same network as an ANN runs one step; a row counted once already is one step
    ann_macs = sum(r["macs"] if r["counted_once"] else r["macs"] / T for r in rows)
    bits = {key: sum(r[key] for r in rows) for key in ("weight_bits", "spike_bits", "state_bits")}
    return {"snn_mj": snn * 1e3, "ann_mj": E_MAC * ann_macs * 1e3, "ann_macs": ann_macs,
            "sops": sum(r["sops"] for r in rows), "macs": sum(r["macs"] for r in rows),
            "memory_mj": sum(r["memory_j"] for r in rows) * 1e3, **bits}


def print_table(rows, totals, accounting):
    """The per-layer table of `accounting`, then both accountings' totals side by side.
    `totals`: {accounting: summary}."""
    print(f"{'layer':<48} {'kind':<6} {'MACs/img':>12} {'fire rate':>9} {'SOPs/img':>12} {'energy mJ':>10} "
          f"{'memory mJ':>10}")
    for r in rows:
        rate = "-" if r["firing_rate"] is None else f"{r['firing_rate']:.4f}"
        print(f"{r['layer']:<48} {r['kind']:<6} {r['macs']:>12.4g} {rate:>9} {r['sops']:>12.4g} "
              f"{r['energy_j'] * 1e3:>10.5f} {r['memory_j'] * 1e3:>10.5f}")
    paper, strict = totals["paper"], totals["strict"]
    print(f"total: {paper['snn_mj']:.6g} mJ per image (paper, eq 26) | {strict['snn_mj']:.6g} mJ (strict) | "
          f"memory access {paper['memory_mj']:.6g} mJ | the same network as an ANN (eq 27): {paper['ann_mj']:.6g} mJ")
    print(f"  paper: E_MAC {E_MAC * 1e12:g} pJ x the encoding conv's MACs + E_AC {E_AC * 1e12:g} pJ x "
          f"{paper['sops']:.4g} SOPs; strict: every layer fed analog values at E_MAC ({strict['sops']:.4g} SOPs)")
    print(f"  memory: {E_MEM_BIT * 1e12:g} pJ/bit (STEP after Horowitz 2014, as spikingjelly 2.0's op_counter) x "
          f"{paper['weight_bits']:.4g} weight + {paper['spike_bits']:.4g} spike + {paper['state_bits']:.4g} "
          f"membrane-state bits")
    print(f"table above: {accounting} accounting")


def main(argv=None):
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--accounting", choices=ACCOUNTINGS, default="paper",
                        help="paper: eq 26, only the encoding conv at E_MAC (Table 1); strict: every layer fed "
                             "analog values at E_MAC. The summary prints both.")
    args = parse(parser, argv)  # --num-batches >= 1: firing rates are measured on data
    model = load_model(args)
    dataset, mean, std = eval_data(args, model)
    wrapped = InputSpace(model, mean, std).to(args.device)
    static = not DATASETS[args.dataset].event
    layers = measure(wrapped, (x for x, _ in batches(dataset, args)))
    static_T = model.T if static else 1
    rows = {accounting: energy_rows(layers, accounting, static_T) for accounting in ACCOUNTINGS}
    # event frames are integrated into the model's T as well
    totals = {accounting: summary(r, model.T) for accounting, r in rows.items()}
    print_table(rows[args.accounting], totals, args.accounting)
    write_csv(args.output, rows[args.accounting])
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
