"""Official QKFormer weights load through one key map, and reproduce the official numerics."""
import os

import pytest
import timm
import torch

import models
from engine.registry import DATASETS

from conftest import DATA, tiny_model

# reference file -> (variant, our kwargs for the official tiny config)
REFERENCES = {
    "tiny_cifar_qkformer.pt": ("spiliformer_4_384", dict(embed_dim=64, depths=(1, 1, 1), num_heads=8)),
    "tiny_imagenet_qkformer.pt": ("spiliformer_10_768", dict(embed_dim=48, depths=(1, 2, 1), num_heads=2)),
}


def qkformer_from_reference(filename, legacy, **extra):
    ref = torch.load(DATA / filename, weights_only=True)
    name, kwargs = REFERENCES[filename]
    model = timm.create_model(name, num_classes=10, T=ref["T"], ff_lidiff=False, fb_lidiff=False,
                              legacy=legacy, backend="torch", **kwargs, **extra)
    model.load_state_dict(models.checkpoint_filter_fn(ref["state_dict"], model))
    return model.eval(), ref


@pytest.mark.spikingjelly
@pytest.mark.parametrize("filename", sorted(REFERENCES))
@pytest.mark.parametrize("legacy,expected", [(True, "logits"), (False, "logits_fixed")])
def test_official_qkformer_weights_reproduce_official_logits(filename, legacy, expected):
    model, ref = qkformer_from_reference(filename, legacy)
    with torch.no_grad():
        logits = model(ref["input"])
    torch.testing.assert_close(logits, ref[expected], atol=1e-5, rtol=0)


@pytest.mark.parametrize("filename", sorted(REFERENCES))
def test_corrected_model_is_batch_independent_on_official_weights(filename):
    model, ref = qkformer_from_reference(filename, legacy=False)
    with torch.no_grad():
        single = torch.cat([model(x[None]) for x in ref["input"]])
    torch.testing.assert_close(single, ref["logits_fixed_single"], atol=1e-5, rtol=0)


def read_keys(dataset):
    rows = [line.split("\t") for line in (DATA / f"keys_{dataset}.txt").read_text().splitlines()]
    return {key: tuple(int(d) for d in shape.strip("[]").split(",") if d.strip()) for key, shape, _ in rows}


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_official_key_maps_onto_the_qkformer_ablation(dataset):
    """Both ablations off has QKFormer's exact structure: every official tensor, same shape, nothing else."""
    name, classes = DATASETS[dataset].model, DATASETS[dataset].num_classes
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=classes, ff_lidiff=False, fb_lidiff=False)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = {models.official_key(k): shape for k, shape in read_keys(dataset).items()}
    assert None not in mapped
    assert mapped == own


def test_timm_pretrained_overlay_loads_an_official_checkpoint(tmp_path):
    model, ref = qkformer_from_reference("tiny_cifar_qkformer.pt", legacy=True)
    path = tmp_path / "official.pth"
    torch.save({"model": ref["state_dict"], "epoch": 1}, path)
    loaded = timm.create_model("spiliformer_4_384", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                               num_classes=10, T=2, embed_dim=64, depths=(1, 1, 1), num_heads=8,
                               ff_lidiff=False, fb_lidiff=False, legacy=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ref["input"]), ref["logits"], atol=1e-5, rtol=0)


def test_qkformer_weights_into_spiliformer_name_the_missing_feedback(tmp_path):
    ref = torch.load(DATA / "tiny_cifar_qkformer.pt", weights_only=True)
    name, kwargs = REFERENCES["tiny_cifar_qkformer.pt"]
    model = timm.create_model(name, num_classes=10, **kwargs)
    with pytest.raises(models.CheckpointMismatchError) as err:
        models.checkpoint_filter_fn(ref["state_dict"], model)
    message = str(err.value)
    assert "missing keys" in message and "feedback.prompt_excite" in message
    assert "fb_lidiff=False" in message
    partial = models.checkpoint_filter_fn(ref["state_dict"], model, strict=False)  # fine-tuning
    assert len(partial) == len(ref["state_dict"])


def test_wrong_architecture_lists_unexpected_and_mismatched_keys():
    ref = torch.load(DATA / "tiny_imagenet_qkformer.pt", weights_only=True)
    model = timm.create_model("spiliformer_10_768", num_classes=7, embed_dim=48, depths=(1, 1, 1),
                              num_heads=2, ff_lidiff=False, fb_lidiff=False)
    with pytest.raises(models.CheckpointMismatchError) as err:
        models.checkpoint_filter_fn(ref["state_dict"], model)
    message = str(err.value)
    assert "unexpected keys" in message and "stages.1.blocks.1" in message
    assert "shape mismatches" in message and "head.weight" in message


def test_own_checkpoint_round_trip_with_ddp_prefix(tmp_path):
    model = tiny_model("cifar")
    path = tmp_path / "ckpt.pth"
    torch.save({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    other = tiny_model("cifar", seed=1)
    models.load_checkpoint(other, path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_corrupt_or_missing_checkpoint_gives_a_clear_error(tmp_path):
    model = tiny_model("cifar")
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(models.CheckpointError, match="corrupt"):
        models.load_checkpoint(model, path)
    with pytest.raises(models.CheckpointError, match="not found"):
        models.load_checkpoint(model, tmp_path / "absent.pth")


@pytest.mark.parametrize("writer", ["timm", "mae"])
def test_checkpoints_written_by_the_official_savers_load(tmp_path, writer):
    """timm's CheckpointSaver and MAE's save_model store args as an argparse.Namespace."""
    from datagen import write_mae_checkpoint, write_timm_checkpoint

    model, ref = qkformer_from_reference("tiny_cifar_qkformer.pt", legacy=True)
    write = write_timm_checkpoint if writer == "timm" else write_mae_checkpoint
    path = write(tmp_path / "official.pth", ref["state_dict"], time_step=2, nb_classes=10, lr=1e-3, aa="rand-m9")
    fresh, _ = qkformer_from_reference("tiny_cifar_qkformer.pt", legacy=True)
    checkpoint = models.load_checkpoint(fresh, path)
    assert vars(checkpoint["args"])["time_step"] == 2
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(ref["input"]), ref["logits"], atol=1e-5, rtol=0)


def test_a_checkpoint_that_would_run_code_is_refused_naming_the_global(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for legacy_format in (False, True):
        path = tmp_path / f"evil{legacy_format}.pth"
        torch.save({"model": {}, "args": Payload()}, path, _use_new_zipfile_serialization=not legacy_format)
        with pytest.raises(models.CheckpointError) as err:
            models.read_checkpoint(path)
        message = str(err.value)
        assert "system" in message and "refuses" in message and "corrupt" not in message
    assert not marker.exists()


def test_finetuning_from_a_checkpoint_where_no_weight_fits_is_an_error(tmp_path):
    ref = torch.load(DATA / "tiny_imagenet_qkformer.pt", weights_only=True)
    model = tiny_model("event")
    with pytest.raises(models.CheckpointMismatchError, match="no weight of the checkpoint fits"):
        models.checkpoint_filter_fn(ref["state_dict"], model, strict=False)
