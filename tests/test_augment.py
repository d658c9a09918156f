"""The recipes' real training transforms at the magnitudes that broke them."""
import random

import numpy as np
import torch
from PIL import Image

from engine import registry
from engine.config import parse_command_line
from engine.data import image_transforms


def recipe_transform(*argv):
    args = parse_command_line(registry.get("cifar10"), list(argv))  # the paper recipe, as train.py resolves it
    return image_transforms(args)[0]


def test_randaugment_at_magnitude_10_survives_thousands_of_images():
    """`-inc1` maps magnitude 10 to posterize with 0 bits; Pillow >= 12 raises on it."""
    transform = recipe_transform("--aa", "rand-m10-n3-mstd0-inc1")
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        out = transform(image)
        assert out.shape == (3, 32, 32) and torch.isfinite(out).all()


def test_posterize_to_zero_bits_gives_a_black_image_as_pillow_11_did():
    transform = recipe_transform("--aa", "rand-m10-n1-mstd0-inc1")
    randaug = next(t for t in transform.transforms if type(t).__name__ == "RandAugment")
    op = next(op for op in randaug.ops if op.name == "PosterizeIncreasing")
    op.prob = 1.0
    image = Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8))
    assert np.asarray(op(image)).max() == 0


def test_aa_none_turns_randaugment_off():
    for value in ("none", "", "None"):
        transform = recipe_transform("--aa", value)
        assert not any("Augment" in type(t).__name__ for t in transform.transforms)
