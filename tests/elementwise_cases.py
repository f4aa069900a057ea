"""Data and tolerances shared by the tests of the elementwise losses (test_binary.py,
test_kl.py, test_torch_elementwise.py)."""

from __future__ import annotations

import numpy as np

import fastloss
from fastloss import reference

# name -> (fastloss function, reference function)
FUNCTIONS = {
    "bce": (fastloss.binary_cross_entropy, reference.binary_cross_entropy),
    "bce_logits": (fastloss.binary_cross_entropy_with_logits,
                   reference.binary_cross_entropy_with_logits),
    "kl": (fastloss.kl_div, reference.kl_div),
    "focal": (fastloss.sigmoid_focal_loss, reference.sigmoid_focal_loss),
}

# Empty, 0-d, one element, odd sizes that leave SIMD tails, (N, C), (N, C, H, W), several
# blocks of the kernels (4096 elements) with a partial last one.
SHAPES = [(0,), (0, 5), (), (1,), (7,), (13, 3), (17, 33), (4, 3, 5, 2), (9, 1000),
          (3, 4099)]


def make_case(rng, name, shape, dtype, *, soft=True, log_target=False):
    """The first argument and the target of one loss, with the values its tests need:
    probabilities that include exact 0 and 1, logits over several scales, targets
    (soft, or hard 0/1) and KL targets with zeros."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    if name == "bce":
        x = rng.random(shape)
        flat = x.reshape(-1)
        flat[::11] = 0.0
        flat[5::13] = 1.0
    elif name in ("bce_logits", "focal"):
        x = rng.standard_normal(shape) * 4.0
    else:
        raw = rng.random(shape) + 0.05
        x = np.log(raw / raw.sum(axis=-1, keepdims=True)) if raw.ndim else np.log(raw)
    if name == "kl":
        target = rng.random(shape) ** 2
        target.reshape(-1)[::7] = 0.0
        if log_target:
            with np.errstate(divide="ignore"):
                target = np.log(target)
    elif soft:
        target = rng.random(shape)
    else:
        target = (rng.random(shape) < 0.5).astype(np.float64)
    assert target.size == size
    return np.asarray(x, dtype=dtype), np.asarray(target, dtype=dtype)


def magnitude_atol(ref, dtype, ulps=16):
    """An absolute slack of a few ulps of the largest reference value: elementwise terms
    such as (1 - t) - L sigmoid(-|x|) or p (log p - x), and sums of terms of both signs,
    cancel, so their error is relative to the parts, not to the small difference."""
    values = np.abs(np.asarray(ref, dtype=np.float64))
    values = values[np.isfinite(values)]
    largest = values.max() if values.size else 0.0
    return ulps * np.finfo(np.float64).eps * largest


def sum_atol(ref_terms, dtype):
    """Slack of a reduced loss: a few ulps of the sum of the terms' magnitudes."""
    terms = np.abs(np.asarray(ref_terms, dtype=np.float64))
    return 16 * np.finfo(np.float64).eps * float(np.sum(terms[np.isfinite(terms)]))


# The 4th-order central difference: sum of weight * f(x + step * h), over 12 h.
FD_STENCIL = ((-2, 1.0), (-1, -8.0), (1, 8.0), (2, -1.0))


def fd_gradient(f, x, index, h):
    """4th-order central difference of f at x along the coordinate ``index``."""
    total = 0.0
    for step, weight in FD_STENCIL:
        shifted = x.copy()
        shifted[index] += step * h
        total += weight * f(shifted)
    return total / (12 * h)


def term_scale(name, x, target, **kwargs):
    """Per element, the size of the parts that make its term: the term itself for the
    binary losses (sums of non-negative parts), p (|log p| + |x|) for kl_div, whose
    difference log p - x cancels. Non-finite entries count 0."""
    fn = FUNCTIONS[name][1]
    scale = np.abs(fn(x, target, reduction="none", **kwargs))
    if name == "kl":
        x64 = np.asarray(x, dtype=np.float64)
        t = np.asarray(target, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            p = np.exp(t) if kwargs.get("log_target") else t
            log_p = t if kwargs.get("log_target") else np.log(t)
            parts = np.where(p == 0, 0.0, p * (np.abs(log_p) + np.abs(x64)))
        scale = np.fmax(scale, parts)
    return np.where(np.isfinite(scale), scale, 0.0)


def check_matches_reference(name, x, target, reduction, **kwargs):
    """Loss and gradient of one call against the reference, within the tolerances of
    conftest.assert_close plus the cancellation slack above. Returns (loss, grad)."""
    from conftest import assert_close

    fn, ref = FUNCTIONS[name]
    dtype = x.dtype
    loss, grad = fn(x, target, reduction=reduction, return_grad=True, **kwargs)
    kwargs.pop("n_threads", None)
    ref_loss, ref_grad = ref(x, target, reduction=reduction, return_grad=True, **kwargs)
    scale = term_scale(name, x, target, **kwargs)
    unit = np.log(kwargs["base"]) if kwargs.get("base") is not None else 1.0
    eps = np.finfo(np.float64).eps
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == x.shape
        atol = 16 * eps * scale / unit
    else:
        assert isinstance(loss, dtype.type), type(loss)
        denominator = {"sum": 1, "mean": x.size,
                       "batchmean": x.shape[0] if x.ndim else 1}[reduction]
        atol = 64 * eps * float(np.sum(scale)) / max(denominator, 1) / unit
    assert grad.shape == x.shape and grad.dtype == dtype and grad.flags.c_contiguous
    with np.errstate(over="ignore"):            # np.spacing of float32 infinities
        assert_close(loss, ref_loss, dtype, atol=atol, what=f"{name} loss")
        assert_close(grad, ref_grad, dtype, atol=magnitude_atol(ref_grad, dtype),
                     what=f"{name} grad")
    return loss, grad


# Every elementwise loss with the options that change its kernel's path: (id, function
# name, options). "C" stands for an array of weights over the last axis.
VARIANTS = [
    ("bce", "bce", {}),
    ("bce-weight", "bce", {"weight": "C"}),
    ("logits", "bce_logits", {}),
    ("logits-all", "bce_logits", {"weight": "C", "pos_weight": "C", "label_smoothing": 0.1}),
    ("kl", "kl", {}),
    ("kl-log", "kl", {"log_target": True}),
    ("focal", "focal", {}),
    ("focal-all", "focal", {"weight": "C", "alpha": -1.0, "gamma": 1.5}),
]
VARIANT_IDS = [v[0] for v in VARIANTS]


def variant_case(rng, variant, shape, dtype):
    """(function, first argument, target, keyword arguments) of one variant."""
    _, name, options = variant
    x, target = make_case(rng, name, shape, dtype,
                          log_target=bool(options.get("log_target")))
    kwargs = {}
    for key, value in options.items():
        kwargs[key] = ((rng.random(shape[-1:]) * 2 + 0.1).astype(dtype) if value == "C"
                       else value)
    return FUNCTIONS[name][0], x, target, kwargs


def reductions_of(variant):
    """The reductions a variant's function takes."""
    return ["mean", "sum", "none"] + (["batchmean"] if variant[1] == "kl" else [])
