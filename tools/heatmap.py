"""Attention heatmaps (Figs 1, 2, 4-7): where each FF-LiDiff and FB-LiDiff block attends, over the
input, in a PNG grid with true label, prediction and confidence (Fig 2's layout).

    python tools/heatmap.py --dataset imagenet --data-path DIR --checkpoint CKPT --images 0 5 9 --output fig.png

A block's map is its attention neuron's output averaged over time steps and heads/channels, per
token: the FF token mask (eq 7) and the FB attention spikes of pass 1 and pass 2 (eqs 10, 18).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import models  # noqa: E402
from tools.common import InputSpace, build_parser, parse, eval_data, load_model, main_guard  # noqa: E402

CELL_INCHES, DPI = 2.0, 100


@torch.no_grad()
def attention_maps(model, x):
    """{column title: [B, H, W] map in [0, 1]} for the last FF block of each shallow stage and the
    last FB block in pass 1 and pass 2, plus the pass-2 probabilities. `model`: an InputSpace."""
    stage_of = {names[-1]: i for i, names in enumerate(model.model.attention_names()) if names}
    with model.model.record_attention(list(stage_of)) as records:
        probs = model(x).softmax(-1)
    H, W = x.shape[-2:]
    maps = {}
    for name, record in records.items():
        key = f"stage {stage_of[name] + 1} {record.kind}"
        outputs = record.attention
        for p, out in enumerate(outputs):
            per_token = out.float().mean(0)                        # over time steps
            per_token = per_token.flatten(1, -2).mean(1) if per_token.dim() > 3 else per_token.mean(1)
            n = per_token.shape[-1]
            r = (H * W / n) ** 0.5
            grid = per_token.view(-1, 1, round(H / r), round(W / r))
            up = F.interpolate(grid, size=(H, W), mode="bilinear", align_corners=False)[:, 0]
            lo, hi = up.flatten(1).min(1).values, up.flatten(1).max(1).values
            up = (up - lo.view(-1, 1, 1)) / (hi - lo).clamp(min=1e-8).view(-1, 1, 1)
            title = key + (f" pass {p + 1}" if len(outputs) > 1 else "")
            maps[title] = up
    return maps, probs


def to_image(x):
    """[C, H, W] input -> an [H, W, 3] picture (event frames: polarity counts summed over time)."""
    if x.dim() == 4:  # event frames [T, 2, H, W]
        counts = x.sum(0)
        rgb = torch.stack([counts[0], torch.zeros_like(counts[0]), counts[1]])
        return (rgb / rgb.max().clamp(min=1)).permute(1, 2, 0).cpu()
    return x.clamp(0, 1).permute(1, 2, 0).cpu()


def draw_grid(images, labels, maps, probs, class_names, path):
    columns = ["input", *maps]
    rows = len(images)
    fig, axes = plt.subplots(rows, len(columns), squeeze=False,
                             figsize=(CELL_INCHES * len(columns), CELL_INCHES * rows), dpi=DPI)
    for r in range(rows):
        picture = to_image(images[r])
        conf, pred = probs[r].max(0)
        for c, title in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(picture)
            if title != "input":
                ax.imshow(maps[title][r].cpu(), cmap="jet", alpha=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
        ok = pred.item() == labels[r]
        axes[r][0].set_xlabel(f"true {class_names[labels[r]]}\npred {class_names[pred.item()]} ({conf.item():.2f})",
                              fontsize=6, color="green" if ok else "red")
    fig.subplots_adjust(left=0.02, right=0.98, top=0.92, bottom=0.08, wspace=0.05, hspace=0.35)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return len(columns)


def main(argv=None):
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=None,
                        help="dataset indices to show (default: the first --num-batches x --batch-size... capped at 8)")
    args = parse(parser, argv)
    args.output = args.output or "heatmaps.png"
    model = load_model(args)
    dataset, mean, std = eval_data(args, model)
    indices = args.images or list(range(min(8, len(dataset), args.batch_size)))
    outside = [i for i in indices if not 0 <= i < len(dataset)]
    if outside:
        raise models.ConfigError(f"--images {' '.join(map(str, outside))}: the evaluation data has {len(dataset)} "
                                 f"images (indices 0..{len(dataset) - 1})")
    samples = [dataset[i] for i in indices]
    x = torch.stack([s[0] for s in samples]).to(args.device)
    labels = [int(s[1]) for s in samples]
    wrapped = InputSpace(model, mean, std).to(args.device).eval()
    maps, probs = attention_maps(wrapped, x)
    names = getattr(dataset, "classes", None) or [str(i) for i in range(probs.shape[1])]
    columns = draw_grid(list(x), labels, maps, probs, names, args.output)
    print(f"wrote {args.output}: {len(indices)} images x {columns} columns ({', '.join(['input', *maps])})")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
