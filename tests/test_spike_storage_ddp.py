"""Spike storage under DDP: two processes train to the same weights with and without it."""
import torch

from datagen import write_cifar
from test_cifar import train, weights


def test_two_process_ddp_with_spike_storage_reaches_the_same_weights(tmp_path):
    root = tmp_path / "data"
    write_cifar(root, "cifar10")
    common = ["--epochs", "1", "--warmup-epochs", "0", "-b", "2", "--mixup", "0", "--lr", "1e-3"]
    train("cifar10", root, tmp_path, *common, "--experiment", "off", nproc=2)
    log = train("cifar10", root, tmp_path, *common, "--spike-storage", "lean", "--experiment", "lean", nproc=2)
    assert "world_size: 2" in log
    off = weights(tmp_path / "off" / "checkpoint-last.pth")
    lean = weights(tmp_path / "lean" / "checkpoint-last.pth")
    assert all(torch.equal(off[k], lean[k]) for k in off)
