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


def test_drop_path_and_feedback_wiring_flags_reach_the_model():
    from engine.config import build_parser, parse_args
    from engine.runner import create_model

    args = parse_args(build_parser("t"), ["--embed-dim", "64", "--drop-path", "0.2", "--chained-feedback"])
    model = create_model(args, num_classes=10)
    assert model.stages[-1].blocks[-1].drop_path.drop_prob == pytest.approx(0.2)
    assert model.feedback.chained
    args = parse_args(build_parser("t"), ["--embed-dim", "64"])
    assert (args.drop_path, args.chained_feedback, args.amp_dtype) == (0.0, False, "fp16")
