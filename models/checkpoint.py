"""Loading weights: our own checkpoints and the official QKFormer / SpiLiFormer ones.

Official key names (QKFormer's public code; see tests/data/keys_*.txt) differ between its
ImageNet, CIFAR and DVS folders; `official_key` maps every one of them to ours, and
`NEW_TENSOR_RULES` is the one table for the tensors SpiLiFormer adds.
"""
import argparse
import re
from pathlib import Path

import torch

from .errors import CheckpointError, CheckpointMismatchError

# What official checkpoints hold besides tensors and plain containers: MAE/DeiT's `misc.save_model`
# (QKFormer's ImageNet code), timm's CheckpointSaver (its CIFAR code) and torchvision-style scripts
# (its DVS code) all store the run's argparse.Namespace as "args"; it only carries attributes.
SAFE_GLOBALS = (argparse.Namespace,)

# SpiLiFormer's own tensors (prompts, feedback decoders): (pattern, replacement) on a key.
# The authors' names for them could not be checked here (no released SpiLiFormer checkpoint is
# reachable offline); amend this table when one is: nothing else needs to change.
NEW_TENSOR_RULES = [
    (r"^feedback\.prompt_(excite|inhibit)$", r"feedback.prompt_\1"),
    (r"^feedback\.decoders\.(\d+)\.(linear|bn)\.(\w+)$", r"feedback.decoders.\1.\2.\3"),
]

_EMBED = re.compile(r"^patch_embed(\d)\.(proj\d?|proj_res)_(conv|bn)\.(\w+)$")
_ATTN = re.compile(r"^stage(\d)\.(\d+)\.(?:tssa|ssa|attn)\.(q|k|v|proj)_(conv|bn)\.(\w+)$")
_MLP = re.compile(r"^stage(\d)\.(\d+)\.mlp\.(?:fc|mlp)([12])_(conv|bn)\.(\w+)$")
_LATER_EMBED_CONV = {"proj": 0, "proj3": 0, "proj4": 1}  # CIFAR/ImageNet: proj3, proj4; DVS: proj, proj4


def official_key(key):
    """Official QKFormer/SpiLiFormer key -> ours, or None when it is not an official name."""
    if m := _EMBED.match(key):
        stage, name, layer, param = int(m[1]) - 1, m[2], m[3], m[4]
        if name == "proj_res":
            unit = "shortcut"
        elif stage == 0:
            unit = f"convs.{0 if name == 'proj' else int(name[4:])}"
        elif name in _LATER_EMBED_CONV:
            unit = f"convs.{_LATER_EMBED_CONV[name]}"
        else:
            return None
        return f"stages.{stage}.downsample.{unit}.{layer}.{param}"
    if m := _ATTN.match(key):
        return f"stages.{int(m[1]) - 1}.blocks.{m[2]}.attn.{m[3]}.{m[4]}.{m[5]}"
    if m := _MLP.match(key):
        return f"stages.{int(m[1]) - 1}.blocks.{m[2]}.mlp.fc{m[3]}.{m[4]}.{m[5]}"
    if re.match(r"^head\.(weight|bias)$", key):
        return key
    for pattern, replacement in NEW_TENSOR_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


# what other code bases' run records call our settings (QKFormer's --time-step, MAE's --nb_classes)
RECORDED_NAMES = {"time_step": "T", "nb_classes": "num_classes"}


def recorded_args(checkpoint):
    """A checkpoint's "args" (a dict, or an argparse.Namespace as MAE-style code saves it) as a dict."""
    recorded = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    recorded = vars(recorded) if isinstance(recorded, argparse.Namespace) else recorded
    return recorded if isinstance(recorded, dict) else {}


def recorded_settings(checkpoint):
    """The model settings a checkpoint records, under our names: its "model_args" (ours since they
    exist), else its run's "args" with other code bases' names mapped. Unchecked: a file is data."""
    own = checkpoint.get("model_args") if isinstance(checkpoint, dict) else None
    if isinstance(own, dict):
        return dict(own)
    args = recorded_args(checkpoint)
    theirs = {ours: args[name] for name, ours in RECORDED_NAMES.items() if args.get(name) is not None}
    return {**theirs, **{k: v for k, v in args.items() if v is not None}}


def unwrap(checkpoint):
    """A training checkpoint {'model': ...}, {'state_dict': ...} or a bare state dict -> state dict."""
    for wrapper in ("model", "state_dict", "model_ema"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def checkpoint_filter_fn(state_dict, model, strict=True):
    """Map a checkpoint's keys to `model`'s (timm's convention), checking every key.

    strict=True: any missing, unexpected or mis-shaped tensor raises CheckpointMismatchError naming
    them and the likely cause. strict=False (fine-tuning): returns only the tensors that fit and
    prints what was left out.
    """
    state_dict = unwrap(state_dict)
    own = model.state_dict()
    mapped, unknown = {}, []
    for key, value in state_dict.items():
        target = key if key in own else official_key(key)
        if target is None:
            unknown.append(key)
        else:
            mapped[target] = value
    unexpected = unknown + sorted(k for k in mapped if k not in own)
    missing = sorted(k for k in own if k not in mapped)
    shapes = sorted(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in mapped.items() if k in own and v.shape != own[k].shape)
    if missing or unexpected or shapes:
        if strict:
            raise CheckpointMismatchError(mismatch_report(missing, unexpected, shapes))
        mapped = {k: v for k, v in mapped.items() if k in own and v.shape == own[k].shape}
        if not any(name in mapped for name, _ in model.named_parameters()):
            raise CheckpointMismatchError(mismatch_report(missing, unexpected, shapes, title=(
                "no weight of the checkpoint fits the model (only buffers such as BN counters would "
                "load); it was trained as another architecture")) + "\n  likely cause: "
                + likely_cause(missing, unexpected, shapes))
        print(mismatch_report(missing, unexpected, shapes, title=(
            f"checkpoint loaded partially ({len(mapped)} of {len(own)} model tensors); the model's "
            "missing and mis-shaped tensors keep their initialisation, unexpected ones are ignored")))
    else:
        mapped = {k: mapped[k] for k in own}
    return mapped


def likely_cause(missing, unexpected, shapes):
    if missing and all(k.startswith("feedback.") for k in missing):
        return ("the checkpoint has no feedback prompts/decoders: it is a QKFormer (or fb_lidiff=False) "
                "model; build with fb_lidiff=False to evaluate it, or fine-tune from it non-strictly")
    if unexpected and all(k.startswith("feedback.") for k in unexpected):
        return "the checkpoint has feedback tensors: build the model with fb_lidiff=True"
    if any(k.startswith("feedback.") or "prompt" in k or "decoder" in k or "fb" in k.lower()
           for k in unexpected if official_key(k) is None):
        return ("SpiLiFormer tensors under names NEW_TENSOR_RULES in models/checkpoint.py does not know; "
                "add them to that table")
    if shapes and all(k.startswith("head.") for k in shapes):
        return "a different number of classes: pass the dataset's num_classes"
    return ("a different architecture (variant, embed_dim, depths or num_heads) than the checkpoint's; "
            "build the model it was trained as")


def mismatch_report(missing, unexpected, shapes, limit=20, title=None):
    def block(title, items):
        if not items:
            return ""
        more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
        return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:limit]) + more
    body = block("missing keys", missing) + block("unexpected keys", unexpected) + block("shape mismatches", shapes)
    if title is not None:
        return title + body
    return ("checkpoint does not match the model" + body
            + f"\n  likely cause: {likely_cause(missing, unexpected, shapes)}")


def read_checkpoint(path, map_location="cpu"):
    """torch.load(weights_only=True), allowing SAFE_GLOBALS, with errors that say what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        unsafe = refused_globals(path, exc)
        if unsafe:
            raise CheckpointError(
                f"{path} holds objects of type {', '.join(unsafe)}, which a checkpoint does not need and "
                "weights_only loading refuses (it could run code); if you trust the file, load it once "
                "passing weights_only=False to torch.load and re-save its 'model' state dict") from None
        raise CheckpointError(f"cannot read checkpoint {path} ({type(exc).__name__}: "
                              f"{str(exc).strip().splitlines()[0]}); the file is corrupt, truncated or not "
                              "a PyTorch checkpoint") from None


def refused_globals(path, exc):
    """The globals weights_only loading refused in `path` (empty when the file is merely broken)."""
    allowed = {f"{t.__module__}.{t.__qualname__}" for t in SAFE_GLOBALS}
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # legacy (non-zip) files: the loader's message names the global
        names = re.findall(r"GLOBAL ([\w.]+)", str(exc))
    return [n for n in dict.fromkeys(names) if n not in allowed]


def load_checkpoint(model, path, strict=True, map_location="cpu"):
    """Load weights from `path` (ours or official) into `model`; returns the raw checkpoint."""
    checkpoint = read_checkpoint(path, map_location)
    state_dict = checkpoint_filter_fn(checkpoint, model, strict=strict)
    model.load_state_dict(state_dict, strict=strict)
    return checkpoint
