"""Engine pieces that the end-to-end tests cannot reach: a crash in the middle of a save."""
import pytest
import torch

from engine.checkpoint import save_atomic


def test_a_crash_mid_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint-last.pth"
    save_atomic({"epoch": 3, "model": {"w": torch.ones(4)}}, path)

    def dying_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"epoch": 4, "model": {"w": torch.zeros(4)}}, path)
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 3 and torch.equal(state["model"]["w"], torch.ones(4))
