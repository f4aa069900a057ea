"""fastloss.torch: the losses as torch.autograd Functions and nn.Modules, against
torch.nn.functional (forward and backward), gradcheck, training curves, the fallback to
PyTorch, and the errors. Skipped where PyTorch is not installed."""

from __future__ import annotations

import doctest
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional

import fastloss  # noqa: E402
import fastloss.torch as flt  # noqa: E402


def _is_ours(loss):
    """Whether fastloss computed the loss: its grad_fn is e.g. CrossEntropyFunctionBackward
    (PyTorch's is NllLossBackward0 and the like)."""
    return type(loss.grad_fn).__name__.endswith("FunctionBackward")


def _loss_and_grad(fn, x, *args, grad_output=None, **kwargs):
    """fn(x, *args, **kwargs) and d(sum(grad_output * loss))/dx, on a fresh leaf."""
    leaf = x.detach().clone().requires_grad_(True)
    with warnings.catch_warnings():     # kl_div's "mean" warns in both libraries
        warnings.simplefilter("ignore", UserWarning)
        loss = fn(leaf, *args, **kwargs)
    if grad_output is None:
        loss.backward()
    else:
        loss.backward(grad_output.to(loss.dtype))
    return loss.detach(), leaf.grad


def _as64(value):
    return value.to(torch.float64) if isinstance(value, torch.Tensor) and \
        value.is_floating_point() else value


def _check_like_torch(ours_fn, torch_fn, x, args, kwargs, reduction, rng):
    """fastloss against PyTorch's float64 result on the same values: float64 to 1e-12
    relative, float32 to a few float32 ulps of it (PyTorch's own float32 sums are
    further off). For "none" the backward pass gets random weights per loss."""
    dtype = np.dtype(str(x.dtype).removeprefix("torch."))
    args64 = tuple(_as64(a) for a in args)
    kwargs64 = {k: _as64(v) for k, v in kwargs.items()}
    grad_output = None
    if reduction == "none":
        with torch.no_grad():
            shape = torch_fn(x.to(torch.float64), *args64, **kwargs64).shape
        grad_output = torch.from_numpy(np.asarray(rng.random(tuple(shape)) + 0.5))
    ours = _loss_and_grad(ours_fn, x, *args, grad_output=grad_output, **kwargs)
    theirs = _loss_and_grad(torch_fn, x.to(torch.float64), *args64,
                            grad_output=grad_output, **kwargs64)
    assert ours[0].shape == theirs[0].shape
    for what, got, expected in (("loss", ours[0], theirs[0]), ("gradient", ours[1], theirs[1])):
        # Entries that are differences of larger terms (softmax - target, p - y) are
        # exact to a few ulps of those terms only.
        expected = expected.numpy()
        scale = np.abs(expected).max(initial=0.0)
        atol = 4 * float(np.finfo(dtype).eps) * (scale if np.isfinite(scale) else 0.0)
        assert_close(got.numpy(), expected, dtype, atol=atol, what=what)


# --- cross_entropy -----------------------------------------------------------------------

CE_OPTIONS = ["plain", "weight", "ignore_index", "label_smoothing", "all", "soft",
              "soft-weight-smoothing", "int32-target"]


def _ce_case(rng, shape, dtype, option):
    x = torch.from_numpy((rng.standard_normal(shape) * 3).astype(dtype))
    n_classes = shape[1] if len(shape) > 1 else shape[0]
    batch = shape[:1] + shape[2:] if len(shape) > 1 else ()
    kwargs = {}
    if option.startswith("soft"):
        raw = rng.random(shape)
        target = torch.from_numpy((raw / raw.sum(axis=min(1, len(shape) - 1),
                                                 keepdims=True)).astype(dtype))
    else:
        classes = rng.integers(0, n_classes, size=batch)
        if option in ("ignore_index", "all") and classes.size:
            classes.reshape(-1)[::3] = 2
            kwargs["ignore_index"] = 2
        target = torch.from_numpy(classes)
    if "weight" in option or option == "all":
        kwargs["weight"] = torch.from_numpy((rng.random(n_classes) * 2 + 0.1).astype(dtype))
    if "smoothing" in option or option == "all":
        kwargs["label_smoothing"] = 0.15
    return x, target, kwargs


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("option", CE_OPTIONS)
@pytest.mark.parametrize("shape", [(7,), (12, 5), (3, 6, 4, 2), (0, 4)], ids=str)
def test_cross_entropy_like_pytorch(rng, dtype, shape, option, reduction):
    x, target, kwargs = _ce_case(rng, shape, dtype, option)
    torch_target = target
    if option == "int32-target":       # PyTorch takes int64 (or uint8) class indices only
        target = target.to(torch.int32)
        torch_target = target.long()
    _check_like_torch(lambda x, **kw: flt.cross_entropy(x, target, **kw),
                      lambda x, **kw: F.cross_entropy(x, torch_target, **kw),
                      x, (), {**kwargs, "reduction": reduction}, reduction, rng)


def test_cross_entropy_is_fastloss_and_reads_in_place(monkeypatch, rng):
    # The Function runs fastloss on the tensor's own memory, writes the gradient into a
    # tensor that becomes x.grad (autograd takes it over: no copy), on torch's threads.
    seen = {}
    real = fastloss.cross_entropy

    def spy(logits, target, **kwargs):
        seen.update(logits=logits, grad_out=kwargs["grad_out"], n_threads=kwargs["n_threads"],
                    axis=kwargs["axis"])
        return real(logits, target, **kwargs)

    monkeypatch.setattr(fastloss, "cross_entropy", spy)
    x = torch.from_numpy(rng.standard_normal((6, 4, 3))).requires_grad_(True)
    loss = flt.cross_entropy(x, torch.from_numpy(rng.integers(0, 4, (6, 3))))
    assert _is_ours(loss) and seen["axis"] == 1
    assert np.shares_memory(seen["logits"], x.detach().numpy())
    assert seen["n_threads"] == torch.get_num_threads()
    loss.backward()
    assert x.grad.data_ptr() == seen["grad_out"].__array_interface__["data"][0]


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_backward_scales_by_grad_output_and_keeps_the_saved_gradient(rng, scale):
    x = torch.from_numpy(rng.standard_normal((5, 3))).requires_grad_(True)
    y = torch.from_numpy(rng.integers(0, 3, 5))
    expected = torch.autograd.grad(F.cross_entropy(x, y) * scale, x)[0]
    loss = flt.cross_entropy(x, y) * scale
    for calls in (1, 2, 3):       # the saved gradient survives retain_graph
        loss.backward(retain_graph=calls < 3)
        torch.testing.assert_close(x.grad, calls * expected, rtol=1e-14, atol=1e-15)


def test_function_applied_directly(rng):
    x = torch.from_numpy(rng.standard_normal((5, 3)))
    raw = rng.random((5, 3))
    soft = torch.from_numpy(raw / raw.sum(1, keepdims=True))
    leaf = x.clone().requires_grad_(True)
    flt.CrossEntropyFunction.apply(leaf, soft, None, -100, "sum", 0.0).backward()
    torch.testing.assert_close(leaf.grad, torch.softmax(x, 1) - soft, rtol=1e-14, atol=1e-15)
    # Only the target requires grad: the Function gives it none (fastloss.torch's
    # functions hand such calls to PyTorch instead).
    target = soft.clone().requires_grad_(True)
    flt.CrossEntropyFunction.apply(x, target, None, -100, "sum", 0.0).backward()
    assert target.grad is None


def test_loss_used_twice_accumulates(rng):
    x = torch.from_numpy(rng.standard_normal((5, 3))).requires_grad_(True)
    y = torch.from_numpy(rng.integers(0, 3, 5))
    loss = flt.cross_entropy(x, y, reduction="none")
    (loss.sum() + 3 * loss[1]).backward()
    expected_loss = F.cross_entropy(x, y, reduction="none")
    expected = torch.autograd.grad(expected_loss.sum() + 3 * expected_loss[1], x)[0]
    torch.testing.assert_close(x.grad, expected, rtol=1e-13, atol=1e-15)


def test_non_contiguous_input_is_read_through_a_copy(rng):
    base = torch.from_numpy(rng.standard_normal((5, 8)))
    x = base.t().requires_grad_(True)       # (8, 5) with strides (1, 8)
    y = torch.from_numpy(rng.integers(0, 5, 8))
    ours = _loss_and_grad(flt.cross_entropy, x, y)
    theirs = _loss_and_grad(F.cross_entropy, x.contiguous(), y)
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-15)


def test_without_grad_no_gradient_is_computed(monkeypatch, rng):
    calls = []
    real = fastloss.cross_entropy

    def spy(logits, target, **kwargs):
        calls.append(kwargs["grad_out"])
        return real(logits, target, **kwargs)

    monkeypatch.setattr(fastloss, "cross_entropy", spy)
    x = torch.from_numpy(rng.standard_normal((5, 3)))
    y = torch.from_numpy(rng.integers(0, 3, 5))
    expected = F.cross_entropy(x, y)
    with torch.no_grad():
        no_grad = flt.cross_entropy(x.requires_grad_(True), y)
    plain = flt.cross_entropy(x.detach(), y)
    assert calls == [None, None]
    for loss in (no_grad, plain):
        assert loss.grad_fn is None and not loss.requires_grad
        torch.testing.assert_close(loss, expected, rtol=1e-14, atol=0)


# --- binary cross-entropy and kl_div -----------------------------------------------------

def _weights(rng, kind, shape, dtype, scale=2.0):
    w_shape = {"C": shape[-1:], "N1": shape[:1] + (1,) * (len(shape) - 1), "full": shape}[kind]
    return torch.from_numpy((rng.random(w_shape) * scale + 0.1).astype(dtype))


ELEMENTWISE_SHAPES = [(7,), (12, 5), (3, 6, 4, 2), (0, 4)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weight", [None, "C", "N1", "full"])
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
def test_binary_cross_entropy_like_pytorch(rng, dtype, shape, weight, reduction):
    p = torch.from_numpy(rng.uniform(0.02, 0.98, shape).astype(dtype))
    y = torch.from_numpy(rng.random(shape).astype(dtype))
    kwargs = {"reduction": reduction}
    if weight is not None:
        kwargs["weight"] = _weights(rng, weight, shape, dtype)
    _check_like_torch(flt.binary_cross_entropy, F.binary_cross_entropy, p, (y,), kwargs,
                      reduction, rng)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", ["plain", "weight", "pos_weight", "both"])
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
def test_bce_with_logits_like_pytorch(rng, dtype, shape, options, reduction):
    x = torch.from_numpy((rng.standard_normal(shape) * 4).astype(dtype))
    y = torch.from_numpy((rng.random(shape) < 0.5).astype(dtype))
    kwargs = {"reduction": reduction}
    if options in ("weight", "both"):
        kwargs["weight"] = _weights(rng, "N1", shape, dtype)
    if options in ("pos_weight", "both"):
        kwargs["pos_weight"] = _weights(rng, "C", shape, dtype, scale=4.0)
    _check_like_torch(flt.binary_cross_entropy_with_logits,
                      F.binary_cross_entropy_with_logits, x, (y,), kwargs, reduction, rng)


@pytest.mark.parametrize("log_target", [False, True], ids=["p", "log_p"])
@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum", "none"])
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
def test_kl_div_like_pytorch(rng, dtype, shape, reduction, log_target):
    raw = rng.random(shape) + 0.05
    x = torch.from_numpy(np.log(raw / raw.sum(axis=-1, keepdims=True)).astype(dtype))
    p = rng.random(shape) + 0.01
    target = torch.from_numpy((np.log(p) if log_target else p).astype(dtype))
    _check_like_torch(flt.kl_div, F.kl_div, x, (target,),
                      {"reduction": reduction, "log_target": log_target}, reduction, rng)


def test_kl_div_mean_warns_like_pytorch(rng):
    x = torch.from_numpy(np.log(rng.random((3, 4))))
    p = torch.from_numpy(rng.random((3, 4)))
    with pytest.warns(UserWarning, match="'batchmean'"):
        flt.kl_div(x, p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flt.kl_div(x, p, reduction="batchmean")


# --- kl_div_with_logits ------------------------------------------------------------------

def _distill_by_torch(s, teacher, teacher_kind="probs", temperature=1.0,
                      scale_by_temperature=True, reduction="batchmean", axis=1):
    """The distillation loss written out from PyTorch's kl_div."""
    log_q = F.log_softmax(s / temperature, dim=axis)
    if teacher_kind == "probs":
        terms = F.kl_div(log_q, teacher, reduction="none")
    elif teacher_kind == "log_probs":
        terms = F.kl_div(log_q, teacher, reduction="none", log_target=True)
    else:
        p = F.softmax(teacher / temperature, dim=axis)
        terms = F.kl_div(log_q, p, reduction="none")
    rows = terms.sum(axis) * (temperature**2 if scale_by_temperature else 1.0)
    return {"none": rows, "sum": rows.sum(), "batchmean": rows.sum() / s.shape[0],
            "mean": rows.sum() / s.numel()}[reduction]


def _teacher(rng, kind, shape, dtype, axis=1):
    logits = rng.standard_normal(shape) * 2
    if kind == "logits":
        values = logits
    else:
        log_p = logits - np.log(np.exp(logits).sum(axis=axis, keepdims=True))
        values = log_p if kind == "log_probs" else np.exp(log_p)
    return torch.from_numpy(values.astype(dtype))


@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum", "none"])
@pytest.mark.parametrize("teacher_kind", ["probs", "log_probs", "logits"])
@pytest.mark.parametrize("temperature,scale", [(1.0, True), (2.5, True), (2.5, False)],
                         ids=["T1", "T2.5", "T2.5-unscaled"])
@pytest.mark.parametrize("shape", [(12, 5), (3, 6, 4, 2)], ids=["NC", "NCHW"])
def test_kl_div_with_logits_like_pytorch(rng, dtype, shape, temperature, scale, teacher_kind,
                                         reduction):
    s = torch.from_numpy((rng.standard_normal(shape) * 3).astype(dtype))
    teacher = _teacher(rng, teacher_kind, shape, dtype)
    kwargs = dict(teacher_kind=teacher_kind, temperature=temperature,
                  scale_by_temperature=scale, reduction=reduction)
    _check_like_torch(flt.kl_div_with_logits, _distill_by_torch, s, (teacher,), kwargs,
                      reduction, rng)


def test_kl_div_with_logits_other_axis_and_base(rng):
    s = torch.from_numpy(rng.standard_normal((4, 3, 6)))
    teacher = _teacher(rng, "probs", (4, 3, 6), np.float64, axis=-1)
    ours = _loss_and_grad(flt.kl_div_with_logits, s, teacher, axis=-1, base=2)
    theirs = _loss_and_grad(lambda s, t: _distill_by_torch(s, t, axis=-1) / math.log(2),
                            s, teacher)
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=1e-15)


# --- gradcheck (float64, finite differences against the backward pass) ------------------

def _gradcheck_cases(rng):
    def t(a):
        return torch.from_numpy(np.asarray(a, dtype=np.float64))

    x_nc = rng.standard_normal((5, 4))
    x_nchw = rng.standard_normal((2, 4, 3, 2))
    classes = torch.from_numpy(rng.integers(0, 4, 5))
    classes_ignored = classes.clone()
    classes_ignored[::2] = -100
    classes_nchw = torch.from_numpy(rng.integers(0, 4, (2, 3, 2)))
    soft = rng.random((5, 4))
    soft /= soft.sum(1, keepdims=True)
    weight = t(rng.random(4) + 0.5)
    probs = rng.uniform(0.1, 0.9, (5, 4))
    labels = t(rng.random((5, 4)))
    log_q = np.log(soft)
    p = rng.random((5, 4)) + 0.05
    cases = {}
    for reduction in ("mean", "sum", "none"):
        cases[f"ce-{reduction}"] = (x_nc, lambda x, r=reduction: flt.cross_entropy(
            x, classes, reduction=r))
        cases[f"ce-options-{reduction}"] = (x_nc, lambda x, r=reduction: flt.cross_entropy(
            x, classes_ignored, weight=weight, label_smoothing=0.2, reduction=r))
        cases[f"ce-soft-{reduction}"] = (x_nc, lambda x, r=reduction: flt.cross_entropy(
            x, t(soft), weight=weight, label_smoothing=0.1, reduction=r))
        cases[f"ce-NCHW-{reduction}"] = (x_nchw, lambda x, r=reduction: flt.cross_entropy(
            x, classes_nchw, reduction=r))
        cases[f"bce-{reduction}"] = (probs, lambda x, r=reduction: flt.binary_cross_entropy(
            x, labels, weight=weight, reduction=r))
        cases[f"bce-logits-{reduction}"] = (x_nc, lambda x, r=reduction:
                                            flt.binary_cross_entropy_with_logits(
                                                x, labels, weight=weight[:, None].T,
                                                pos_weight=weight * 2, reduction=r))
    for reduction in ("mean", "batchmean", "sum", "none"):
        for log_target in (False, True):
            target = t(np.log(p) if log_target else p)
            cases[f"kl-{reduction}-{'log' if log_target else 'p'}"] = (
                log_q, lambda x, r=reduction, lt=log_target, tg=target: flt.kl_div(
                    x, tg, reduction=r, log_target=lt))
        for kind in ("probs", "log_probs", "logits"):
            teacher = _teacher(rng, kind, (2, 4, 3, 2), np.float64)
            cases[f"distill-{kind}-{reduction}"] = (
                x_nchw, lambda x, r=reduction, k=kind, tc=teacher: flt.kl_div_with_logits(
                    x, tc, teacher_kind=k, temperature=2.0, reduction=r))
    return cases


GRADCHECK_CASES = sorted(_gradcheck_cases(np.random.default_rng(0)))


@pytest.mark.parametrize("name", GRADCHECK_CASES)
def test_gradcheck(name):
    x, fn = _gradcheck_cases(np.random.default_rng(0))[name]
    leaf = torch.from_numpy(x).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)       # kl_div "mean"
        assert _is_ours(fn(leaf))
        assert torch.autograd.gradcheck(fn, (leaf,), eps=1e-6, atol=1e-8, rtol=1e-6)


# --- second derivatives: an error, never a wrong answer ----------------------------------

def test_double_backward_raises(rng):
    x = torch.from_numpy(rng.standard_normal((5, 3))).requires_grad_(True)
    y = torch.from_numpy(rng.integers(0, 3, 5))
    (grad,) = torch.autograd.grad(flt.cross_entropy(x, y), x, create_graph=True)
    torch.testing.assert_close(grad, torch.autograd.grad(F.cross_entropy(x, y), x)[0],
                               rtol=1e-14, atol=1e-15)
    with pytest.raises(RuntimeError, match=r"fastloss\.torch losses have no second derivative"):
        grad.square().sum().backward()


def test_gradient_penalty_through_a_model_raises(rng):
    # Here the gradient also depends on the weights through the layer, so without the
    # guard the penalty's gradient would be computed, silently missing the loss's Hessian.
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3).double()
    inputs = torch.from_numpy(rng.standard_normal((6, 4)))
    y = torch.from_numpy(rng.integers(0, 3, 6))
    (grad,) = torch.autograd.grad(flt.cross_entropy(layer(inputs), y), layer.weight,
                                  create_graph=True)
    with pytest.raises(RuntimeError, match=r"use torch\.nn\.functional's loss"):
        grad.square().sum().backward()


# --- the fallback to PyTorch -------------------------------------------------------------

@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_precision_falls_back_to_pytorch(rng, half):
    x = torch.from_numpy(rng.standard_normal((6, 4)).astype(np.float32)).to(half)
    y = torch.from_numpy(rng.integers(0, 4, 6))
    ours = _loss_and_grad(flt.cross_entropy, x, y)
    theirs = _loss_and_grad(F.cross_entropy, x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert not _is_ours(flt.cross_entropy(x.requires_grad_(True), y))


def test_other_devices_fall_back_to_pytorch():
    # The meta device stands in for CUDA: computed by PyTorch, shapes only.
    x = torch.empty((6, 4, 3), device="meta", requires_grad=True)
    loss = flt.cross_entropy(x, torch.empty((6, 3), dtype=torch.long, device="meta"),
                             reduction="none")
    assert loss.device.type == "meta" and loss.shape == (6, 3) and not _is_ours(loss)
    p = torch.empty((5, 2), device="meta")
    for fn in (flt.binary_cross_entropy, flt.binary_cross_entropy_with_logits):
        assert fn(p, p).device.type == "meta"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert flt.kl_div(p, p).device.type == "meta"
    assert flt.kl_div_with_logits(p, p, reduction="none").shape == (5,)


@pytest.mark.parametrize("which", ["ce-soft", "bce", "bce-logits", "kl", "distill"])
def test_targets_that_require_grad_fall_back_to_pytorch(rng, which):
    x = torch.from_numpy(rng.standard_normal((5, 4)))
    raw = rng.random((5, 4))
    target = torch.from_numpy(raw / raw.sum(1, keepdims=True)).requires_grad_(True)
    ours_fn, theirs_fn = {
        "ce-soft": (flt.cross_entropy, F.cross_entropy),
        "bce": (flt.binary_cross_entropy, F.binary_cross_entropy),
        "bce-logits": (flt.binary_cross_entropy_with_logits,
                       F.binary_cross_entropy_with_logits),
        "kl": (flt.kl_div, F.kl_div),
        "distill": (flt.kl_div_with_logits, _distill_by_torch),
    }[which]
    if which == "bce":
        x = torch.sigmoid(x)
    results = []
    for fn in (ours_fn, theirs_fn):
        leaf = x.clone().requires_grad_(True)
        target.grad = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            loss = fn(leaf, target)
        assert not _is_ours(loss)
        loss.backward()
        results.append((loss.detach(), leaf.grad, target.grad))
    torch.testing.assert_close(results[0], results[1], rtol=1e-13, atol=1e-15)


def test_arguments_that_are_not_tensors_get_pytorchs_error():
    x = torch.zeros((2, 3), dtype=torch.float64)
    for fn in (flt.cross_entropy, F.cross_entropy):
        with pytest.raises(TypeError, match=r"must be Tensor, not numpy\.ndarray"):
            fn(x, np.array([0, 1]))
    for fn in (flt.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits):
        with pytest.raises(TypeError, match="must be Tensor, not list"):
            fn(x, torch.zeros_like(x), pos_weight=[1.0, 2.0, 3.0])


def test_distill_fallback_matches_fast_path(rng):
    # float16 goes through the composed PyTorch functions; compare it in float64 by
    # forcing the fallback with a teacher that requires grad.
    s = torch.from_numpy(rng.standard_normal((3, 5, 2)))
    for kind in ("probs", "log_probs", "logits"):
        teacher = _teacher(rng, kind, (3, 5, 2), np.float64)
        for reduction in ("batchmean", "mean", "sum", "none"):
            kwargs = dict(teacher_kind=kind, temperature=1.7, reduction=reduction, base=2)
            fast = flt.kl_div_with_logits(s, teacher, **kwargs)
            slow = flt.kl_div_with_logits(s, teacher.clone().requires_grad_(True), **kwargs)
            torch.testing.assert_close(fast, slow.detach(), rtol=1e-13, atol=1e-15)


# --- modules -----------------------------------------------------------------------------

MODULES = [
    (flt.CrossEntropyLoss, torch.nn.CrossEntropyLoss,
     dict(weight=torch.tensor([1.0, 2.0, 0.5, 1.5]), ignore_index=1, label_smoothing=0.1)),
    (flt.BCELoss, torch.nn.BCELoss, dict(weight=torch.tensor([1.0, 2.0, 0.5, 1.5]))),
    (flt.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss,
     dict(weight=torch.tensor([[1.0], [2.0], [0.5], [1.5], [1.0]]),
          pos_weight=torch.tensor([3.0, 1.0, 0.5, 2.0]))),
    (flt.KLDivLoss, torch.nn.KLDivLoss, dict(log_target=True)),
]


def _module_inputs(rng, ours_cls, dtype):
    x = rng.standard_normal((5, 4))
    if ours_cls is flt.CrossEntropyLoss:
        target = torch.from_numpy(rng.integers(0, 4, 5))
    elif ours_cls is flt.KLDivLoss:
        x = np.log(rng.random((5, 4)) + 0.1)
        target = torch.from_numpy(np.log(rng.random((5, 4)) + 0.1)).to(dtype)
    else:
        target = torch.from_numpy(rng.random((5, 4))).to(dtype)
    if ours_cls is flt.BCELoss:
        x = 1 / (1 + np.exp(-x))
    return torch.from_numpy(x).to(dtype), target


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ours_cls,theirs_cls,kwargs", MODULES,
                         ids=[m[0].__name__ for m in MODULES])
def test_modules_are_drop_in(rng, ours_cls, theirs_cls, kwargs, reduction):
    ours = ours_cls(reduction=reduction, **kwargs)
    theirs = theirs_cls(reduction=reduction, **kwargs)
    assert isinstance(ours, theirs_cls)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [name for name, _ in ours.named_buffers()] == \
        [name for name, _ in theirs.named_buffers()]
    ours.load_state_dict(theirs.state_dict())
    # .to(dtype) converts the weight buffers, which the float64 call then uses.
    ours, theirs = ours.to(torch.float64), theirs.to(torch.float64)
    for buffer in ours.buffers():
        assert buffer.dtype == torch.float64
    x, target = _module_inputs(rng, ours_cls, torch.float64)
    grad_output = torch.from_numpy(rng.random((5,) if ours_cls is flt.CrossEntropyLoss
                                              else (5, 4)) + 0.5)
    results = []
    for module in (ours, theirs):
        leaf = x.clone().requires_grad_(True)
        with warnings.catch_warnings():     # KLDivLoss's "mean", in both
            warnings.simplefilter("ignore", UserWarning)
            loss = module(leaf, target)
        loss.backward(grad_output if reduction == "none" else None)
        results.append((loss.detach(), leaf.grad))
        if module is ours:
            assert _is_ours(loss)
    torch.testing.assert_close(results[0], results[1], rtol=1e-13, atol=1e-15)


def test_legacy_reduction_arguments_like_pytorch(rng):
    x = torch.from_numpy(rng.standard_normal((5, 4)))
    y = torch.from_numpy(rng.integers(0, 4, 5))
    for size_average, reduce, expected in [(False, None, "sum"), (None, False, "none"),
                                           (True, True, "mean")]:
        with pytest.warns(UserWarning, match=f"reduction='{expected}'"):
            ours = flt.cross_entropy(x, y, size_average=size_average, reduce=reduce)
        torch.testing.assert_close(ours, F.cross_entropy(x, y, reduction=expected),
                                   rtol=1e-14, atol=0)
        with pytest.warns(UserWarning, match="deprecated"):
            module = flt.CrossEntropyLoss(size_average=size_average, reduce=reduce)
        assert module.reduction == expected
    p = torch.sigmoid(x)
    with pytest.warns(UserWarning, match="reduction='sum'"):
        torch.testing.assert_close(flt.binary_cross_entropy(p, p, size_average=False),
                                   F.binary_cross_entropy(p, p, reduction="sum"))
    with pytest.warns(UserWarning, match="reduction='none'"):
        torch.testing.assert_close(
            flt.binary_cross_entropy_with_logits(x, p, reduce=False),
            F.binary_cross_entropy_with_logits(x, p, reduction="none"))
    with pytest.warns(UserWarning, match="reduction='sum'"):
        torch.testing.assert_close(flt.kl_div(x, p, size_average=False),
                                   F.kl_div(x, p, reduction="sum"))


# --- training: the same loss curve as with PyTorch's loss --------------------------------

def _train(make_loss, problem, dtype, steps=300, batch=64):
    """Mini-batch SGD with momentum on a fixed MLP; the loss of every step."""
    inputs, targets = problem
    torch.manual_seed(1234)
    model = torch.nn.Sequential(torch.nn.Linear(inputs.shape[1], 32), torch.nn.Tanh(),
                                torch.nn.Linear(32, 6)).to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    loss_fn = make_loss()
    inputs = inputs.to(dtype)
    targets = targets.to(dtype) if targets.is_floating_point() else targets
    curve = []
    for step in range(steps):
        rows = slice((step * batch) % len(inputs), (step * batch) % len(inputs) + batch)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs[rows]), targets[rows])
        loss.backward()
        optimizer.step()
        curve.append(loss.item())
    return np.array(curve)


def _problem(kind):
    """A synthetic problem: 512 points in 10 dimensions, labels from a random linear map
    with noise; one class each (6 classes), or 6 binary labels."""
    gen = torch.Generator().manual_seed(99)
    inputs = torch.randn(512, 10, generator=gen, dtype=torch.float64)
    scores = inputs @ torch.randn(10, 6, generator=gen, dtype=torch.float64)
    scores += 0.5 * torch.randn(512, 6, generator=gen, dtype=torch.float64)
    return inputs, (scores.argmax(1) if kind == "classes" else (scores > 0).to(torch.float64))


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 2e-5)],
                         ids=["f64", "f32"])
@pytest.mark.parametrize("loss", ["CrossEntropyLoss", "BCEWithLogitsLoss"])
def test_training_follows_the_same_loss_curve(loss, dtype, rtol):
    problem = _problem("classes" if loss == "CrossEntropyLoss" else "labels")
    ours = _train(getattr(flt, loss), problem, dtype)
    theirs = _train(getattr(torch.nn, loss), problem, dtype)
    assert ours[-20:].mean() < 0.5 * ours[:20].mean()       # it did learn something
    np.testing.assert_allclose(ours, theirs, rtol=rtol)


def test_distillation_follows_the_same_loss_curve():
    problem = _problem("classes")
    teacher_logits = 2.0 * torch.nn.functional.one_hot(problem[1], 6).to(torch.float64)
    teacher = (problem[0], teacher_logits)

    def make(fn):
        return lambda: lambda logits, t: fn(logits, t, teacher_kind="logits", temperature=2.0)

    ours = _train(make(flt.kl_div_with_logits), teacher, torch.float64)
    theirs = _train(make(_distill_by_torch), teacher, torch.float64)
    assert ours[-20:].mean() < 0.5 * ours[:20].mean()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


# --- errors ------------------------------------------------------------------------------

def test_fastloss_validation_applies_on_the_fast_path():
    x = torch.zeros((2, 3), dtype=torch.float64, requires_grad=True)
    with pytest.raises(IndexError, match=r"target must hold class indices in \[0, 3\)"):
        flt.cross_entropy(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="weight must be non-negative"):
        flt.cross_entropy(x, torch.tensor([0, 1]), weight=torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        flt.cross_entropy(x, torch.tensor([0, 1]), reduction="batchmean")
    with pytest.raises(ValueError, match=r"probs must be in \[0, 1\]"):
        flt.binary_cross_entropy(x + 2, torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="pos_weight must be non-negative"):
        flt.binary_cross_entropy_with_logits(x, torch.zeros(2, 3, dtype=torch.float64),
                                             pos_weight=torch.tensor([1.0, -2.0, 1.0]))


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "fallback"])
def test_kl_div_with_logits_errors(fast):
    s = torch.zeros((2, 3), dtype=torch.float64)
    teacher = torch.full((2, 3), 1 / 3, dtype=torch.float64, requires_grad=not fast)
    with pytest.raises(ValueError, match="teacher_kind must be one of"):
        flt.kl_div_with_logits(s, teacher, teacher_kind="scores")
    with pytest.raises(ValueError, match="reduction must be one of"):
        flt.kl_div_with_logits(s, teacher, reduction="average")
    with pytest.raises(ValueError, match=r"temperature must be a finite number in \(0, 1e\+100\]"):
        flt.kl_div_with_logits(s, teacher, temperature=0.0)
    with pytest.raises(TypeError, match="temperature must be a real number"):
        flt.kl_div_with_logits(s, teacher, temperature="2")


def test_import_without_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)       # what an uninstalled torch does
    monkeypatch.delitem(sys.modules, "fastloss.torch")
    with pytest.raises(ImportError, match=r"pip install 'fastloss\[torch\]'"):
        __import__("fastloss.torch")


def test_fastloss_itself_never_imports_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, fastloss\n"
            "print(fastloss.cross_entropy(np.zeros((2, 3)), np.array([0, 1])))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, check=False)
    assert result.returncode == 0, result.stderr
    # log 3, within the kernels' few ulps
    assert float(result.stdout) == pytest.approx(math.log(3), rel=4e-16)


def test_docstring_examples():
    result = doctest.testmod(flt, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
