"""CIFAR10-DVS and N-Caltech101 scripts end to end, from raw event files written in their formats."""
import shutil

import numpy as np
import pytest
import torch

from datagen import write_cifar10dvs, write_ncaltech101
from test_cifar import run_script

TINY = ["--embed-dim", "64", "--num-heads", "2", "-b", "6", "--workers", "0", "--warmup-epochs", "1",
        "--cooldown-epochs", "0", "--no-amp", "--log-interval", "5"]


@pytest.fixture(scope="module")
def dvs_root(tmp_path_factory):
    return write_cifar10dvs(tmp_path_factory.mktemp("cifar10dvs"))


@pytest.fixture(scope="module")
def ncaltech_root(tmp_path_factory):
    return write_ncaltech101(tmp_path_factory.mktemp("ncaltech101"))


def test_cifar10dvs_from_raw_archives_trains_caches_resumes_and_evaluates(dvs_root, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    common = ["--output-dir", str(out), "--data-path", str(dvs_root), "--T", "2", "--input-size", "64",
              "--dts_cache", str(cache), *TINY]
    log = run_script("./cifar10dvs/train.py", *common, "--epochs", "1")
    assert "converting 100 CIFAR10-DVS event files" in log and "integrating 100 samples into T=2" in log
    assert (out / "checkpoint-last.pth").is_file() and (cache / "cifar10dvs-split.json").is_file()
    log = run_script("./cifar10dvs/train.py", *common, "--epochs", "2", "--resume", str(out / "checkpoint-last.pth"))
    assert "dts_cache: using" in log and "converting" not in log and "integrating" not in log
    assert "epoch 2/2" in log and "epoch 1/2" not in log
    log = run_script("./cifar10dvs/train.py", *common, "--eval", "--resume", str(out / "checkpoint-last.pth"))
    assert "pass-2 top-1" in log and "(10 images)" in log  # the last 10 % of each class


def test_cache_built_for_another_T_is_rebuilt_not_reused(dvs_root, tmp_path):
    cache = tmp_path / "cache"
    common = ["--output-dir", str(tmp_path), "--data-path", str(dvs_root), "--input-size", "64",
              "--dts_cache", str(cache), *TINY, "--epochs", "1"]
    run_script("./cifar10dvs/train.py", *common, "--T", "2", "--experiment", "a")
    log = run_script("./cifar10dvs/train.py", *common, "--T", "3", "--experiment", "b")
    assert "was built for another set-up" in log and "'T': [2, 3]" in log.replace("(", "[").replace(")", "]")
    assert "integrating 100 samples into T=3" in log


@pytest.mark.spikingjelly  # a script end to end: spikingjelly's ATIS reader and frame integration, then training
def test_ncaltech101_with_a_non_square_input_size(ncaltech_root, tmp_path):
    log = run_script("./ncaltech101/train.py", "--output-dir", str(tmp_path), "--data-path", str(ncaltech_root),
                     "--dts_cache", str(ncaltech_root / "dts_cache"), "--T", "2", "--input-size", "48", "64",
                     *TINY, "--epochs", "1")
    assert "converting 30 N-Caltech101 event files" in log and "(3 images)" in log and "epoch 1/1" in log


@pytest.mark.parametrize("script,what", [("cifar10dvs", "airplane.zip"), ("ncaltech101", "Caltech101.zip")])
def test_missing_dataset_says_what_to_download_and_where(tmp_path, script, what):
    log = run_script(f"./{script}/train.py", "--output-dir", str(tmp_path), "--data-path", str(tmp_path / "none"),
                     *TINY, expect=1)
    assert what in log and str(tmp_path / "none" / "download") in log and "http" in log


@pytest.mark.spikingjelly
def test_aedat_reader_equals_spikingjellys(tmp_path, monkeypatch):
    from spikingjelly.datasets import cifar10_dvs

    from engine.dvs import read_cifar10dvs
    from models import spikingjelly_compat as sj
    write_cifar10dvs(tmp_path, classes=("airplane",), per_class=1, zipped=False)
    path = next((tmp_path / "extract").glob("*/*.aedat"))
    ours = read_cifar10dvs(path)
    if sj.IS_V2:  # 2.0's reader runs on NumPy 2
        theirs = cifar10_dvs._load_origin_data(str(path))
    else:
        monkeypatch.setattr(np, "fromstring", np.frombuffer, raising=False)  # what NumPy 1 did
        theirs = cifar10_dvs.CIFAR10DVS.load_origin_data(str(path))
    for key in "txyp":
        assert np.array_equal(ours[key], theirs[key]), key


def test_split_takes_the_first_90_percent_of_each_class_in_file_order():
    from engine.dvs import split_per_class
    samples = [(f"a/{i:02d}.npz", 0) for i in range(10)] + [(f"b/{i:02d}.npz", 1) for i in range(20)]
    train, test = split_per_class(samples)
    assert train == samples[:9] + samples[10:28] and test == [samples[9]] + samples[28:]


def test_interrupted_preparation_is_redone(dvs_root, tmp_path):
    from engine.dvs import prepare_events, prepare_frames
    root = tmp_path / "copy"
    shutil.copytree(dvs_root / "download", root / "download")
    (root / "events_np.tmp" / "airplane").mkdir(parents=True)  # a conversion killed half-way
    assert len(list(prepare_events("cifar10dvs", root).glob("*/*.npz"))) == 100
    samples, _ = prepare_frames("cifar10dvs", root, 2)
    victim = root / samples[0][0]
    victim.unlink()  # an integration killed half-way
    samples, classes = prepare_frames("cifar10dvs", root, 2)
    assert len(samples) == 100 and victim.is_file() and len(classes) == 10


def test_snn_augment_applies_one_geometric_op_to_every_frame():
    from engine.dvs import SNNAugmentWide
    torch.manual_seed(0)
    aug = SNNAugmentWide()
    frames = torch.rand(1, 2, 32, 32).repeat(4, 1, 1, 1)
    for _ in range(20):
        out = aug(frames)
        assert out.shape == frames.shape
        assert all(torch.equal(out[0], out[t]) for t in range(4))


def test_snn_augment_cutout_is_qkformers_small_square():
    from engine.dvs import SNNAugmentWide
    torch.manual_seed(0)
    cutout = SNNAugmentWide().cutout
    frames = torch.ones(4, 2, 128, 128)
    for _ in range(20):
        erased = cutout(frames) == 0
        assert all(torch.equal(erased[0, 0], erased[t, c]) for t in range(4) for c in range(2))
        rows, cols = erased[0, 0].any(1).sum().item(), erased[0, 0].any(0).sum().item()
        assert rows == cols and erased[0, 0].sum() == rows * cols       # a square (ratio (1, 1))
        assert 0 < rows * cols <= round((0.11 * 128 * 128) ** 0.5) ** 2  # scale (0.001, 0.11)


def test_frames_cut_short_by_a_kill_are_integrated_again_and_never_read(dvs_root, tmp_path):
    """A folder without a manifest (spikingjelly's, or a run killed before writing it) holding an empty
    and a truncated frame file: both are found and integrated again."""
    from engine.dvs import MANIFEST, prepare_frames
    root = tmp_path / "copy"
    shutil.copytree(dvs_root / "download", root / "download")
    samples, _ = prepare_frames("cifar10dvs", root, 2)
    frames = root / samples[0][0]
    whole = {p: p.read_bytes() for p in (root / samples[0][0], root / samples[1][0])}
    (frames.parent.parent / MANIFEST).unlink()
    (root / samples[0][0]).write_bytes(b"")
    (root / samples[1][0]).write_bytes(whole[root / samples[1][0]][:100])
    samples, _ = prepare_frames("cifar10dvs", root, 2)
    assert all(p.read_bytes() == data for p, data in whole.items())
    assert (frames.parent.parent / MANIFEST).is_file()
    (root / samples[2][0]).write_bytes(b"")  # damaged after the manifest: its size gives it away
    samples, _ = prepare_frames("cifar10dvs", root, 2)
    with np.load(root / samples[2][0]) as f:
        assert f["frames"].shape[0] == 2


def test_killing_the_frame_integration_at_any_moment_leaves_a_usable_cache(tmp_path):
    """Real SIGKILLs at several moments of the integration of 300 recordings; the next run completes
    the folder and every file reads back."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from conftest import ROOT
    from engine.dvs import prepare_events, prepare_frames
    root = write_cifar10dvs(tmp_path / "dvs", per_class=30, events=3000)
    prepare_events("cifar10dvs", root)
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from engine.dvs import prepare_frames; " \
           f"prepare_frames('cifar10dvs', {str(root)!r}, 16)"
    frames, done = root / "frames_number_16_split_by_number", []
    for delay in (0.0, 0.05, 0.2, 0.4):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:
            if line.startswith("integrating"):
                break
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done.append(len(list(frames.glob("*/*.npz"))))
    assert any(0 < n < 300 for n in done), done  # at least one kill fell in the middle
    samples, classes = prepare_frames("cifar10dvs", root, 16)
    assert len(samples) == 300 and len(classes) == 10
    for path, _ in samples:
        with np.load(root / path) as f:
            assert f["frames"].shape[:2] == (16, 2)


def test_an_eval_whose_weights_cannot_fit_fails_before_any_frame_is_integrated(dvs_root, tmp_path):
    out = tmp_path / "out"
    common = ["--output-dir", str(out), "--data-path", str(dvs_root), "--input-size", "64", *TINY]
    run_script("./cifar10dvs/train.py", *common, "--T", "2", "--epochs", "1")
    log = run_script("./cifar10dvs/train.py", *common, "--eval", "--resume", str(out / "checkpoint-last.pth"),
                     "--embed-dim", "128", "--T", "5", expect=1)
    assert "was trained with" in log and "integrating" not in log and "Traceback" not in log
    log = run_script("./cifar10dvs/train.py", *common, "--eval", "--resume", str(out / "checkpoint-last.pth"))
    assert "records the model as" in log and "pass-2 top-1" in log and "integrating" not in log  # T 2, cached
