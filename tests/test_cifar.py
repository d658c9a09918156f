"""CIFAR-10/100 scripts end to end on tiny generated pickles: train, resume, eval, errors, DDP."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from datagen import write_cifar

TINY_RUN = ["-T", "1", "--embed-dim", "64", "-b", "4", "-j", "0", "--no-verify", "--log-interval", "5",
            "--warmup-epochs", "1", "--cooldown-epochs", "0"]


def run_script(script, *args, expect=0, nproc=1):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    if nproc > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--master_port={port}", script, *args]
    else:
        cmd = [sys.executable, script, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == expect, f"exit {proc.returncode}:\n{output[-4000:]}"
    return output


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, "cifar10")
    write_cifar(root, "cifar100", classes=100)
    return root


def train(name, root, out, *extra, expect=0, nproc=1):
    return run_script(f"./{name}/train.py", "--output", str(out), "--config", f"./{name}/{name}.yml",
                      "-data-dir", str(root), *TINY_RUN, *extra, expect=expect, nproc=nproc)


def weights(path, parameters_only=False):
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    if parameters_only:
        state = {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}
    return state


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_train_then_eval_from_the_seed_command_line(name, cifar_root, tmp_path):
    log = train(name, cifar_root, tmp_path, "--epochs", "2", "--experiment", "run")
    run = tmp_path / "run"
    assert "effective batch 4" in log and "epoch 2/2" in log and "img/s" in log and "eta" in log
    for f in ("checkpoint-last.pth", "checkpoint-best.pth", "config.yaml", "log.txt"):
        assert (run / f).is_file(), f
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (run / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and "val_pass2_top1" in records[0]
    state = torch.load(run / "checkpoint-last.pth", weights_only=True)
    assert state["epoch"] == 1 and isinstance(state["args"], dict)

    out = run_script(f"./{name}/train.py", "--config", f"./{name}/{name}.yml", "-data-dir", str(cifar_root),
                     *TINY_RUN, "--eval", "--resume", str(run / "checkpoint-last.pth"))
    line = [x for x in out.splitlines() if x.startswith("eval ")][0]
    assert "pass-1 top-1" in line and "pass-2 top-1" in line and "top-5" in line and "loss" in line
    assert f"pass-2 top-1 {records[-1]['val_pass2_top1']:.2f}%" in line


def test_resume_continues_exactly_as_straight_training(cifar_root, tmp_path):
    train("cifar10", cifar_root, tmp_path, "--epochs", "3", "--save-every", "1", "--experiment", "straight")
    train("cifar10", cifar_root, tmp_path, "--epochs", "3", "--experiment", "resumed",
          "--resume", str(tmp_path / "straight" / "checkpoint-2.pth"))
    straight = weights(tmp_path / "straight" / "checkpoint-last.pth")
    resumed = weights(tmp_path / "resumed" / "checkpoint-last.pth")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_two_process_ddp_equals_one_process_on_the_same_global_batch(cifar_root, tmp_path):
    """2 processes x batch 1 and 1 process x batch 1 x 2 accumulation steps see the same samples per
    step (per-sample BN statistics alike) and must reach the same weights."""
    common = ["--epochs", "1", "--warmup-epochs", "0", "-b", "1", "--mixup", "0", "--aa", "", "--reprob", "0",
              "--hflip", "0", "--lr", "1e-3"]
    train("cifar10", cifar_root, tmp_path, *common, "--accum-iter", "2", "--experiment", "one")
    log = train("cifar10", cifar_root, tmp_path, *common, "--experiment", "two", nproc=2)
    assert "world_size: 2" in log and "effective batch 2" in log
    one = weights(tmp_path / "one" / "checkpoint-last.pth", parameters_only=True)
    two = weights(tmp_path / "two" / "checkpoint-last.pth", parameters_only=True)
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(cifar_root, tmp_path):
    out = train("cifar10", cifar_root, tmp_path, "--epochs", "2", "--warmup-lr", "1e-5", "--lr", "1e38",
                "--experiment", "nan", expect=1)
    assert "error: loss is nan at epoch 2, step" in out or "error: loss is inf at epoch 2, step" in out
    state = torch.load(tmp_path / "nan" / "checkpoint-last.pth", weights_only=True)
    assert state["epoch"] == 0  # epoch 1's checkpoint, intact


def test_corrupt_checkpoint_gives_a_clear_error(cifar_root, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 100)
    out = run_script("./cifar10/train.py", "--config", "./cifar10/cifar10.yml", "-data-dir", str(cifar_root),
                     *TINY_RUN, "--eval", "--resume", str(bad), expect=1)
    assert "cannot read checkpoint" in out and "corrupt" in out


def test_mismatched_checkpoint_lists_the_keys(cifar_root, tmp_path):
    train("cifar10", cifar_root, tmp_path, "--epochs", "1", "--experiment", "small")
    out = run_script("./cifar10/train.py", "--config", "./cifar10/cifar10.yml", "-data-dir", str(cifar_root),
                     *TINY_RUN, "--embed-dim", "128", "--eval", "--resume",
                     str(tmp_path / "small" / "checkpoint-last.pth"), expect=1)
    assert "checkpoint does not match the model" in out and "shape mismatches" in out
    assert "was trained with --embed-dim 64" in out and "add that to the command line" in out


def test_checksums_are_verified_by_default(cifar_root, tmp_path):
    args = [a for a in TINY_RUN if a != "--no-verify"]
    out = run_script("./cifar10/train.py", "--config", "./cifar10/cifar10.yml", "-data-dir", str(cifar_root),
                     *args, "--output", str(tmp_path), expect=1)
    assert "checksum" in out and "--no-verify" in out


def test_missing_dataset_names_the_expected_layout(tmp_path, monkeypatch):
    from engine import data
    monkeypatch.setattr(data, "_online", lambda *a, **k: False)
    with pytest.raises(data.DatasetError) as err:
        data.cifar_dataset("cifar100", tmp_path, True, None)
    message = str(err.value)
    assert str(tmp_path / "cifar-100-python") in message and "offline" in message and "-data-dir" in message


def test_unknown_yml_key_is_an_error(tmp_path):
    config = tmp_path / "bad.yml"
    config.write_text("epochs: 3\nlearning_rate: 0.1\n")
    out = run_script("./cifar10/train.py", "--config", str(config), expect=2)
    assert "unknown keys ['learning_rate']" in out


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_cifar_pickle_that_would_run_code_is_refused_even_without_checksums(tmp_path):
    import pickle
    root = tmp_path / "data"
    folder = write_cifar(root, "cifar10")
    marker = tmp_path / "ran"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": _Payload(marker), "labels": [0]}, f)
    out = run_script("./cifar10/train.py", "--config", "./cifar10/cifar10.yml", "-data-dir", str(root), *TINY_RUN,
                     "--output", str(tmp_path / "out"), expect=1)
    assert "test_batch is not a CIFAR python pickle" in out and "system" in out
    assert "Traceback" not in out and not marker.exists()


@pytest.mark.parametrize("fault,expected", [
    ("shape", "expected uint8 [N, 3072]"),
    ("few_labels", "8 images but 'labels'"),
    ("label_range", "outside the 10 classes"),
    ("missing_key", "has no ['labels']"),
    ("not_dict", "holds a list"),
])
def test_malformed_cifar_pickles_name_the_file_and_what_was_expected(tmp_path, fault, expected):
    import pickle

    import numpy as np

    from engine.data import DatasetError, cifar_dataset
    folder = write_cifar(tmp_path, "cifar10")
    entry = {"data": np.zeros((8, 3072), np.uint8), "labels": [0] * 8}
    if fault == "shape":
        entry["data"] = np.zeros((8, 32, 32, 3), np.uint8)
    elif fault == "few_labels":
        entry["labels"] = [0] * 7
    elif fault == "label_range":
        entry["labels"] = [0] * 7 + [10]
    elif fault == "missing_key":
        del entry["labels"]
    else:
        entry = [entry]
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(entry, f)
    with pytest.raises(DatasetError) as err:
        cifar_dataset("cifar10", tmp_path, False, None, verify=False)
    assert str(folder / "test_batch") in str(err.value) and expected in str(err.value)


def test_cifar_pickles_read_as_torchvision_reads_them(cifar_root):
    from torchvision.datasets import CIFAR100

    from engine.data import CifarPickles
    ours = CifarPickles("cifar100", cifar_root, True, verify=False)
    unchecked = {"train_list": [["train", None]], "test_list": [["test", None]], "meta": {**CIFAR100.meta, "md5": None}}
    theirs = type("C", (CIFAR100,), unchecked)(str(cifar_root), train=True)
    assert ours.classes == theirs.classes and ours.targets == theirs.targets
    assert (ours.data == theirs.data).all()
    image, label = ours[3]
    assert image.tobytes() == theirs[3][0].tobytes() and label == theirs[3][1]


def test_resuming_with_more_epochs_follows_the_longer_schedule(cifar_root, tmp_path):
    """A 2-epoch run continued with --epochs 4 trains epochs 3-4 at the lr of a straight 4-epoch run."""
    train("cifar10", cifar_root, tmp_path, "--epochs", "4", "--experiment", "straight")
    train("cifar10", cifar_root, tmp_path, "--epochs", "2", "--experiment", "short")
    out = train("cifar10", cifar_root, tmp_path, "--epochs", "4", "--experiment", "short",
                "--resume", str(tmp_path / "short" / "checkpoint-last.pth"))
    assert "at epoch 3 of 4" in out and "t_initial 2 -> 4" in out

    def lrs(run):
        return [json.loads(line)["train_lr"] for line in (tmp_path / run / "log.txt").read_text().splitlines()]
    assert lrs("short")[2:] == lrs("straight")[2:] and lrs("short")[3] > 1e-5  # not stuck at min_lr


def test_finetune_from_a_timm_saver_checkpoint(cifar_root, tmp_path):
    """QKFormer's CIFAR checkpoints: timm CheckpointSaver's layout, args an argparse.Namespace."""
    from conftest import DATA
    from datagen import write_timm_checkpoint
    ref = torch.load(DATA / "tiny_cifar_qkformer.pt", weights_only=True)
    ckpt = write_timm_checkpoint(tmp_path / "model_best.pth.tar", ref["state_dict"], num_classes=10, T=2)
    out = train("cifar10", cifar_root, tmp_path, "--epochs", "1", "--experiment", "ft", "--num-heads", "8",
                "--depths", "1", "1", "1", "-T", "2", "--no-ff-lidiff", "--no-fb-lidiff", "--finetune", str(ckpt))
    assert "epoch 1/1" in out and "partially" not in out  # every tensor fits: nothing re-initialised


def start_script(script, *args):
    """A train.py in its own process group (as a cluster job step), for a real signal."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def signal_after(proc, line_start, signum, group=True):
    """Send `signum` once the run prints a line starting with `line_start`; returns (exit, output)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(line_start):
            (os.killpg if group else os.kill)(proc.pid, signum)
            break
    lines += proc.stdout.readlines()
    proc.wait(timeout=300)
    return proc.returncode, "".join(lines)


@pytest.fixture(scope="module")
def bigger_cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar_bigger")
    write_cifar(root, "cifar10", train_per_batch=24)  # 120 images: 30 steps of 4
    return root


@pytest.mark.parametrize("workers", ["0", "2"])
def test_sigterm_mid_epoch_saves_and_resume_continues_bit_exactly(bigger_cifar, tmp_path, workers):
    """A real SIGTERM to the job's process group (workers included) mid-epoch: the run saves where it
    is and exits 143; --resume reaches the straight run's weights and epoch losses bit for bit
    (recipe augmentation and mixup on)."""
    import signal
    common = ["--output", str(tmp_path), "--config", "./cifar10/cifar10.yml", "-data-dir", str(bigger_cifar),
              *TINY_RUN, "--epochs", "2", "-j", workers, "--log-interval", "1"]
    run_script("./cifar10/train.py", *common, "--experiment", "straight")
    code, out = signal_after(start_script("./cifar10/train.py", *common, "--experiment", "stopped"),
                             "epoch 1/2 [ 9/30]", signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, out[-3000:]
    assert "Traceback" not in out and "SIGTERM: saved epoch 1, step" in out and "--resume" in out
    last = tmp_path / "stopped" / "checkpoint-last.pth"
    assert torch.load(last, weights_only=True)["position"]["step"] >= 9
    out = run_script("./cifar10/train.py", *common, "--resume", str(last))
    assert "resuming" in out and ", step " in out
    straight, resumed = weights(tmp_path / "straight" / "checkpoint-last.pth"), weights(last)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    logs = [[json.loads(x)["train_loss"] for x in (tmp_path / run / "log.txt").read_text().splitlines()]
            for run in ("straight", "stopped")]
    assert logs[0] == logs[1]


def test_ctrl_c_is_one_line_and_a_second_stops_at_once(bigger_cifar, tmp_path):
    import signal
    common = ["--output", str(tmp_path), "--config", "./cifar10/cifar10.yml", "-data-dir", str(bigger_cifar),
              *TINY_RUN, "--epochs", "2", "--log-interval", "1"]
    code, out = signal_after(start_script("./cifar10/train.py", *common, "--experiment", "a"),
                             "epoch 1/2 [ 3/30]", signal.SIGINT)
    assert code == 128 + signal.SIGINT and "Traceback" not in out and "SIGINT: saved epoch 1" in out
    proc = start_script("./cifar10/train.py", *common, "--experiment", "b")
    for line in proc.stdout:
        if line.startswith("epoch 1/2 [ 3/30]"):
            os.killpg(proc.pid, signal.SIGINT)
            os.killpg(proc.pid, signal.SIGINT)
            break
    out = proc.stdout.read()
    assert proc.wait(timeout=300) == 128 + signal.SIGINT and "Traceback" not in out


def _in_small_filesystem(folder, size, command):
    """`command` (a shell line) with a `size` tmpfs mounted on `folder`, in a user namespace (no root
    needed where unprivileged namespaces are allowed); None where that is not possible here."""
    import shutil
    if not shutil.which("unshare"):
        return None
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {folder}"],
                           capture_output=True)
    if probe.returncode:
        return None
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs {folder} && {command}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc.stdout + proc.stderr


def test_a_really_full_disk_is_one_line_and_keeps_the_previous_checkpoint(bigger_cifar, tmp_path):
    """A 4 MB filesystem holds epoch 1's checkpoint (2.6 MB) but not a second one beside it."""
    out_dir = tmp_path / "small"
    out_dir.mkdir()
    check = ("import torch, pathlib; r = pathlib.Path('{0}/r'); "
             "print('EPOCH', torch.load(r / 'checkpoint-last.pth', weights_only=True)['epoch'], "
             "'TMP', sorted(p.name for p in r.glob('*.tmp')))").format(out_dir)
    command = (f"{sys.executable} ./cifar10/train.py --output {out_dir} --experiment r --config ./cifar10/cifar10.yml "
               f"-data-dir {bigger_cifar} {' '.join(TINY_RUN)} --epochs 3; echo EXIT $?; "
               f"{sys.executable} -c \"{check}\"")
    out = _in_small_filesystem(out_dir, "4m", command)
    if out is None:
        pytest.skip("no way to mount a small filesystem here (unshare -rm)")
    assert "EXIT 1" in out and "Traceback" not in out, out[-3000:]
    assert "error: cannot write" in out and "No space left on device" in out and "previous checkpoint is intact" in out
    assert "EPOCH 0 TMP []" in out


def test_a_diverged_state_with_a_finite_loss_is_never_saved_or_marked_best(bigger_cifar, tmp_path):
    """--lr 100: the loss stays finite while BN's running statistics overflow to inf in epoch 2."""
    out = train("cifar10", bigger_cifar, tmp_path, "--epochs", "3", "--warmup-lr", "1e-5", "--lr", "100",
                "--experiment", "diverged", expect=1)
    assert "Traceback" not in out and "nan/inf after epoch" in out and "running_" in out
    run = tmp_path / "diverged"
    for name in ("checkpoint-last.pth", "checkpoint-best.pth"):
        if (run / name).exists():
            state = torch.load(run / name, weights_only=True)["model"]
            assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), name


def test_two_runs_started_together_into_one_folder_one_is_refused(bigger_cifar, tmp_path):
    common = ["--output", str(tmp_path), "--config", "./cifar10/cifar10.yml", "-data-dir", str(bigger_cifar),
              *TINY_RUN, "--epochs", "1", "--experiment", "shared"]
    procs = [start_script("./cifar10/train.py", *common) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    refused = outs[[p.returncode for p in procs].index(1)]
    # "in use by another process" when the holder has not written its pid yet
    assert "Traceback" not in refused and ("is in use by" in refused or "already holds another run" in refused)
    lines = (tmp_path / "shared" / "log.txt").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]


def test_a_folder_held_by_a_live_run_is_refused_naming_it(bigger_cifar, tmp_path):
    import fcntl
    folder = tmp_path / "busy"
    folder.mkdir()
    with open(folder / "run.lock", "w") as lock:
        lock.write("pid 4242 on node7 since 2026-12-03 10:00:00\n")
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        out = train("cifar10", bigger_cifar, tmp_path, "--epochs", "1", "--experiment", "busy", expect=1)
    assert "busy is in use by pid 4242 on node7" in out and "Traceback" not in out
    train("cifar10", bigger_cifar, tmp_path, "--epochs", "1", "--experiment", "busy")  # released: free again


def test_resuming_an_older_checkpoint_into_its_folder_never_goes_backwards(cifar_root, tmp_path):
    train("cifar10", cifar_root, tmp_path, "--epochs", "3", "--save-every", "1", "--experiment", "run")
    out = train("cifar10", cifar_root, tmp_path, "--epochs", "3", "--resume",
                str(tmp_path / "run" / "checkpoint-1.pth"), expect=1)
    assert "is further on (epoch 3 done)" in out and "--experiment" in out and "Traceback" not in out
    assert torch.load(tmp_path / "run" / "checkpoint-last.pth", weights_only=True)["epoch"] == 2
    lines = (tmp_path / "run" / "log.txt").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    train("cifar10", cifar_root, tmp_path, "--epochs", "3", "--experiment", "branch", "--resume",
          str(tmp_path / "run" / "checkpoint-1.pth"))  # a branch in a new folder is fine
    assert [json.loads(x)["epoch"] for x in (tmp_path / "branch" / "log.txt").read_text().splitlines()] == [2, 3]


def test_a_log_line_lost_between_checkpoint_and_log_is_written_on_resume(cifar_root, tmp_path):
    train("cifar10", cifar_root, tmp_path, "--epochs", "2", "--experiment", "run")
    log = tmp_path / "run" / "log.txt"
    first, second = log.read_text().splitlines()
    log.write_text(first + "\n")  # as a kill after saving epoch 2 and before its log line leaves it
    train("cifar10", cifar_root, tmp_path, "--epochs", "3", "--resume", str(tmp_path / "run" / "checkpoint-last.pth"))
    lines = log.read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3] and lines[1] == second


def test_evaluating_a_checkpoint_on_data_with_other_classes_says_so_not_a_flag(cifar_root, tmp_path):
    train("cifar10", cifar_root, tmp_path, "--epochs", "1", "--experiment", "run")
    out = run_script("./cifar100/train.py", "--config", "./cifar100/cifar100.yml", "-data-dir", str(cifar_root),
                     *TINY_RUN, "--eval", "--resume", str(tmp_path / "run" / "checkpoint-last.pth"), expect=1)
    assert "classifies 10 classes, and this data has 100" in out and "--num-classes" not in out


def test_cifar_pickles_with_bytes_keys_read_as_the_same_content(tmp_path):
    import pickle
    from engine.data import read_cifar_pickle
    path = tmp_path / "data_batch_1"
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": [3, 1]}, f)
    entry = read_cifar_pickle(path, ["data", "labels"])
    assert entry["labels"] == [3, 1] and np.array_equal(entry["data"], data)


def test_eval_and_resume_build_the_model_the_checkpoint_records(cifar_root, tmp_path):
    """The README's eval command with no model flag, for a model of another size than the recipe's."""
    train("cifar10", cifar_root, tmp_path, "--epochs", "1", "--experiment", "run", "--depths", "1", "1", "1",
          "--num-heads", "2", "--model-kwargs", "mlp_ratio=2")
    ckpt = tmp_path / "run" / "checkpoint-last.pth"
    assert torch.load(ckpt, weights_only=True)["model_args"]["depths"] == [1, 1, 1]
    seed_command = ["--config", "./cifar10/cifar10.yml", "-data-dir", str(cifar_root), "--no-verify", "-j", "0"]
    out = run_script("./cifar10/train.py", *seed_command, "--eval", "--resume", str(ckpt))
    assert "records the model as --T 1 --embed-dim 64 --depths 1 1 1 --num-heads 2" in out and "eval " in out
    out = run_script("./cifar10/train.py", *seed_command, "--eval", "--resume", str(ckpt), "--embed-dim", "128",
                     expect=1)  # a flag given wins, and the weights do not fit it: one clear error
    assert "was trained with" in out and "--embed-dim 64" in out and "Traceback" not in out
    out = run_script("./cifar10/train.py", *seed_command, "--output", str(tmp_path), "--resume", str(ckpt),
                     "--epochs", "2", "--cooldown-epochs", "0", "-b", "4")
    assert "records the model as" in out and "epoch 2/2" in out


def test_a_checkpoint_from_before_model_args_still_evaluates_and_resumes(cifar_root, tmp_path):
    from conftest import DATA
    import shutil
    ckpt = tmp_path / "old" / "checkpoint-last.pth"
    ckpt.parent.mkdir()
    shutil.copy(DATA / "run_checkpoint_d4e238c.pth", ckpt)
    seed_command = ["--config", "./cifar10/cifar10.yml", "-data-dir", str(cifar_root), "--no-verify", "-j", "0"]
    out = run_script("./cifar10/train.py", *seed_command, "--eval", "--resume", str(ckpt))
    assert "records the model as --T 2 --embed-dim 32 --depths 1 1 1 --num-heads 2" in out and "eval " in out
    out = run_script("./cifar10/train.py", *seed_command, "--resume", str(ckpt), "--epochs", "2",
                     "--cooldown-epochs", "0", "-b", "4")
    assert "epoch 2/2" in out and "done" in out
    out = run_script("./tools/energy.py", "--checkpoint", str(ckpt), "--data-path", str(cifar_root), "--no-verify",
                     "-b", "4", "--num-batches", "1")
    assert "T=2" in out and "embed_dim=32" in out
