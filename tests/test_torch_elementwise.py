"""binary_cross_entropy, binary_cross_entropy_with_logits and kl_div against
torch.nn.functional, losses and gradients (autograd), where PyTorch is installed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from elementwise_cases import make_case

import fastloss

torch = pytest.importorskip("torch")
F = torch.nn.functional

# PyTorch computes float32 in float32, so it is itself off by a few 1e-7 relative.
TOL = {np.dtype(np.float32): {"rtol": 2e-5, "atol": 2e-6},
       np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-14}}

REDUCTIONS = ["mean", "sum", "none"]
SHAPES = [(1,), (8, 2), (64, 10), (5, 7, 3, 2), (0, 4), (300, 77)]


def _torch_loss(fn, x, target, reduction, **kwargs):
    """PyTorch's loss and its gradient with respect to x (autograd, on the sum)."""
    leaf = torch.from_numpy(x.copy()).requires_grad_(True)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray)
               else v for k, v in kwargs.items()}
    with warnings.catch_warnings():     # kl_div's "mean" warns that it is not "batchmean"
        warnings.simplefilter("ignore", UserWarning)
        loss = fn(leaf, torch.from_numpy(target), reduction=reduction, **tensors)
    loss.sum().backward()
    return loss.detach().numpy(), leaf.grad.numpy()


def _compare(ours, theirs, dtype):
    np.testing.assert_allclose(ours[0], theirs[0], **TOL[dtype])
    np.testing.assert_allclose(ours[1], theirs[1], **TOL[dtype])
    assert np.asarray(ours[0]).dtype == theirs[0].dtype
    assert np.asarray(ours[0]).shape == theirs[0].shape


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, "C", "full", "N1"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_binary_cross_entropy_like_pytorch(rng, dtype, shape, weight, reduction):
    probs, target = make_case(rng, "bce", shape, dtype)      # exact 0s and 1s included
    kwargs = {}
    if weight is not None:
        w_shape = {"C": shape[-1:], "full": shape,
                   "N1": shape[:1] + (1,) * (len(shape) - 1)}[weight]
        kwargs["weight"] = (rng.random(w_shape) * 2).astype(dtype)
    ours = fastloss.binary_cross_entropy(probs, target, reduction=reduction,
                                         return_grad=True, **kwargs)
    _compare(ours, _torch_loss(F.binary_cross_entropy, probs, target, reduction, **kwargs),
             dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", ["plain", "weight", "pos_weight", "both", "pos_weight-NC"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bce_with_logits_like_pytorch(rng, dtype, shape, options, reduction):
    logits, target = make_case(rng, "bce_logits", shape, dtype)
    kwargs = {}
    if options in ("weight", "both"):
        kwargs["weight"] = (rng.random(shape[-1:]) * 2).astype(dtype)
    if options in ("pos_weight", "both"):
        kwargs["pos_weight"] = (rng.random(shape[-1:]) * 4).astype(dtype)
    if options == "pos_weight-NC":
        kwargs["pos_weight"] = (rng.random(shape) * 4).astype(dtype)
    ours = fastloss.binary_cross_entropy_with_logits(logits, target, reduction=reduction,
                                                     return_grad=True, **kwargs)
    theirs = _torch_loss(F.binary_cross_entropy_with_logits, logits, target, reduction,
                         **kwargs)
    _compare(ours, theirs, dtype)


@pytest.mark.parametrize("big", [1e4, 1e30])
def test_bce_with_logits_extreme_logits_like_pytorch(dtype, big):
    logits = np.array([big, -big, big, -big, 0.0], dtype=dtype)
    target = np.array([1.0, 0.0, 0.0, 1.0, 0.5], dtype=dtype)
    pos_weight = np.full(5, 2.5, dtype)
    ours = fastloss.binary_cross_entropy_with_logits(
        logits, target, pos_weight=pos_weight, reduction="none", return_grad=True)
    _compare(ours, _torch_loss(F.binary_cross_entropy_with_logits, logits, target, "none",
                               pos_weight=pos_weight), dtype)


def test_infinite_logits_like_pytorch_but_one(dtype):
    logits = np.array([np.inf, -np.inf, np.inf, -np.inf], dtype=dtype)
    target = np.array([1.0, 0.0, 0.0, 1.0], dtype=dtype)
    ours = fastloss.binary_cross_entropy_with_logits(logits, target, reduction="none",
                                                     return_grad=True)
    theirs = _torch_loss(F.binary_cross_entropy_with_logits, logits, target, "none")
    # 0 * inf is NaN in both; -inf against the label 1 costs +inf here, NaN in PyTorch.
    np.testing.assert_array_equal(ours[0], [np.nan, np.nan, np.inf, np.inf])
    np.testing.assert_array_equal(theirs[0], [np.nan, np.nan, np.inf, np.nan])
    np.testing.assert_array_equal(ours[1], theirs[1])       # [0, 0, 1, -1]


@pytest.mark.parametrize("log_target", [False, True], ids=["p", "log_p"])
@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kl_div_like_pytorch(rng, dtype, shape, reduction, log_target):
    x, target = make_case(rng, "kl", shape, dtype)           # zero targets included
    if log_target:
        target = np.log(target + 0.01).astype(dtype)         # PyTorch: NaN at -inf
    ours = fastloss.kl_div(x, target, reduction=reduction, log_target=log_target,
                           return_grad=True)
    with np.errstate(invalid="ignore"):
        theirs = _torch_loss(F.kl_div, x, target, reduction, log_target=log_target)
    _compare(ours, theirs, dtype)


def test_kl_div_zero_targets_differ_from_pytorch_as_documented(dtype):
    # PyTorch: 0 * (-inf) = NaN; fastloss: a zero target probability contributes 0.
    x = np.array([-np.inf, 0.5, -1.0], dtype=dtype)
    p = np.array([0.0, 0.0, 0.5], dtype=dtype)
    ours = fastloss.kl_div(x, p, reduction="none")
    theirs = F.kl_div(torch.from_numpy(x), torch.from_numpy(p), reduction="none").numpy()
    assert np.isnan(theirs[0]) and ours[0] == 0
    np.testing.assert_allclose(ours[1:], theirs[1:], **TOL[dtype])
    with np.errstate(divide="ignore"):
        log_p = np.log(p)
    ours = fastloss.kl_div(x, log_p, reduction="none", log_target=True)
    theirs = F.kl_div(torch.from_numpy(x), torch.from_numpy(log_p), reduction="none",
                      log_target=True).numpy()
    assert np.isnan(theirs[:2]).all() and (ours[:2] == 0).all()
    np.testing.assert_allclose(ours[2], theirs[2], **TOL[dtype])


def test_nan_probabilities_differ_from_pytorch_as_documented():
    probs = np.array([0.5, np.nan])
    target = np.array([1.0, 0.0])
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(torch.from_numpy(probs), torch.from_numpy(target))
    assert np.isnan(fastloss.binary_cross_entropy(probs, target))
