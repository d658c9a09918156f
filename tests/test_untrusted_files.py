"""A checkpoint or recipe from someone else is data: it cannot make the project fetch, open or write
files through timm.create_model's keywords (pretrained, pretrained_cfg_overlay, cache_dir, ...)."""
import pytest
import timm
import torch

from models import ConfigError
from engine.model_config import ModelConfig
from models.settings import file_settings
from models.spiliformer import SpiLiFormer
from test_cifar import run_script

TINY = {"embed_dim": 64, "depths": [1, 1, 1], "num_heads": 2, "T": 1}


def crafted_checkpoint(tmp_path, model_kwargs):
    """Tensors only (passes weights_only), with a record that asks timm to load `victim` and cache into
    `evil`. The weights at `victim` fit the model, so timm would load them without a word."""
    model = timm.create_model("spiliformer_4_384", num_classes=10, **TINY)
    victim = tmp_path / "victim.pth"
    torch.save(model.state_dict(), victim)
    path = tmp_path / "crafted.pth"
    kwargs = {k: (str(victim) if v == "VICTIM" else v) for k, v in model_kwargs.items()}
    if "pretrained_cfg_overlay" in kwargs:
        kwargs["pretrained_cfg_overlay"] = {"file": str(victim), "url": "http://127.0.0.1:9/weights.pth"}
    torch.save({"model": model.state_dict(), "args": {"model": "spiliformer_4_384", "num_classes": 10, **TINY,
                                                      "model_kwargs": kwargs}}, path)
    return path


@pytest.mark.parametrize("key", ["pretrained", "pretrained_cfg_overlay", "cache_dir", "checkpoint_path"])
def test_a_checkpoint_record_cannot_steer_timm_create_model(tmp_path, key):
    evil = tmp_path / "evil_cache"
    kwargs = {"pretrained": True, "pretrained_cfg_overlay": None, "cache_dir": str(evil),
              "checkpoint_path": "VICTIM"}
    kwargs = {key: kwargs[key], **({"pretrained": True} if key != "pretrained" else {})}
    ckpt = crafted_checkpoint(tmp_path, kwargs)
    out = run_script("./tools/energy.py", "--checkpoint", str(ckpt), "--device", "cpu", expect=1)
    assert "Traceback" not in out and "model_kwargs" in out and "is not a model setting" in out
    assert "'pretrained'" in out or f"'{key}'" in out
    assert not evil.exists()


def test_recorded_model_settings_are_taken_when_plain_values_of_their_kind(tmp_path):
    record = {"args": {"model_kwargs": {"shallow_attn": "token", "mlp_ratio": 2, "depths": [1, 1, 1]}}}
    assert ModelConfig.recorded_in(record)["model_kwargs"] == record["args"]["model_kwargs"]
    for bad in ({"shallow_attn": "os.system"}, {"mlp_ratio": "2"}, {"depths": [1, "1"]}, {"legacy": 1},
                {"T": True}, {"neuron": ["lif"]}):
        with pytest.raises(ConfigError, match="model_kwargs"):
            ModelConfig.recorded_in({"args": {"model_kwargs": bad}})
    with pytest.raises(ConfigError, match="mapping"):
        file_settings(["pretrained=true"], "x.yml")


def test_the_declared_settings_are_the_constructors_arguments_but_the_kernel():
    import inspect
    arguments = set(inspect.signature(SpiLiFormer.__init__).parameters) - {"self"}
    assert arguments - set(SpiLiFormer.SETTINGS) == {"backend", "spike_storage"}  # how to run, not what
    assert set(SpiLiFormer.SETTINGS) <= arguments


def test_a_shared_recipe_cannot_steer_timm_create_model(tmp_path):
    evil = tmp_path / "evil_cache"
    recipe = tmp_path / "shared.yml"
    recipe.write_text(f"model_kwargs:\n  pretrained: true\n  cache_dir: {evil}\n")
    out = run_script("./cifar10/train.py", "--config", str(recipe), "--data-dir", str(tmp_path / "none"),
                     "--output", str(tmp_path / "out"), expect=2)
    assert "pretrained" in out and "is not a model setting" in out and "Traceback" not in out
    assert not evil.exists()


def test_the_users_own_command_line_may_still_pass_any_constructor_argument():
    from engine import registry
    from engine.config import parse_command_line
    args = parse_command_line(registry.get("cifar10"), ["--model-kwargs", "pretrained=false", "in_chans=3"])
    assert args.model_kwargs == {"pretrained": False, "in_chans": 3}
