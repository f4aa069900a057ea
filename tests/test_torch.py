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


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")
@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum"])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize("kind", ["probs", "log_probs", "logits"])
def test_kl_div_with_logits_like_pytorch_distillation(rng, dtype, kind, temperature,
                                                      reduction):
    # The usual PyTorch idiom: F.kl_div(log_softmax(s / T), p, reduction) * T**2.
    student = make_logits(rng, (16, 1000), dtype)
    teacher_logits = make_logits(rng, (16, 1000), dtype)
    t = torch.from_numpy(teacher_logits)
    teacher = {"probs": torch.softmax(t / temperature, 1),
               "log_probs": torch.log_softmax(t / temperature, 1), "logits": t}[kind]
    loss, grad = fastloss.kl_div_with_logits(
        student, teacher.numpy(), teacher_kind=kind, temperature=temperature,
        reduction=reduction, return_grad=True,
    )
    x = torch.from_numpy(student.copy()).requires_grad_(True)
    theirs = F.kl_div(F.log_softmax(x / temperature, 1), torch.softmax(t / temperature, 1),
                      reduction=reduction) * temperature**2
    theirs.backward()
    np.testing.assert_allclose(loss, theirs.item(), **TOL[dtype])
    np.testing.assert_allclose(grad, x.grad.numpy(), **TOL[dtype])


def test_entropy_from_logits_like_categorical(rng, dtype):
    logits = make_logits(rng, (32, 500), dtype)
    entropy, grad = fastloss.entropy_from_logits(logits, reduction="sum", return_grad=True)
    x = torch.from_numpy(logits.copy()).requires_grad_(True)
    theirs = torch.distributions.Categorical(logits=x).entropy()
    theirs.sum().backward()
    np.testing.assert_allclose(entropy, theirs.sum().item(), **TOL[dtype])
    np.testing.assert_allclose(grad, x.grad.numpy(), **TOL[dtype])


def test_one_hot_like_pytorch(rng):
    labels = rng.integers(0, 7, (4, 5))
    theirs = F.one_hot(torch.from_numpy(labels), 7).numpy()
    np.testing.assert_array_equal(fastloss.one_hot(labels, 7, dtype=np.int64), theirs)
