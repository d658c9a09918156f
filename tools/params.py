"""Print the parameter table of SPEC 5 / Tables 1-2, counted from the code.

    python tools/params.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.registry import DATASETS  # noqa: E402
from models.params import count_parameters  # noqa: E402


def parameter_table():
    """Rows (dataset, variant, SpiLiFormer count, expected, QKFormer count, expected), counted from code."""
    rows = []
    for name, entry in DATASETS.items():
        ours = count_parameters(entry.model, num_classes=entry.num_classes)
        qk = count_parameters(entry.model, num_classes=entry.num_classes, ff_lidiff=False, fb_lidiff=False)
        rows.append((name, entry.model, ours, entry.params[0], qk, entry.params[1]))
    return rows


def main():
    rows = parameter_table()
    print(f"{'dataset':<12} {'model':<20} {'SpiLiFormer':>12} {'QKFormer':>12} {'added':>9}  paper")
    ok = True
    for dataset, name, ours, expected, qk, expected_qk in rows:
        match = ours == expected and qk == expected_qk
        ok &= match
        print(f"{dataset:<12} {name:<20} {ours:>12,} {qk:>12,} {ours - qk:>9,}  "
              f"{ours / 1e6:.2f} M {'ok' if match else f'MISMATCH (expected {expected:,} / {expected_qk:,})'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
