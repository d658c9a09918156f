"""One model configuration: every field is a flag of training, the tools and the benchmark, is saved
in checkpoints and read back by the tools."""
import argparse
import dataclasses

import pytest

from models import ConfigError
from engine.model_config import ModelConfig

UNSET = object()


def parsers():
    from engine.config import build_parser
    from tools.benchmark import parse
    from tools.common import build_parser as tool_parser
    return {"train": build_parser("t"), "tools": tool_parser("t"), "benchmark": parse}


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(ModelConfig)])
def test_every_field_is_a_flag_of_training_tools_and_benchmark(field):
    for name, parser in parsers().items():
        if name == "benchmark":
            dests = vars(parser([]))
        else:
            dests = {a.dest for a in parser._actions}
        assert field in dests, f"{field} missing from the {name} command line"


def test_tools_inherit_unset_fields_and_training_shows_the_defaults():
    from engine.config import build_parser
    from tools.common import build_parser as tool_parser
    tools = tool_parser("t").parse_args([])
    train = build_parser("t").parse_args([])
    for f in dataclasses.fields(ModelConfig):
        if f.name not in ModelConfig.RUNTIME:
            assert getattr(tools, f.name) is None, f.name
    assert (train.ff_lidiff, train.feedback_scale, train.neuron, train.backend) == (True, 1.0, "lif", "auto")


def test_a_checkpoint_record_is_read_under_our_names_and_qkformers():
    ours = {"args": {"model": "SpiLiFormer_4_384", "T": 2, "num_classes": 100, "embed_dim": 64,
                     "fb_lidiff": False, "backend": "triton", "model_kwargs": {"mlp_ratio": 2}}}
    assert ModelConfig.recorded_in(ours) == {"model": "SpiLiFormer_4_384", "T": 2, "num_classes": 100,
                                             "embed_dim": 64, "fb_lidiff": False, "model_kwargs": {"mlp_ratio": 2}}
    official = {"args": argparse.Namespace(model="QKFormer_10_768", time_step=4, nb_classes=1000)}
    assert ModelConfig.recorded_in(official) == {"T": 4, "num_classes": 1000}  # not our model name
    assert ModelConfig.recorded_in({"model": {}}) == {} and ModelConfig.recorded_in(None) == {}
    # QKFormer's CIFAR yml records its total block count as `depths: 4`: not our per-stage depths
    qkformer_cifar = {"args": {"depths": 4, "embed_dim": 384, "num_heads": 8, "mlp_ratio": 4, "time_step": 4}}
    assert ModelConfig.recorded_in(qkformer_cifar) == {"embed_dim": 384, "num_heads": 8, "mlp_ratio": 4, "T": 4}
    assert ModelConfig.recorded_in({"args": argparse.Namespace(depths=(1, 2, 7))}) == {"depths": (1, 2, 7)}


def test_flags_override_the_record_and_model_kwargs_merge():
    cfg = ModelConfig(model="spiliformer_4_384").updated({"T": 2, "model_kwargs": {"mlp_ratio": 2}})
    cfg = cfg.updated({"T": None, "embed_dim": 64, "model_kwargs": ["feedback_scale=3"], "dataset": "x"})
    assert (cfg.T, cfg.embed_dim) == (2, 64)
    assert cfg.kwargs() == {"T": 2, "embed_dim": 64, "ff_lidiff": True, "fb_lidiff": True, "feedback_scale": 3,
                            "chained_feedback": False, "drop_path_rate": 0.0, "neuron": "lif", "legacy": False,
                            "backend": "auto", "mlp_ratio": 2}
    model = cfg.build(num_classes=3)
    assert model.T == 2 and model.feedback.scale == 3 and model.num_classes == 3


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown model 'vit_base'"):
        ModelConfig(model="vit_base").build()
    with pytest.raises(ConfigError, match="mlp_rato"):
        ModelConfig(model="spiliformer_4_384", model_kwargs={"mlp_rato": 2}).build()
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        ModelConfig().updated({"model_kwargs": ["mlp_ratio"]})


def test_a_saved_run_rebuilds_in_the_tools(tmp_path):
    """What the runner saves as "args" (the resolved flags) is what load_model reads back."""
    import torch

    from engine import registry
    from engine.checkpoint import plain
    from engine.config import parse_command_line
    from engine.runner import create_model
    from tools.common import build_parser, load_model
    args = parse_command_line(registry.get("cifar10"), ["--embed-dim", "64", "--depths", "1", "1", "1",
                                                        "--num-heads", "2", "-T", "2", "--no-ff-lidiff",
                                                        "--model-kwargs", "mlp_ratio=2"])
    model = create_model(args, num_classes=10)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict(), "args": plain({**args.as_dict(), "num_classes": 10})}, path)
    loaded = load_model(build_parser("t").parse_args(["--checkpoint", str(path), "--device", "cpu"]))
    assert loaded.T == 2 and loaded.dims[-1] == 64
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_flags_for_names_the_command_line_of_a_recorded_configuration():
    run = ModelConfig(model="spiliformer_4_384", T=4, embed_dim=128)
    record = {"model": "SpiLiFormer_4_384", "T": 4, "embed_dim": 64, "depths": [1, 1, 1], "fb_lidiff": False,
              "model_kwargs": {"shallow_attn": "token"}}
    assert run.flags_for(record) == ["--embed-dim 64", "--depths 1 1 1", "--no-fb-lidiff",
                                     "--model-kwargs shallow_attn=token"]
    assert run.flags_for({"T": 4, "model": "spiliformer_4_384"}) == []


def test_a_new_model_switch_reaches_training_the_checkpoint_eval_and_the_tools(tmp_path, monkeypatch, capsys):
    """README's "Adding a model switch", done in a test: a constructor argument of SpiLiFormer and its
    kind in SpiLiFormer.SETTINGS; nothing else changes, and --model-kwargs reaches it everywhere."""
    import torch
    from datagen import write_cifar

    from engine import registry
    from engine.config import parse_command_line
    from engine.runner import run
    from models import SpiLiFormer
    from tools import energy

    built_with = []
    original = SpiLiFormer.__init__

    def init(self, *args, head_gain=1.0, **kwargs):  # the new switch
        built_with.append(head_gain)
        original(self, *args, **kwargs)

    monkeypatch.setattr(SpiLiFormer, "__init__", init)
    monkeypatch.setitem(SpiLiFormer.SETTINGS, "head_gain", float)
    data = tmp_path / "data"
    write_cifar(data, train_per_batch=2, test=4)
    entry = registry.get("cifar10")
    small = ["-data-dir", str(data), "--no-verify", "--embed-dim", "32", "--depths", "1", "1", "1", "--num-heads",
             "2", "-T", "1", "-b", "4", "-j", "0", "--epochs", "1", "--cooldown-epochs", "0", "--warmup-epochs", "0"]
    argv = [*small, "--model-kwargs", "head_gain=2.5", "--output", str(tmp_path), "--experiment", "run"]
    assert run(parse_command_line(entry, argv), entry) == 0 and built_with[-1] == 2.5
    ckpt = tmp_path / "run" / "checkpoint-last.pth"
    assert torch.load(ckpt, weights_only=True)["model_args"]["model_kwargs"] == {"head_gain": 2.5}

    # --eval and a tool rebuild it from the checkpoint alone (the model they run is the last one built)
    assert run(parse_command_line(entry, ["-data-dir", str(data), "--no-verify", "--eval", "--resume", str(ckpt)]),
               entry) == 0 and built_with[-1] == 2.5
    built_with.clear()
    assert energy.main(["--checkpoint", str(ckpt), "--data-path", str(data), "--no-verify", "-b", "2",
                        "--num-batches", "1", "--device", "cpu"]) == 0 and built_with[-1] == 2.5


def accepted_value(action):
    if action.choices:
        return str(action.choices[0])
    for text in ("1", "0"):
        try:
            (action.type or str)(text)
            return text
        except (ValueError, argparse.ArgumentTypeError):
            pass


@pytest.mark.parametrize("tool", ["attack", "corruptions", "energy", "heatmap"])
def test_every_flag_of_train_and_the_tools_has_help_and_both_spellings(tool, monkeypatch):
    """--help shows every recipe value and what each flag does; `--a-b` and `--a_b` both work."""
    import importlib

    from engine.config import build_parser
    module = importlib.import_module(f"tools.{tool}")
    parsers = [build_parser("t")]

    def capture(parser, argv):
        parsers.append(parser)
        raise SystemExit(0)
    monkeypatch.setattr(module, "parse", capture)
    with pytest.raises(SystemExit):
        module.main([])
    for parser in parsers:
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{action.option_strings} has no help"
            for name in (o for o in action.option_strings if o.startswith("--") and "-" in o[2:]):
                assert "_" not in name, f"{name}: declare flags with dashes; the parser also reads them with underscores"
                values = [] if action.nargs == 0 else [accepted_value(action)] * (
                    action.nargs if isinstance(action.nargs, int) else 1)
                probe = argparse.Namespace(**{a.dest: UNSET for a in parser._actions})
                parsed, rest = parser.parse_known_args(["--" + name[2:].replace("-", "_"), *values], probe)
                assert getattr(parsed, action.dest) is not UNSET and not rest, f"{name} not read with underscores"
