"""README's "Adding a dataset", done in a test: one registry entry, a folder with its recipe, and
train.py, --eval and every tool work on it with no other change."""
import pytest
import torch

from datagen import write_image_folder


@pytest.fixture
def flowers(tmp_path, monkeypatch):
    """A throw-away ImageFolder dataset registered as the README says, torn down afterwards."""
    from engine import registry
    folder = tmp_path / "flowers"
    folder.mkdir()
    (folder / "flowers.yml").write_text("T: 1\nepochs: 1\nlr: 1.0e-3\nweight_decay: 0.05\nbatch_size: 2\nwarmup_epochs: 0\nworkers: 0\n"
                                        "aa: rand-m9-mstd0.5-inc1\nmixup: 0.0\n")
    entry = registry.DatasetEntry("flowers", "Flowers", str(folder), 3, "spiliformer_10_768", (0, 0), False,
                                  registry.DATASETS["imagenet"].build)
    monkeypatch.setitem(registry.DATASETS, "flowers", entry)
    return entry, write_image_folder(tmp_path / "data", classes=3)


def test_a_registered_image_folder_dataset_trains_evaluates_and_every_tool_runs(flowers, tmp_path, capsys):
    from engine.config import parse_command_line
    from engine.runner import run
    entry, data = flowers
    model = ["--embed-dim", "48", "--num-heads", "2", "--depths", "1", "1", "1", "--img-size", "32"]
    assert run(parse_command_line(entry, ["--data-dir", str(data), "--output", str(tmp_path), "--experiment",
                                          "run", *model]), entry) == 0
    ckpt = tmp_path / "run" / "checkpoint-last.pth"
    assert torch.load(ckpt, weights_only=True)["args"]["dataset"] == "flowers"
    assert run(parse_command_line(entry, ["--data-dir", str(data), "--eval", "--resume", str(ckpt)]), entry) == 0
    assert "eval " in capsys.readouterr().out

    from tools import attack, corruptions, energy, heatmap
    common = ["--checkpoint", str(ckpt), "--data-path", str(data), "-b", "2", "--num-batches", "1", "--device", "cpu"]
    assert attack.main([*common, "--fgsm-eps", "0.01", "--pgd-steps", "1"]) == 0
    assert "flowers images" in capsys.readouterr().out
    assert energy.main(common) == 0
    assert heatmap.main([*common, "--output", str(tmp_path / "maps.png")]) == 0 and (tmp_path / "maps.png").is_file()
    assert corruptions.main([*common, "--corruptions", "gaussian_noise", "--severities", "1"]) == 0
    assert "gaussian_noise" in capsys.readouterr().out


def test_a_recipe_without_epochs_weight_decay_or_lr_is_one_line(flowers, tmp_path, capsys):
    """The parser has no defaults for them: a value no dataset trains with would hide the gap."""
    from engine.config import parse_command_line
    from engine.runner import run
    entry, data = flowers
    (tmp_path / "flowers" / "flowers.yml").write_text("T: 1\nbatch_size: 2\nworkers: 0\n")
    assert run(parse_command_line(entry, ["--data-dir", str(data), "--output", str(tmp_path)]), entry) != 0
    err = capsys.readouterr().err
    assert "no --epochs, --weight-decay, --lr or --blr: give it, or set it in the recipe" in err
    assert "Traceback" not in err
