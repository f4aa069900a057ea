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
