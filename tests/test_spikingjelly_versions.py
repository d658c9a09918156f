"""The project against the installed spikingjelly, 0.0.0.0.14 or 2.0.x (CI runs the `spikingjelly`
marker under both): our LIF is its LIFNode, and our DVS frames are 0.0.0.0.14's.

`data/dvs_frames_spikingjelly_0.0.0.0.14.npz` holds the frames 0.0.0.0.14 makes from the files
`raw_dvs` writes (tests/data/README.md), so the check against 0.0.0.0.14 also runs under 2.0.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from models import spikingjelly_compat as sj
from models.lif_constants import ALPHA, TAU
from models.neurons import LIF

from conftest import DATA
from datagen import write_cifar10dvs, write_ncaltech101

pytestmark = pytest.mark.spikingjelly

SJ_0_0_0_0_14 = pytest.mark.skipif(sj.IS_V2, reason="needs spikingjelly 0.0.0.0.14 installed")


# ---------------------------------------------------------------- the LIF

def spikingjellys_lifnode(v_threshold):
    """Eqs 1-3 as spikingjelly's own multi-step LIFNode, with no class of ours in between."""
    return sj.neuron.LIFNode(tau=TAU, decay_input=True, v_threshold=v_threshold, v_reset=0.0,
                             surrogate_function=sj.surrogate.Sigmoid(alpha=ALPHA), detach_reset=True,
                             step_mode="m", **sj.LIF_NODE_BACKEND)


def lif_input(T, v_threshold, seed=0, shape=(3, 7, 11)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, *shape, generator=g) * 1.5 + v_threshold
    x.view(T, -1)[0, :5] = 2 * v_threshold  # h = v_th exactly at t = 0: Heaviside(0) fires
    return x


def power_of_two_gradient(shape, seed=1):
    """Incoming gradients +-2^k: both versions' groupings of the surrogate's products round alike on them."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, shape, generator=g) * 2 - 1
    return signs * 2.0 ** torch.randint(-4, 5, shape, generator=g)


def run(lif, x, grad, calls=2):
    """Spikes, last v and grad of x after `calls` calls on chunks of x (state carried between calls)."""
    sj.functional.reset_net(lif)
    x = x.clone().requires_grad_()
    spikes = torch.cat([lif(chunk) for chunk in x.chunk(calls)])
    (spikes * grad).sum().backward()
    return spikes.detach(), lif.v.detach(), x.grad


@pytest.mark.parametrize("T,v_threshold", [(1, 1.0), (4, 0.5), (16, 1.0)])
def test_our_lif_equals_spikingjellys_lifnode_bit_for_bit(T, v_threshold):
    x = lif_input(T, v_threshold)
    grad = power_of_two_gradient(x.shape)
    ref = run(spikingjellys_lifnode(v_threshold), x, grad, calls=min(T, 2))
    ours = run(LIF(v_threshold, backend="torch"), x, grad, calls=min(T, 2))
    assert ref[0].mean() > 0.05, "the test must make neurons fire"
    for name, a, b in zip(("spikes", "v", "grad"), ours, ref):
        assert torch.equal(a, b), name


def test_our_lif_equals_spikingjellys_lifnode_in_eval_mode():
    x = lif_input(8, 0.5)
    with torch.no_grad():
        ref, ours = spikingjellys_lifnode(0.5).eval(), LIF(0.5, backend="torch").eval()
        assert torch.equal(ours(x), ref(x)) and torch.equal(ours.v, ref.v)


def test_gradients_for_any_incoming_gradient_match_spikingjelly():
    """Bit for bit on 0.0.0.0.14 (the official code's, whose grouping our kernel keeps); on 2.0 one
    rounding of grad * ((1 - sig) * sig * alpha) per step apart (models/spikingjelly_compat.py)."""
    x = lif_input(16, 1.0)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    ref = run(spikingjellys_lifnode(1.0), x, grad)
    ours = run(LIF(1.0, backend="torch"), x, grad)
    assert torch.equal(ours[0], ref[0]) and torch.equal(ours[1], ref[1])
    assert torch.equal(ours[2], ref[2])


# ---------------------------------------------------------------- DVS frames

T = 4
GOLDEN = DATA / "dvs_frames_spikingjelly_0.0.0.0.14.npz"


def raw_dvs(root):
    """Two small datasets in their raw formats (CIFAR10-DVS: two extracted classes). 2001 events in
    T=4 slices: the last slice takes the remainder, and some pixels are hit twice."""
    write_cifar10dvs(root / "cifar10dvs", classes=("airplane", "automobile"), per_class=2, events=2001, zipped=False)
    write_ncaltech101(root / "ncaltech101", classes=("accordion",), per_class=2, events=2001)
    return root


def frames_by_engine(root):
    """{'<dataset>/<class>/<file>': frames} as engine/dvs.py prepares them from the raw archives."""
    from engine.dvs import prepare_frames
    out = {}
    for name in ("cifar10dvs", "ncaltech101"):
        samples, classes = prepare_frames(name, root / name, T)
        for path, label in samples:
            with np.load(root / name / path) as f:
                out[f"{name}/{classes[label]}/{Path(path).stem}"] = f["frames"]
    return out


def frames_by_spikingjelly_0_0_0_0_14(root):
    """The same samples read and integrated by 0.0.0.0.14 alone (its CIFAR10-DVS reader with NumPy 1's
    `fromstring`, which NumPy 2 dropped), from the raw files engine/dvs.py extracted."""
    from unittest import mock

    from spikingjelly.datasets import cifar10_dvs, integrate_events_by_fixed_frames_number, n_caltech101
    readers = {"cifar10dvs": (cifar10_dvs.CIFAR10DVS.load_origin_data, "*/*.aedat", (128, 128)),
               "ncaltech101": (n_caltech101.NCaltech101.load_origin_data, "Caltech101/*/*.bin", (180, 240))}
    out = {}
    with mock.patch.object(np, "fromstring", np.frombuffer, create=True):
        for name, (read, pattern, hw) in readers.items():
            for path in sorted((root / name / "extract").glob(pattern)):
                events = read(str(path))
                out[f"{name}/{path.parent.name}/{path.stem}"] = integrate_events_by_fixed_frames_number(
                    events, "number", T, *hw)
    return out


def write_golden(path=GOLDEN):
    """Run under spikingjelly 0.0.0.0.14 to remake the golden file (counts stored as uint8)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        root = raw_dvs(Path(tmp))
        frames_by_engine(root)  # extracts the archives
        frames = frames_by_spikingjelly_0_0_0_0_14(root)
    assert all(f.max() < 256 for f in frames.values())
    np.savez_compressed(path, **{k: f.astype(np.uint8) for k, f in frames.items()})


@pytest.fixture(scope="module")
def dvs(tmp_path_factory):
    root = raw_dvs(tmp_path_factory.mktemp("dvs"))
    return root, frames_by_engine(root)


def test_dvs_frames_equal_spikingjelly_0_0_0_0_14s(dvs):
    _, ours = dvs
    with np.load(GOLDEN) as golden:
        assert sorted(golden.files) == sorted(ours)
        for key, frames in ours.items():
            assert frames.dtype == np.float64 and frames.shape[0] == T, key
            assert np.array_equal(frames, golden[key]), key
        assert max(golden[k].max() for k in golden.files) > 1  # pixels hit twice are counted twice


@SJ_0_0_0_0_14
def test_golden_dvs_frames_are_what_spikingjelly_0_0_0_0_14_makes(dvs):
    root, ours = dvs
    theirs = frames_by_spikingjelly_0_0_0_0_14(root)
    assert sorted(theirs) == sorted(ours)
    with np.load(GOLDEN) as golden:
        for key, frames in theirs.items():
            assert np.array_equal(ours[key], frames) and np.array_equal(golden[key], frames), key


@SJ_0_0_0_0_14
def test_dvs_samples_and_labels_are_in_spikingjelly_0_0_0_0_14s_dataset_order(dvs):
    """Its frame dataset on the folder we prepared (complete, so it only lists): the same samples."""
    import contextlib
    import io

    from spikingjelly.datasets import cifar10_dvs

    from engine.dvs import prepare_frames
    root = dvs[0] / "cifar10dvs"
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = cifar10_dvs.CIFAR10DVS(str(root), data_type="frame", frames_number=T, split_by="number")
    ours, classes = prepare_frames("cifar10dvs", root, T)
    assert classes == theirs.classes
    assert ours == [(str(Path(p).relative_to(root)), label) for p, label in theirs.samples]


@pytest.mark.skipif(not sj.IS_V2, reason="spikingjelly 0.0.0.0.14 has the CuPy kernel")
def test_cupy_backend_on_spikingjelly_2_names_the_version_that_has_it(monkeypatch):
    from models import lif_backends
    from models.errors import BackendError
    monkeypatch.setattr(lif_backends, "cupy_import_error", lambda: None)  # as if CuPy were installed
    with pytest.raises(BackendError, match=r"no CuPy LIF kernel.*pip install spikingjelly==0\.0\.0\.0\.14"):
        LIF(backend="cupy")
