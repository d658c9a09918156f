"""Engine pieces that the end-to-end tests cannot reach: kills and full disks during saves, run
folders, flag and recipe checks, errors from loader workers."""
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


def test_a_full_disk_leaves_no_temporary_file_and_says_so(tmp_path, monkeypatch):
    import errno

    from models import CheckpointError
    path = tmp_path / "checkpoint-last.pth"
    save_atomic({"epoch": 3}, path)

    def full_disk(obj, f):
        f.write(b"part of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_atomic({"epoch": 4}, path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-last.pth"]
    save_atomic({"epoch": 4}, path)  # the next save works
    assert torch.load(path, weights_only=True)["epoch"] == 4


def test_a_kill_between_last_and_best_is_repaired_on_resume(tmp_path, monkeypatch):
    from engine import checkpoint
    save = checkpoint.save_epoch
    save({"epoch": 0, "best_epoch": 0}, tmp_path, is_best=True, keep_epoch=False)

    def killed(src, dst):
        raise KeyboardInterrupt("killed before the best link")

    monkeypatch.setattr(checkpoint, "link_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        save({"epoch": 1, "best_epoch": 1}, tmp_path, is_best=True, keep_epoch=False)
    monkeypatch.undo()
    last = tmp_path / "checkpoint-last.pth"
    state = torch.load(last, weights_only=True)
    assert checkpoint.checkpoint_epoch(tmp_path / "checkpoint-best.pth") == 0  # the run reports epoch 1
    checkpoint.repair_best(last, state, tmp_path)
    assert checkpoint.checkpoint_epoch(tmp_path / "checkpoint-best.pth") == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_best_and_periodic_checkpoints_survive_the_next_epoch(tmp_path):
    from engine.checkpoint import checkpoint_epoch, save_epoch
    save_epoch({"epoch": 0}, tmp_path, is_best=True, keep_epoch=True)
    save_epoch({"epoch": 1}, tmp_path, is_best=False, keep_epoch=False)
    assert checkpoint_epoch(tmp_path / "checkpoint-best.pth") == 0
    assert checkpoint_epoch(tmp_path / "checkpoint-1.pth") == 0
    assert checkpoint_epoch(tmp_path / "checkpoint-last.pth") == 1


def test_two_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    import time

    from engine.config import build_parser, parse_args
    from engine.distributed import Dist
    from engine.runner import claim_run_folder
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")
    args = parse_args(build_parser("t"), ["--model", "spiliformer_4_384", "--output", str(tmp_path), "-T", "4"])
    first, second = claim_run_folder(args, Dist(), 4), claim_run_folder(args, Dist(), 4)
    assert first != second and first.is_dir() and second.is_dir()


@pytest.mark.parametrize("argv,message", [
    (["-T", "0"], "argument -T/--T/--time-step: must be >= 1, got 0"),
    (["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["-b", "-2"], "argument -b/--batch-size: must be >= 1, got -2"),
    (["--workers", "-1"], "argument -j/--workers/--num-workers: must be >= 0, got -1"),
    (["--lr", "nan"], "argument --lr: must be > 0, got nan"),
    (["--lr", "-1"], "argument --lr: must be > 0, got -1"),
    (["--smoothing", "2"], "argument --smoothing: must be in [0, 1), got 2"),
    (["--drop_path", "1.5"], "argument --drop-path: must be in [0, 1), got 1.5"),
    (["--reprob", "inf"], "argument --reprob: must be in [0, 1], got inf"),
    (["--img-size", "0"], "argument --img-size/--input-size: must be >= 1, got 0"),
    (["--recount", "0"], "argument --recount: must be >= 1, got 0"),
    (["--layer-decay", "0"], "argument --layer-decay: must be in (0, 1], got 0"),
    (["--img-size", "32", "32", "32"], "--img-size takes one value (square) or two (H W), got [32, 32, 32]"),
])
def test_impossible_values_are_refused_by_name(argv, message, capsys):
    from engine.config import build_parser, parse_args
    with pytest.raises(SystemExit):
        parse_args(build_parser("t"), argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("text,message", [
    ("epochs: [3\n", "is not valid YAML"),
    ("- epochs\n- 3\n", "must be a mapping"),
    ("epochs: three\n", "epochs: 'three' is not an integer"),
    ("epochs: 3.5\n", "epochs: 3.5 is not an integer"),
    ("amp_dtype: fp32\n", "amp_dtype: 'fp32' is not one of ['bf16', 'fp16']"),
    ("amp: 1\n", "amp: 1 is not true or false"),
    ("scale: 0.5\n", "scale: 0.5 is not a list"),
    ("extends: nowhere.yml\n", "config file not found"),
    ("lr: -1.0e-3\n", "lr: -0.001 must be > 0\n"),
    ("img_size: [32, 0]\n", "img_size: [32, 0] must be >= 1\n"),
])
def test_malformed_yml_is_a_one_line_error(tmp_path, text, message, capsys):
    from engine.config import build_parser, parse_args
    config = tmp_path / "bad.yml"
    config.write_text(text)
    with pytest.raises(SystemExit):
        parse_args(build_parser("t"), ["--config", str(config)])
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_mae_spellings_and_switching_randaugment_off():
    from engine.config import build_parser, parse_args
    args = parse_args(build_parser("t"), ["--nb_classes", "7", "--aa", "none"])
    assert args.num_classes == 7 and args.aa is None


def test_a_user_error_raised_in_a_loader_worker_stays_one_line():
    from torch.utils.data import DataLoader, Dataset

    from engine.data import DatasetError
    from models import user_message

    class Broken(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise DatasetError("cannot decode image /data/x.JPEG (truncated); replace or remove the file")

    with pytest.raises(DatasetError) as err:
        next(iter(DataLoader(Broken(), num_workers=1)))
    assert "Traceback" in str(err.value)  # what PyTorch hands over
    assert user_message(err.value) == "cannot decode image /data/x.JPEG (truncated); replace or remove the file"


def test_drop_path_and_feedback_wiring_flags_reach_the_model():
    from engine.config import build_parser, parse_args
    from engine.runner import create_model

    args = parse_args(build_parser("t"), ["--model", "spiliformer_4_384", "--embed-dim", "64", "--drop-path", "0.2",
                                          "--chained-feedback"])
    model = create_model(args, num_classes=10)
    assert model.stages[-1].blocks[-1].drop_path.drop_prob == pytest.approx(0.2)
    assert model.feedback.chained
    args = parse_args(build_parser("t"), ["--embed-dim", "64"])
    assert (args.drop_path, args.chained_feedback, args.amp_dtype) == (0.0, False, "fp16")


def test_the_dataset_recipe_applies_without_config():
    from engine import registry
    from engine.config import parse_command_line
    args = parse_command_line(registry.get("cifar10"), ["-data-dir", "D"])
    assert (args.epochs, args.weight_decay, args.mixup, args.aa) == (400, 0.06, 0.5, "rand-m9-n1-mstd0.4-inc1")
    assert (args.model, args.img_size, args.crop_pct) == ("spiliformer_4_384", [32, 32], 1.0)
    assert tuple(args.mean) == (0.4914, 0.4822, 0.4465)  # the variant's, written once (pretrained_cfg)
    for name, entry in registry.DATASETS.items():  # every recipe file exists and parses
        assert parse_command_line(entry, []).model == entry.model


def test_help_shows_one_spelling_and_the_recipe_values():
    from test_cifar import run_script
    out = run_script("./cifar10/train.py", "--help")
    assert "--batch-size BATCH_SIZE" in out and "--batch_size" not in out
    assert "(default: 400)" in out  # epochs: the recipe's value, not the parser's 300


def test_lr_and_blr_are_never_silently_ignored(capsys):
    from engine import registry
    from engine.config import parse_command_line
    cifar, imagenet = registry.get("cifar10"), registry.get("imagenet")
    args = parse_command_line(cifar, ["--blr", "2e-3"])  # the recipe's lr 1e-3 gives way
    assert args.lr is None and args.blr == 2e-3
    assert parse_command_line(imagenet, ["--lr", "1e-4"]).lr == 1e-4
    with pytest.raises(SystemExit):
        parse_command_line(cifar, ["--lr", "1e-3", "--blr", "1e-3"])
    assert "not both" in capsys.readouterr().err


def test_the_resolved_configuration_is_frozen():
    from engine import registry
    from engine.config import parse_command_line
    args = parse_command_line(registry.get("cifar10"), [])
    with pytest.raises(AttributeError, match="frozen"):
        args.lr = 1.0


def test_model_kwargs_reach_the_model_and_bad_ones_are_named(tmp_path):
    from engine import registry
    from engine.config import parse_command_line
    from engine.runner import create_model
    from models import ConfigError
    args = parse_command_line(registry.get("cifar10"), ["--embed-dim", "64", "--model-kwargs", "mlp_ratio=2",
                                                         "feedback_scale=2.5"])
    assert args.model_kwargs == {"mlp_ratio": 2, "feedback_scale": 2.5}
    model = create_model(args, num_classes=10)
    assert model.feedback.scale == 2.5 and model.stages[0].blocks[0].mlp.fc1.conv.out_channels == 2 * 16
    args = parse_command_line(registry.get("cifar10"), ["--model-kwargs", "mlp_rato=2"])
    with pytest.raises(ConfigError, match="mlp_rato"):
        create_model(args, num_classes=10)


def test_the_training_step_trains_both_passes():
    """eq 22: with alpha = 1 the step's loss is the first pass's cross-entropy, not the final's."""
    import torch.nn.functional as F

    from conftest import tiny_input, tiny_model
    from engine.loop import train_step
    from models import SpiLiFormerLoss
    model, x, y = tiny_model("cifar").train(), tiny_input("cifar"), torch.tensor([0, 1, 2])
    torch.manual_seed(0)
    first, final = model(x, passes=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss = train_step(model, SpiLiFormerLoss(alpha=1.0), x, y, optimizer, scaler)
    assert loss == pytest.approx(F.cross_entropy(first, y).item(), rel=1e-6)
    assert abs(F.cross_entropy(first, y).item() - F.cross_entropy(final, y).item()) > 1e-4


def test_a_short_last_accumulation_group_is_averaged_over_its_own_size():
    """3 batches, --accum-iter 2: the second update is the mean over one batch, not half of it."""
    from engine.distributed import Dist
    from engine.loop import train_one_epoch

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, passes=False):
            return self.w * x

    model = Scale()
    loader = [(torch.full((1,), float(v)), torch.zeros(1)) for v in (1.0, 3.0, 10.0)]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train_one_epoch(model, lambda out, y: out.sum(), loader, optimizer, scaler, Dist(), 1, accum_iter=2,
                    log_interval=100)
    assert model.w.item() == pytest.approx(-(1.0 + 3.0) / 2 - 10.0)


def test_a_recipe_may_give_one_image_side_but_not_one_depth(tmp_path, capsys):
    from engine import registry
    from engine.config import parse_command_line
    recipe = tmp_path / "r.yml"
    recipe.write_text("img_size: 64\n")
    assert parse_command_line(registry.get("imagenet"), ["--config", str(recipe)]).img_size == [64]
    recipe.write_text("depths: 4\n")
    with pytest.raises(SystemExit):
        parse_command_line(registry.get("cifar10"), ["--config", str(recipe)])
    assert "depths: 4 is not a list" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--embed-dim", "0"], "embed_dim must be at least 1, got 0"),
    (["--num-heads", "0"], "num_heads must be at least 1, got 0"),
    (["--mlp-ratio", "0"], "mlp_ratio must be > 0"),
    (["--min-lr", "1"], "--min-lr 1 is above the peak lr 0.001"),
    (["--output", "/proc/no-such-folder"], "cannot create the run folder /proc/no-such-folder"),
    (["--experiment", "../.."], "--experiment ../..: a sub-folder of --output"),
])
def test_impossible_runs_are_one_line_before_any_work(argv, message, tmp_path):
    from test_cifar import run_script
    out = run_script("./cifar10/train.py", "--output", str(tmp_path), "-data-dir", str(tmp_path / "none"),
                     "-T", "1", "--embed-dim", "64", *argv, expect=1)
    assert message in out and "Traceback" not in out


def test_workers_and_threads_share_the_cores_of_the_machine(monkeypatch, capsys):
    import os
    from engine.distributed import Dist, share_cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    assert share_cores(10, None, Dist()) == 8 and threads == [1]  # ImageNet's recipe on 8 cores
    assert "-j 10 loader workers > the 8 cores" in capsys.readouterr().out
    assert share_cores(2, None, Dist(local_world_size=2)) == 2 and threads[-1] == 2  # 4 cores each
    assert share_cores(2, 3, Dist()) == 2 and threads[-1] == 3  # --threads wins
    n = len(threads)
    assert share_cores(2, None, Dist(device=torch.device("cuda", 0))) == 2 and len(threads) == n  # torch's own


def test_help_lists_each_flag_once_with_what_it_does():
    from engine.config import build_parser
    text = build_parser("t").format_help()
    assert "--no-verify, --no-verify" not in text and "(default: True)" not in text.split("--no-verify")[1][:200]
    assert "--threads" in text


def test_the_first_hour_notes_and_the_recorded_precision(tmp_path):
    import yaml
    from datagen import write_cifar
    from test_cifar import run_script
    write_cifar(tmp_path / "data", "cifar10")
    out = run_script("./cifar10/train.py", "--config", "./cifar10/cifar10.yml", "-data-dir", str(tmp_path / "data"),
                     "--output", str(tmp_path), "--experiment", "run", "--no-verify", "-T", "1", "--embed-dim", "64",
                     "-b", "4", "--epochs", "1", "--cooldown-epochs", "0", "-j", "64")
    assert "warm-up epochs are not shorter than --epochs 1" in out and "1 epochs = --epochs 1 + 0 cool-down" in out
    assert "-j 64 loader workers >" in out
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["amp"] is False  # CPU: float32


def test_recipes_state_a_setting_once_and_extend_each_other(tmp_path):
    from engine import registry
    from engine.config import build_parser, parse_command_line, read_recipe
    parser = build_parser("t")
    assert read_recipe(parser, registry.get("cifar100").recipe) == read_recipe(parser, registry.get("cifar10").recipe)
    assert read_recipe(parser, registry.get("ncaltech101").recipe) == \
        read_recipe(parser, registry.get("cifar10dvs").recipe)
    for entry in registry.DATASETS.values():  # T is the variant's, stated there only
        assert "T" not in read_recipe(parser, entry.recipe)
        assert parse_command_line(entry, []).T is None
    (tmp_path / "a.yml").write_text("extends: b.yml\nlr: 0.5\n")
    (tmp_path / "b.yml").write_text("extends: a.yml\nepochs: 3\n")
    with pytest.raises(SystemExit):
        read_recipe(parser, tmp_path / "a.yml")
    (tmp_path / "b.yml").write_text("epochs: 3\nlr: 0.1\n")
    assert read_recipe(parser, tmp_path / "a.yml") == {"epochs": 3, "lr": 0.5}
