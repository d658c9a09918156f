"""The paper-table tools on tiny models and generated data."""
import csv
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

import models
from conftest import tiny_input, tiny_model
from datagen import write_cifar, write_cifar10dvs
from test_cifar import run_script

TINY = ["--embed-dim", "64", "-T", "1", "-b", "4", "--num-batches", "1", "--no-verify"]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, "cifar10")
    return root


class TwoLayers(nn.Module):
    """fc1 on an analog input (MACs), LIF, fc2 on its spikes (ACs)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3, bias=False)
        self.lif = models.LIF(backend="torch")
        self.fc2 = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 1.5, 0, 0], [0, 0.3, 0, 0], [0, 0, 2.5, 0]]))

    def forward(self, x):  # x [T=1, B, 4]
        from spikingjelly.activation_based import functional
        functional.reset_net(self)
        return self.fc2(self.lif(self.fc1(x)))


def test_energy_of_a_hand_built_two_layer_network():
    from tools.energy import layer_energy, summary
    x = torch.tensor([[[1.0, 1.0, 1.0, 0.3]]])  # fc1 -> [2.5, 0.3, 2.5]; H = x/2 -> [1.25, .15, 1.25] -> spikes 1 0 1
    rows = layer_energy(TwoLayers().eval(), [x])
    fc1, lif, fc2 = rows  # the neuron's row carries its memory traffic only
    assert (lif["kind"], lif["energy_j"]) == ("neuron", 0)
    assert (fc1["layer"], fc1["kind"], fc1["macs"]) == ("fc1", "MAC", 12)           # 4 x 3
    assert (fc2["layer"], fc2["kind"], fc2["macs"]) == ("fc2", "AC", 6)             # 3 x 2
    assert fc2["firing_rate"] == pytest.approx(2 / 3) and fc2["sops"] == pytest.approx(4)
    # E = 4.6 pJ x 12 MACs + 0.9 pJ x (2/3 x 6) SOPs = 55.2 + 3.6 = 58.8 pJ
    assert summary(rows, T=1)["snn_mj"] == pytest.approx(58.8e-9)
    assert summary(rows, T=1)["ann_mj"] == pytest.approx(4.6e-12 * 18 * 1e3)


def test_ann_energy_counts_the_static_first_layer_once_per_image():
    """Eq 27 over T = 2 copies of a static input: the ANN is one step, fc1 (4x3) + fc2 (3x2) = 18 MACs."""
    from tools.energy import layer_energy, summary

    class Static(TwoLayers):
        def forward(self, x):  # x [B, 4] -> [T=2, B, 4], the same at both steps
            return super().forward(x.unsqueeze(0).repeat(2, 1, 1))

    rows = layer_energy(Static().eval(), [torch.tensor([[1.0, 1.0, 1.0, 0.3]])], static_T=2)
    fc1, _, fc2 = rows
    assert (fc1["macs"], fc1["counted_once"]) == (12, True)   # computed once for both steps (eq 26)
    assert (fc2["macs"], fc2["counted_once"]) == (12, False)  # 6 per step x 2 steps
    assert summary(rows, T=2)["ann_macs"] == pytest.approx(12 + 12 / 2)
    assert summary(rows, T=2)["ann_mj"] == pytest.approx(4.6e-12 * 18 * 1e3)


def test_ann_energy_of_the_first_conv_is_a_hand_count():
    """Tiny CIFAR model, T = 4, 32x32: conv 3x3, 3 -> 8 channels, stride 1 = 27 x 8 x 1024 = 221,184 MACs
    in the ANN (it was divided by T twice: 55,296)."""
    from tools.energy import layer_energy, summary
    model = tiny_model("cifar", T=4).eval()
    rows = layer_energy(model, [torch.rand(1, 3, 32, 32)], static_T=4)
    first = rows[0]
    assert first["layer"] == "stages.0.downsample.convs.0.conv" and first["macs"] == 27 * 8 * 1024 == 221_184
    others = sum(r["macs"] for r in rows[1:]) / 4
    assert summary(rows, T=4)["ann_macs"] == pytest.approx(221_184 + others)


def test_energy_counts_both_passes_and_the_attention_matmuls():
    from tools.energy import layer_energy
    model = tiny_model("cifar").eval()
    rows = {r["layer"]: r for r in layer_energy(model, [tiny_input("cifar")], static_T=model.T)}
    q = rows["stages.2.blocks.0.attn.q.conv"]
    stage1_q = rows["stages.0.blocks.0.attn.q.conv"]
    assert q["macs"] == pytest.approx(2 * model.T * 16 * 64 * 64)  # 4x4 tokens, 64 channels, two passes
    assert stage1_q["macs"] == pytest.approx(model.T * 256 * 16 * 16)  # once
    assert "stages.2.blocks.0.attn.matmul" in rows and rows["stages.0.downsample.convs.0.conv"]["kind"] == "MAC"
    # Q K^T V sits where it runs: after the V projection and its neuron, before the attention
    # neuron and the output projection
    order = [name for name, r in rows.items() if r["kind"] != "neuron"]
    matmul = order.index("stages.2.blocks.0.attn.matmul")
    assert order[matmul - 1:matmul + 2:2] == ["stages.2.blocks.0.attn.v.conv", "stages.2.blocks.0.attn.proj.conv"]
    everything = list(rows)
    assert everything[everything.index("stages.2.blocks.0.attn.matmul") - 1] == "stages.2.blocks.0.attn.v.lif"
    assert everything[everything.index("stages.2.blocks.0.attn.matmul") + 1] == "stages.2.blocks.0.attn.attn_lif"
    with torch.no_grad():  # its rate is the query's, over both passes (the model's public record)
        queries = model.forward_attention(tiny_input("cifar"))[1]["stages.2.blocks.0.attn"].query
    assert len(queries) == 2
    assert rows["stages.2.blocks.0.attn.matmul"]["firing_rate"] == pytest.approx(torch.stack(queries).mean().item())


def _energy_totals(out):
    """(paper mJ, strict mJ, memory mJ, ANN mJ) from the tool's summary line."""
    found = re.search(r"total: (\S+) mJ per image \(paper, eq 26\) \| (\S+) mJ \(strict\) \| memory access "
                      r"(\S+) mJ \| the same network as an ANN \(eq 27\): (\S+) mJ", out)
    assert found, out[-2000:]
    return tuple(float(v) for v in found.groups())


def test_energy_tool_prints_the_table_and_writes_csv(cifar_root, tmp_path):
    out = run_script("./tools/energy.py", "--dataset", "cifar10", "--data-path", str(cifar_root), *TINY,
                     "--output", str(tmp_path / "energy.csv"))
    paper, strict, memory, ann = _energy_totals(out)
    assert 0 < paper <= strict and memory > 0 and ann > 0
    rows = list(csv.DictReader(open(tmp_path / "energy.csv")))
    assert rows[0]["kind"] == "MAC" and {"layer", "macs", "firing_rate", "sops", "energy_j", "memory_j"} <= set(rows[0])
    # the table is the paper's accounting (the default) and its rows add up to the printed totals
    assert sum(float(r["energy_j"]) for r in rows) * 1e3 == pytest.approx(paper, rel=1e-3)
    assert sum(float(r["memory_j"]) for r in rows) * 1e3 == pytest.approx(memory, rel=1e-3)
    assert [r["layer"] for r in rows if r["kind"] == "MAC"] == ["stages.0.downsample.convs.0.conv"]
    out = run_script("./tools/energy.py", "--dataset", "cifar10", "--data-path", str(cifar_root), *TINY,
                     "--accounting", "strict", "--output", str(tmp_path / "strict.csv"))
    rows = list(csv.DictReader(open(tmp_path / "strict.csv")))  # (another random model: its own totals)
    assert sum(float(r["energy_j"]) for r in rows) * 1e3 == pytest.approx(_energy_totals(out)[1], rel=1e-3)
    assert "stages.0.downsample.convs.0.conv" in {r["layer"] for r in rows if r["kind"] == "MAC"}


def test_energy_on_event_data(tmp_path):
    """(The frames are resized from 128 to 64 here, so the first conv reads interpolated, analog values.)"""
    root = write_cifar10dvs(tmp_path / "dvs")
    out = run_script("./tools/energy.py", "--dataset", "cifar10dvs", "--data-path", str(root), "-T", "2",
                     "--embed-dim", "64", "--num-heads", "2", "--input-size", "64", "-b", "2", "--num-batches", "1",
                     "--output", str(tmp_path / "energy.csv"))
    paper, strict, memory, ann = _energy_totals(out)
    assert 0 < paper <= strict and memory > 0 and ann > 0
    rows = list(csv.DictReader(open(tmp_path / "energy.csv")))
    assert sum(float(r["energy_j"]) for r in rows) * 1e3 == pytest.approx(paper, rel=1e-3)


def test_energy_with_no_batches_is_an_error(cifar_root):
    out = run_script("./tools/energy.py", "--dataset", "cifar10", "--data-path", str(cifar_root), *TINY[:-3],
                     "--num-batches", "0", "--no-verify", expect=2)
    assert "--num-batches" in out and ": must be >= 1, got 0" in out and "Traceback" not in out


def test_fgsm_with_zero_epsilon_leaves_accuracy_unchanged():
    from tools.attack import attacks, robustness
    model = tiny_model("cifar").eval()
    x = tiny_input("cifar", batch=6)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the model gets right: clean accuracy 100 %
    result, n = robustness(model, [(x, y)], (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), attacks(fgsm_eps=(0.0, 0.3),
                                                                                          pgd_steps=(2,)))
    assert n == 6 and result["clean"] == 100.0 and result["FGSM 0"] == 100.0
    # the tiny spiking model answers one class for every input, which no attack moves; a linear one
    # shows that a strong attack does flip answers (the test can fail)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5))

    class Logits(nn.Module):  # robustness asks for the final logits, as of a SpiLiFormer
        def forward(self, x, passes=False):
            return linear(x)
    with torch.no_grad():
        y = linear(x).argmax(1)
    result, _ = robustness(Logits(), [(x, y)], (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), attacks(fgsm_eps=(0.3,),
                                                                                           pgd_steps=(2,)))
    assert result["clean"] == 100.0 and result["FGSM 0.3"] < 50.0 and result["PGD 2"] < 100.0


def test_attack_tool_prints_table_4s_row(cifar_root):
    out = run_script("./tools/attack.py", "--dataset", "cifar10", "--data-path", str(cifar_root), *TINY,
                     "--fgsm-eps", "0.05", "--pgd-steps", "1")
    assert "clean" in out and "FGSM 0.05" in out and "PGD 1" in out


def test_heatmap_png_has_the_expected_size(cifar_root, tmp_path):
    from PIL import Image
    out = run_script("./tools/heatmap.py", "--dataset", "cifar10", "--data-path", str(cifar_root), *TINY,
                     "-T", "2", "--images", "0", "3", "5", "--output", str(tmp_path / "maps.png"))
    assert "3 images x 5 columns" in out and "stage 3 FB pass 2" in out
    assert Image.open(tmp_path / "maps.png").size == (5 * 200, 3 * 200)


def test_corruptions_from_cifar10c_files(cifar_root, tmp_path):
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "labels.npy", np.tile(np.arange(4), 5).astype(np.uint8))
    for name in ("gaussian_noise", "fog"):
        np.save(folder / f"{name}.npy", rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8))
    out = run_script("./tools/corruptions.py", "--dataset", "cifar10", "--data-path", str(cifar_root), *TINY,
                     "--corruption-path", str(folder), "--corruptions", "gaussian_noise", "fog",
                     "--output", str(tmp_path / "c.csv"))
    assert "gaussian_noise" in out and str(folder) in out and "mean top-1" in out
    assert (tmp_path / "c.csv").read_text().startswith("corruption,severity_1")


def test_corruption_requests_are_checked_before_any_work(tmp_path):
    from models import ConfigError
    from tools.corruptions import check_request
    (tmp_path / "fog.npy").touch()
    check_request(["fog"], [1, 5], tmp_path)
    with pytest.raises(ConfigError, match=r"unknown corruptions \['smog'\]"):
        check_request(["fog", "smog"], [1], None)
    with pytest.raises(ConfigError, match=r"severities \[0, 6\] do not exist"):
        check_request(["fog"], [0, 1, 6], None)
    with pytest.raises(ConfigError, match="lacks gaussian_noise.npy; add the files, or choose"):
        check_request(["fog", "gaussian_noise"], [1], tmp_path)


def test_corruptions_generated_when_files_are_absent(cifar_root):
    out = run_script("./tools/corruptions.py", "--dataset", "cifar10", "--data-path", str(cifar_root), *TINY,
                     "--corruptions", "gaussian_noise", "glass_blur", "fog", "--severities", "1", "3")
    assert "generated with imagecorruptions" in out and "glass_blur" in out and "fog" in out


def test_attacks_on_event_frames_stay_in_count_space():
    from tools.attack import attacks, robustness
    model = tiny_model("event").eval()
    x = tiny_input("event", batch=4) * 3  # event counts up to 3
    with torch.no_grad():
        y = model(x).argmax(1)
    result, n = robustness(model, [(x, y)], None, None, attacks(fgsm_eps=(0.0, 0.1), pgd_steps=(1,)))
    assert n == 4 and result["clean"] == 100.0 and result["FGSM 0"] == 100.0


def test_fgsm_takes_one_signed_gradient_step_in_input_space():
    """x' = clip(x + eps * sign(d CE / dx), 0, 1), the gradient taken through the normalisation."""
    from tools.attack import attacks
    from tools.common import InputSpace

    class Linear(nn.Module):  # logits = W x on the flattened (normalised) image
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor([[1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 3.0, -0.5]]))

        def forward(self, x, passes=False):  # SpiLiFormer's signature
            return x.flatten(1) @ self.weight.T

    mean, std = (0.5,), (0.25,)
    model = InputSpace(Linear(), mean, std).eval()
    x = torch.tensor([[[[0.2, 0.9], [0.5, 0.98]]]])
    y = torch.tensor([0])
    eps = 0.05
    # by hand: d CE / d logits = softmax - onehot; d logits / dx = W / std
    logits = ((x.flatten(1) - 0.5) / 0.25) @ model.model.weight.detach().T
    grad = (logits.softmax(1) - torch.tensor([[1.0, 0.0]])) @ model.model.weight.detach() / 0.25
    expected = (x.flatten(1) + eps * grad.sign()).clamp(0, 1).view_as(x)
    adv = attacks(fgsm_eps=(eps,), pgd_steps=())[f"FGSM {eps:g}"](model)(x, y)
    torch.testing.assert_close(adv, expected)
    pgd = attacks(fgsm_eps=(), pgd_steps=(3,))["PGD 3"](model)(x, y)
    assert (pgd - x).abs().max() <= 8 / 255 + 1e-6 and pgd.min() >= 0 and pgd.max() <= 1


def test_tools_rebuild_the_architecture_a_project_checkpoint_records(cifar_root, tmp_path):
    """A CIFAR-100-trained checkpoint (100 classes, T 2, width 64, MLP ratio 2) analysed with no model flag
    (and no --dataset: the checkpoint records it)."""
    data = _cifar100(tmp_path)
    run_script("./cifar100/train.py", "--output", str(tmp_path), "--config", "./cifar100/cifar100.yml",
               "-data-dir", str(data), "-T", "2", "--embed-dim", "64", "--depths", "1", "1", "1",
               "-b", "4", "-j", "0", "--no-verify", "--epochs", "1", "--warmup-epochs", "0", "--cooldown-epochs",
               "0", "--experiment", "c100", "--model-kwargs", "mlp_ratio=2")
    ckpt = tmp_path / "c100" / "checkpoint-last.pth"
    out = run_script("./tools/attack.py", "--data-path", str(data), "--checkpoint",
                     str(ckpt), "-b", "4", "--num-batches", "1", "--no-verify", "--fgsm-eps", "0.05",
                     "--pgd-steps", "1")
    assert "num_classes=100" in out and "T=2" in out and "embed_dim=64" in out and "mlp_ratio=2" in out
    assert "FGSM 0.05" in out and "cifar100 images" in out
    out = run_script("./tools/energy.py", "--data-path", str(data), "--checkpoint",
                     str(ckpt), "-b", "4", "--num-batches", "1", "--no-verify", "--num-classes", "10", expect=1)
    assert "head.weight" in out and "Traceback" not in out  # 100 recorded vs 10 asked: a clear mismatch
    out = run_script("./tools/energy.py", "--dataset", "cifar10", "--data-path", str(cifar_root), "--checkpoint",
                     str(ckpt), "-b", "4", "--num-batches", "1", "--no-verify", expect=1)
    assert "was trained on cifar100, not cifar10" in out  # other data: every number would be meaningless


def _cifar100(tmp_path):
    root = tmp_path / "c100data"
    write_cifar(root, "cifar100", classes=100)
    return root


def test_tools_read_a_released_checkpoint_with_its_namespace(cifar_root, tmp_path):
    from conftest import DATA
    from datagen import write_timm_checkpoint
    ref = torch.load(DATA / "tiny_cifar_qkformer.pt", weights_only=True)
    ckpt = write_timm_checkpoint(tmp_path / "model_best.pth.tar", ref["state_dict"], num_classes=10)
    out = run_script("./tools/heatmap.py", "--dataset", "cifar10", "--data-path", str(cifar_root), "--checkpoint",
                     str(ckpt), "--embed-dim", "64", "--depths", "1", "1", "1", "--num-heads", "8", "-T", "2",
                     "--no-ff-lidiff", "--no-fb-lidiff", "--legacy", "--no-verify", "-b", "2",
                     "--output", str(tmp_path / "maps.png"))
    assert "wrote" in out and (tmp_path / "maps.png").is_file()


def test_tools_analyse_a_checkpoint_on_its_own_data_and_refuse_other_data(cifar_root, tmp_path):
    out = run_script("./cifar10/train.py", "--output", str(tmp_path), "--experiment", "run", "-data-dir",
                     str(cifar_root), "-T", "1", "--embed-dim", "64", "-b", "4", "-j", "0", "--no-verify",
                     "--epochs", "1", "--warmup-epochs", "0", "--cooldown-epochs", "0")
    ckpt = str(tmp_path / "run" / "checkpoint-last.pth")
    out = run_script("./tools/attack.py", "--checkpoint", ckpt, "--data-path", str(cifar_root), *TINY[4:],
                     "--fgsm-eps", "1", "--pgd-steps", "1")
    assert "images" in out and "cifar10" in out  # --dataset from the checkpoint
    out = run_script("./tools/attack.py", "--dataset", "imagenet", "--checkpoint", ckpt, "--data-path",
                     str(cifar_root), *TINY[4:], expect=1)
    assert "was trained on cifar10, not imagenet" in out and "Traceback" not in out
    write_cifar(tmp_path / "c100", "cifar100", classes=100)
    out = run_script("./tools/attack.py", "--dataset", "cifar100", "--data-path", str(tmp_path / "c100"),
                     "--num-classes", "10", *TINY, expect=1)
    assert "classifies 10 classes and cifar100" in out and "Traceback" not in out


@pytest.mark.parametrize("tool,argv,message", [
    ("attack", ["-b", "-3"], "argument -b/--batch-size: must be >= 1, got -3"),
    ("attack", ["--fgsm_eps", "-1"], "argument --fgsm-eps: must be >= 0, got -1"),
    ("energy", ["--input-size", "30"], "--input-size 30: one value or H W, each divisible by 4"),
    ("heatmap", ["--images", "999"], "--images 999: the evaluation data has"),
])
def test_bad_tool_arguments_are_one_line(cifar_root, tool, argv, message):
    out = run_script(f"./tools/{tool}.py", "--dataset", "cifar10", "--data-path", str(cifar_root), *TINY, *argv,
                     expect=2 if "must be" in message else 1)  # a usage error: argparse exits 2
    assert message in out and "Traceback" not in out


def test_tools_analyse_a_run_under_its_own_normalisation_and_size(cifar_root, tmp_path):
    from tools.common import build_parser, eval_data, load_model
    run_script("./cifar10/train.py", "--output", str(tmp_path), "--experiment", "run", "-data-dir", str(cifar_root),
               "-T", "1", "--embed-dim", "64", "-b", "4", "-j", "0", "--no-verify", "--epochs", "1",
               "--warmup-epochs", "0", "--cooldown-epochs", "0", "--mean", "0.1", "0.2", "0.3", "--std", "0.5",
               "0.5", "0.5", "--img-size", "16")
    args = build_parser("t").parse_args(["--checkpoint", str(tmp_path / "run" / "checkpoint-last.pth"),
                                         "--data-path", str(cifar_root), "--no-verify", "--device", "cpu"])
    model = load_model(args)
    dataset, mean, std = eval_data(args, model)
    assert (mean, std) == ([0.1, 0.2, 0.3], [0.5, 0.5, 0.5]) and dataset[0][0].shape == (3, 16, 16)
    assert 0 <= dataset[0][0].min() and dataset[0][0].max() <= 1  # unnormalised: InputSpace normalises
    args = build_parser("t").parse_args(["--checkpoint", str(tmp_path / "run" / "checkpoint-last.pth"),
                                         "--data-path", str(cifar_root), "--no-verify", "--input-size", "24"])
    assert eval_data(args, load_model(args))[0][0][0].shape == (3, 24, 24)  # the flag wins


@pytest.mark.parametrize("argv,message", [
    (["--batch_size", "0"], "argument -b/--batch-size: must be >= 1, got 0"),
    (["--repeats", "0"], "--repeats: must be >= 1, got 0"),
    (["--embed-dim", "0"], "embed_dim must be at least 1"),
    (["--model", "nope"], "unknown model 'nope'"),
])
def test_bad_benchmark_arguments_are_one_line(argv, message):
    out = run_script("./tools/benchmark.py", "--device", "cpu", *argv, expect=2 if ": must be" in message else 1)
    assert message in out and "Traceback" not in out
