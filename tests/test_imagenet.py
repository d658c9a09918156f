"""The ImageNet script end to end on a tiny ImageFolder of generated JPEGs."""
import json

import pytest
import torch

from conftest import DATA
from datagen import write_image_folder
from test_cifar import run_script



def tiny(depths=("1", "1", "1")):
    return ["--model", "SpiLiFormer_10_768", "--embed_dim", "48", "--num_heads", "2", "--depths", *depths,
            "--input_size", "32", "--time_step", "1", "--batch_size", "2", "--num_workers", "0", "--no-amp",
            "--log_interval", "2"]


TINY = tiny()


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("imagenet"))


def imagenet(*args, expect=0, nproc=1):
    return run_script("./imagenet_1k/train.py", *args, expect=expect, nproc=nproc)


def test_seed_command_trains_resumes_and_evaluates(imagenet_root, tmp_path):
    out_dir, log_dir = tmp_path / "out", tmp_path / "tb"
    common = ["--output_dir", str(out_dir), "--log_dir", str(log_dir), "--data_path", str(imagenet_root), *TINY]
    log = imagenet(*common, "--epochs", "1", "--warmup_epochs", "1", "--blr", "1e-3")
    assert "lr: 7.8125e-06" in log  # blr x effective batch 2 / 256
    assert (out_dir / "checkpoint-last.pth").is_file() and list(log_dir.glob("events.out.tfevents.*"))
    log = imagenet(*common, "--epochs", "2", "--resume", str(out_dir / "checkpoint-last.pth"))
    assert "epoch 2/2" in log and "epoch 1/2" not in log
    records = [json.loads(line) for line in (out_dir / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    out = imagenet(*common, "--resume", str(out_dir / "checkpoint-last.pth"), "--eval")
    assert "pass-2 top-1" in out and "top-5" in out and "(6 images)" in out


@pytest.mark.parametrize("size,crop_pct,resize", [(224, 0.875, 256), (288, 1.0, 288), (384, 1.0, 384)])
def test_eval_transform_follows_the_official_evaluation(size, crop_pct, resize):
    from engine import registry
    from engine.config import parse_command_line
    from engine.data import image_transforms

    assert registry.eval_crop_pct((size, size)) == crop_pct
    args = parse_command_line(registry.get("imagenet"), ["--input_size", str(size)])  # as train.py resolves it
    assert args.crop_pct == crop_pct
    _, val = image_transforms(args)
    resize_op, crop_op = val.transforms[:2]
    assert resize_op.size == resize and tuple(crop_op.size) == (size, size)


@pytest.mark.parametrize("size,crop_pct", [("32", "0.875"), ("48", "1.0")])
def test_eval_at_other_sizes(imagenet_root, tmp_path, size, crop_pct):
    common = ["--output_dir", str(tmp_path), "--data_path", str(imagenet_root), *TINY]
    imagenet(*common, "--epochs", "1")
    out = imagenet(*common, "--input_size", size, "--crop_pct", crop_pct, "--eval",
                   "--resume", str(tmp_path / "checkpoint-last.pth"))
    assert "pass-2 top-1" in out


def test_finetune_from_a_qkformer_checkpoint_reports_new_keys(imagenet_root, tmp_path):
    ref = torch.load(DATA / "tiny_imagenet_qkformer.pt", weights_only=True)
    official = tmp_path / "qkformer.pth"
    torch.save({"model": ref["state_dict"]}, official)
    out = imagenet("--output_dir", str(tmp_path / "ft"), "--data_path", str(imagenet_root),
                   *tiny(depths=("1", "2", "1")),  # the official tiny model's blocks
                   "--epochs", "1", "--finetune", str(official))
    assert "checkpoint loaded partially" in out and "feedback.prompt_excite" in out  # new tensors
    assert "head.weight" in out  # 10 official classes vs 3 here: re-initialised, not fatal
    assert "epoch 1/1" in out


def test_official_checkpoint_with_legacy_gives_the_official_numerics(tmp_path):
    """The script's own path (flags -> model -> restore) reproduces the official logits."""
    from engine.checkpoint import restore
    from engine.config import build_parser, parse_args
    from engine.runner import create_model

    ref = torch.load(DATA / "tiny_imagenet_qkformer.pt", weights_only=True)
    path = tmp_path / "official.pth"
    torch.save({"model": ref["state_dict"], "epoch": 299}, path)
    for legacy, expected in ((True, "logits"), (False, "logits_fixed")):
        argv = ["--model", "SpiLiFormer_10_768", "--embed_dim", "48", "--num_heads", "2", "--depths", "1", "2",
                "1", "--time_step", "2", "--no-ff_lidiff", "--no-fb_lidiff", "--backend", "torch"]
        args = parse_args(build_parser("t"), argv + (["--legacy"] if legacy else []))
        model = create_model(args, num_classes=10)
        restore(path, model)
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(ref["input"]), ref[expected], atol=1e-5, rtol=0)


def test_two_process_torchrun_with_dist_eval_counts_every_image_once(imagenet_root, tmp_path):
    out = imagenet("--output_dir", str(tmp_path), "--data_path", str(imagenet_root), *TINY, "--epochs", "1",
                   "--dist_eval", nproc=2)
    assert "world_size: 2" in out and "(6 images)" in out


def test_missing_imagenet_names_the_layout(tmp_path):
    out = imagenet("--output_dir", str(tmp_path), "--data_path", str(tmp_path / "none"), *TINY, expect=1)
    assert "train/<class>/<image>" in out and "val/" in out


def test_layer_decay_scales_the_lr_from_stem_to_head():
    import timm
    from timm.optim import create_optimizer_v2

    model = timm.create_model("spiliformer_10_768", embed_dim=48, num_heads=2, depths=(1, 1, 2), num_classes=3)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scale_of = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            scale_of[id(p)] = group["lr_scale"]
    named = dict(model.named_parameters())
    stem = scale_of[id(named["stages.0.downsample.convs.0.conv.weight"])]
    first_block = scale_of[id(named["stages.0.blocks.0.attn.q.conv.weight"])]
    last_block = scale_of[id(named["stages.2.blocks.1.mlp.fc2.conv.weight"])]
    head = scale_of[id(named["head.weight"])]
    assert stem < first_block < last_block < head == 1.0


def test_val_class_folders_that_differ_from_train_are_an_error(tmp_path):
    import shutil
    root = write_image_folder(tmp_path / "data")
    shutil.move(root / "val" / "n00000002", root / "val" / "n00000009")
    out = imagenet("--output_dir", str(tmp_path / "out"), "--data_path", str(root), *TINY, "--epochs", "1", expect=1)
    assert "must be the same" in out and "n00000009" in out and "Traceback" not in out


def test_a_corrupt_jpeg_is_named_in_one_line(tmp_path):
    root = write_image_folder(tmp_path / "data")
    bad = root / "train" / "n00000001" / "train_1_2.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated download
    tiny_with_worker = [a if a != "0" or TINY[i - 1] != "--num_workers" else "1" for i, a in enumerate(TINY)]
    out = imagenet("--output_dir", str(tmp_path / "out"), "--data_path", str(root), *tiny_with_worker,
                   "--batch_size", "12", "--epochs", "1", expect=1)
    assert f"error: cannot decode image {bad}" in out and "Traceback" not in out


def test_a_second_run_into_the_same_output_folder_is_refused(imagenet_root, tmp_path):
    common = ["--output_dir", str(tmp_path), "--data_path", str(imagenet_root), *TINY, "--epochs", "1"]
    imagenet(*common)
    before = (tmp_path / "checkpoint-last.pth").read_bytes()
    out = imagenet(*common, expect=1)
    assert "already holds another run" in out and "--resume" in out
    assert (tmp_path / "checkpoint-last.pth").read_bytes() == before


def test_a_released_mae_style_checkpoint_evaluates_with_the_seed_command(tmp_path):
    """QKFormer's ImageNet checkpoints: misc.save_model's layout, args an argparse.Namespace."""
    from datagen import write_mae_checkpoint
    ref = torch.load(DATA / "tiny_imagenet_qkformer.pt", weights_only=True)
    root = write_image_folder(tmp_path / "data", classes=10, train_per_class=1, val_per_class=1, size=(64, 64))
    ckpt = write_mae_checkpoint(tmp_path / "checkpoint-199.pth", ref["state_dict"], time_step=2, nb_classes=10)
    out = imagenet("--output_dir", str(tmp_path / "o"), "--log_dir", str(tmp_path / "o"), "--data_path", str(root),
                   "--model", "SpiLiFormer_10_768", "--embed_dim", "48", "--num_heads", "2", "--depths", "1", "2", "1",
                   "--input_size", "64", "--time_step", "2", "--batch_size", "4", "--nb_classes", "10",
                   "--num_workers", "0", "--no-ff_lidiff", "--no-fb_lidiff", "--legacy", "--resume", str(ckpt), "--eval")
    assert "pass-2 top-1" in out and "(10 images)" in out


def test_recipe_lr_is_mae_warmup_then_cosine_over_the_remaining_epochs(imagenet_root, tmp_path):
    """MAE: lr(e) = lr e / w during the warm-up, then min + (lr - min) (1 + cos(pi (e - w) / (E - w))) / 2."""
    imagenet("--output_dir", str(tmp_path), "--data_path", str(imagenet_root), *TINY, "--epochs", "3",
             "--warmup_epochs", "1", "--lr", "1e-3", "--min_lr", "0")
    lrs = [json.loads(line)["train_lr"] for line in (tmp_path / "log.txt").read_text().splitlines()]
    # lr after each epoch's last update, e = 1, 2, 3: the peak, cos(pi / 2) halfway, the minimum
    assert lrs == pytest.approx([1e-3, 0.5e-3, 0.0], abs=1e-12)  # without the prefix: 0.75e-3, 0.25e-3, 0


def recipe_args(monkeypatch, *argv):
    import engine.runner
    seen = {}
    monkeypatch.setattr(engine.runner, "run", lambda args, entry: seen.setdefault("args", args) and 0)
    engine.runner.main("imagenet", list(argv))
    return seen["args"]


def test_recipe_defaults_fp16_stochastic_depth_and_phase_2(monkeypatch, tmp_path):
    args = recipe_args(monkeypatch)
    assert (args.amp, args.amp_dtype, args.drop_path, args.warmup_prefix) == (True, "fp16", 0.1, True)
    assert (args.blr, args.epochs, args.warmup_epochs, args.sched_on_updates) == (6e-4, 200, 5, True)
    args = recipe_args(monkeypatch, "--phase", "2", "--finetune", "phase1.pth")
    assert (args.blr, args.epochs, args.warmup_epochs, args.sched_on_updates) == (2e-6, 20, 0, False)
    assert recipe_args(monkeypatch, "--phase", "2", "--finetune", "p.pth", "--epochs", "5").epochs == 5
    with pytest.raises(SystemExit):
        recipe_args(monkeypatch, "--phase", "2")  # phase 2 needs phase 1's weights
