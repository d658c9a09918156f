"""One SGD step of our model (both ablations off, legacy=True) equals one step of QKFormer's own code.

`data/train_step_*_qkformer.pt` hold the official model's weights, a batch, and what QKFormer's code
computed from them in train mode: logits, loss, every gradient and the weights and BN statistics
after one `SGD(lr=0.1, momentum=0.9)` step (tests/data/README.md). This guards neurons and layers:
a rewrite that changes any spike shows up here.
"""
import pytest
import timm
import torch
import torch.nn.functional as F

import models

from conftest import DATA

pytestmark = pytest.mark.spikingjelly

TOL = dict(atol=1e-5, rtol=0)


def official_step(filename):
    ref = torch.load(DATA / filename, weights_only=True)
    ours = dict(ref["ours"])
    model = timm.create_model(ours.pop("model"), backend="torch", **ours)
    model.load_state_dict(models.checkpoint_filter_fn(ref["state_dict"], model))
    return model.train(), ref


@pytest.mark.parametrize("filename", ["train_step_cifar_qkformer.pt", "train_step_imagenet_qkformer.pt"])
def test_one_training_step_reproduces_qkformer(filename):
    model, ref = official_step(filename)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    logits = model(ref["input"])
    loss = F.cross_entropy(logits, ref["target"], label_smoothing=0.1)
    torch.testing.assert_close(logits, ref["logits"], **TOL)
    torch.testing.assert_close(loss, ref["loss"], **TOL)
    loss.backward()

    params = dict(model.named_parameters())
    grads = {models.official_key(k): g for k, g in ref["grads"].items()}
    assert set(grads) == set(params)
    for name, grad in grads.items():
        assert params[name].grad is not None, name
        torch.testing.assert_close(params[name].grad, grad, **TOL, msg=lambda m, n=name: f"grad of {n}: {m}")

    optimizer.step()
    after = {models.official_key(k): v for k, v in ref["state_dict_after"].items()}
    state = model.state_dict()
    assert set(after) == set(state)
    for name, value in after.items():  # weights, BN running mean/var and num_batches_tracked
        torch.testing.assert_close(state[name], value, **TOL, msg=lambda m, n=name: f"{n} after the step: {m}")
