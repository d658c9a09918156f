"""Parameter counts without building the weights (the table of SPEC 5 is tools/params.py)."""
import timm
import torch


def count_parameters(name, **kwargs):
    """Parameters of timm.create_model(name, **kwargs), built on the meta device (no memory, instant)."""
    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())
