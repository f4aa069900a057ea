"""Agreement with torch.nn.functional where PyTorch is installed (skipped otherwise)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_logits, make_target

import fastloss

torch = pytest.importorskip("torch")
F = torch.nn.functional

# PyTorch accumulates float32 in float32, so it is itself off by a few 1e-7 relative.
TOL = {np.dtype(np.float32): {"rtol": 2e-5, "atol": 2e-6},
       np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-14}}


def _torch_ce(logits, target, reduction):
    x = torch.from_numpy(logits.copy()).requires_grad_(True)
    loss = F.cross_entropy(x, torch.from_numpy(target.astype(np.int64)), reduction=reduction)
    loss.sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(1, 1), (8, 2), (64, 10), (16, 1000), (4, 50257), (5, 7, 3, 2),
                                   (0, 4)], ids=str)
def test_cross_entropy_like_pytorch(rng, dtype, shape, reduction):
    # PyTorch's class axis is 1: (N, C) or (N, C, d1, ..., dk).
    logits = make_logits(rng, shape, dtype)
    target = make_target(rng, shape[:1] + shape[2:], shape[1])
    ours_loss, ours_grad = fastloss.cross_entropy(logits, target, axis=1, reduction=reduction,
                                                  return_grad=True)
    theirs_loss, theirs_grad = _torch_ce(logits, target, reduction)
    np.testing.assert_allclose(ours_loss, theirs_loss, **TOL[dtype])
    np.testing.assert_allclose(ours_grad, theirs_grad, **TOL[dtype])
    assert np.asarray(ours_loss).dtype == theirs_loss.dtype


def test_masked_logits_like_pytorch(dtype):
    logits = np.array([[-np.inf, 2.3, -1.2], [-np.inf, -np.inf, -np.inf],
                       [-np.inf, 0.0, 1.0]], dtype=dtype)
    target = np.array([2, 0, 0])
    ours_loss, ours_grad = fastloss.cross_entropy(logits, target, reduction="none",
                                                  return_grad=True)
    theirs_loss, theirs_grad = _torch_ce(logits, target, "none")
    np.testing.assert_allclose(ours_loss, theirs_loss, **TOL[dtype])
    np.testing.assert_allclose(ours_grad, theirs_grad, **TOL[dtype])


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_family_like_pytorch(rng, dtype, name, axis):
    x = make_logits(rng, (6, 2500, 3), dtype)
    ours = getattr(fastloss, name)(x, axis=axis)
    fn = {"softmax": torch.softmax, "log_softmax": torch.log_softmax,
          "logsumexp": torch.logsumexp}[name]
    theirs = fn(torch.from_numpy(x), axis).numpy()
    np.testing.assert_allclose(ours, theirs, **TOL[dtype])


TORCH_OPTIONS = [
    dict(soft=soft, weight=weight, ignore=ignore, smoothing=smoothing)
    for soft in (False, True) for weight in (False, True) for ignore in (False, True)
    for smoothing in (0.0, 0.15) if not (soft and ignore)
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", TORCH_OPTIONS,
                         ids=lambda o: "-".join(k for k, v in o.items() if v) or "plain")
@pytest.mark.parametrize("shape", [(12, 7), (3, 5, 4, 2)], ids=["NC", "NCHW"])
def test_cross_entropy_options_like_pytorch(rng, dtype, shape, opts, reduction):
    logits = make_logits(rng, shape, dtype)
    batch = shape[:1] + shape[2:]
    kwargs = {"label_smoothing": opts["smoothing"]}
    if opts["weight"]:
        kwargs["weight"] = rng.random(shape[1]) * 2
    if opts["soft"]:
        raw = rng.random(shape)
        target = (raw / raw.sum(axis=1, keepdims=True)).astype(dtype)
        torch_target = torch.from_numpy(target)
    else:
        target = rng.integers(0, shape[1], size=batch)
        if opts["ignore"]:
            target[rng.random(batch) < 0.3] = -100
        torch_target = torch.from_numpy(target)
    loss, grad = fastloss.cross_entropy(logits, target, axis=1, reduction=reduction,
                                        return_grad=True, **kwargs)
    x = torch.from_numpy(logits.copy()).requires_grad_(True)
    torch_kwargs = dict(kwargs)
    if "weight" in torch_kwargs:
        torch_kwargs["weight"] = torch.from_numpy(kwargs["weight"].astype(dtype))
    theirs = F.cross_entropy(x, torch_target, reduction=reduction, **torch_kwargs)
    theirs.sum().backward()
    np.testing.assert_allclose(loss, theirs.detach().numpy(), **TOL[dtype])
    np.testing.assert_allclose(grad, x.grad.numpy(), **TOL[dtype])
