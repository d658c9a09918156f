import os
import sys
import warnings
from pathlib import Path

# one torch thread per process (before torch starts): the suite runs training subprocesses beside
# itself on two cores, where more threads than cores only contend; a user's OMP_NUM_THREADS wins
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", message=".*torch.jit.script.*")

import models  # noqa: E402,F401  (registers the variants)

# Tiny versions of the three variants: same code paths, seconds on CPU.
TINY = {
    "cifar": ("spiliformer_4_384", dict(embed_dim=64, depths=(1, 1, 1), num_heads=2, T=2), (3, 3, 16, 16)),
    "imagenet": ("spiliformer_10_768", dict(embed_dim=48, depths=(1, 1, 2), num_heads=2, T=2), (3, 3, 32, 32)),
    "event": ("spiliformer_2_256", dict(embed_dim=64, depths=(1, 1), num_heads=2), (3, 2, 2, 32, 32)),
}


def lively(model, scale=5.0, seed=0):
    """Scale weights up (as the official reference tensors were made) so that neurons fire."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                m.weight.mul_(scale)
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g) + 0.3)
        if getattr(model, "feedback", None) is not None:  # excite along spikes (>= 0), inhibit against
            model.feedback.prompt_excite.abs_()
            model.feedback.prompt_inhibit.copy_(-model.feedback.prompt_inhibit.abs())
    return model


def tiny_model(stem, seed=0, **overrides):
    name, kwargs, _ = TINY[stem]
    torch.manual_seed(seed)
    kwargs = {"feedback_scale": 4.0, **kwargs, **overrides}
    return lively(timm.create_model(name, num_classes=5, backend="torch", **kwargs))


def tiny_input(stem, batch=None, seed=1):
    shape = list(TINY[stem][2])
    if batch is not None:
        shape[0] = batch
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=g)
    return (x > 0.7).float() if stem == "event" else x  # event frames are counts


@pytest.fixture(params=sorted(TINY))
def stem(request):
    return request.param
