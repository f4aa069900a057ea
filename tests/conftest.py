"""Shared helpers: tolerances against the float64 reference, and test data."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "fastloss", deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
# CI explores a fixed set of examples, so a red run can be reproduced.
settings.register_profile("ci", parent=settings.get_profile("fastloss"), derandomize=True,
                          max_examples=150)
settings.load_profile("ci" if os.environ.get("CI") else "fastloss")

TORCH_MODULES = ("test_torch.py", "test_torch_autograd.py", "test_torch_elementwise.py",
                 "test_torch_focal.py")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say that the comparisons with PyTorch did not run: pytest counts each of their
    modules, skipped whole, as one skip."""
    try:
        import torch  # noqa: F401
    except ImportError:
        terminalreporter.write_line(
            f"PyTorch is not installed: the comparisons with it ({', '.join(TORCH_MODULES)}, "
            "over a thousand tests) did not run; `pip install torch` runs them.")

def simd_builds() -> list[str]:
    """The builds of the kernels this CPU runs, widest first (the last is the baseline)."""
    from fastloss import _dispatch
    return _dispatch.isas()


@pytest.fixture
def use_build():
    """A function that runs the kernels of the build it names from then on, until the
    test ends (fastloss._dispatch.use)."""
    import contextlib

    from fastloss import _dispatch
    with contextlib.ExitStack() as stack:
        yield lambda name: stack.enter_context(_dispatch.use(name))


DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]


@pytest.fixture(params=DTYPES, ids=DTYPE_IDS)
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


def assert_close(actual, expected, dtype, *, ulps=4, rtol64=1e-12, atol=0.0, what=""):
    """Compare a kernel result with the float64 reference.

    float32: within ``ulps`` float32 ulps of the reference rounded to float32.
    float64: within ``rtol64`` relative. ``atol`` absorbs the ~1e-16 absolute error of
    differences that cancel (p_y - 1, a loss near 0), which no relative bound can hold.
    NaN must appear exactly where the reference has NaN, and infinities must match.
    """
    actual = np.asarray(actual)
    dtype = np.dtype(dtype)
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    expected = np.broadcast_to(np.asarray(expected, dtype=np.float64), actual.shape)
    # A value beyond the dtype's range rounds to +-inf, which is then the right answer.
    with np.errstate(over="ignore"):
        expected = np.where(np.isinf(expected.astype(dtype)), expected.astype(dtype), expected)
    got = actual.astype(np.float64)
    nan_mismatch = np.isnan(got) != np.isnan(expected)
    assert not nan_mismatch.any(), f"{what}: NaN where the reference has none, or vice versa"
    if dtype == np.float32:
        tol = ulps * np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
    else:
        tol = rtol64 * np.abs(expected)
    with np.errstate(invalid="ignore"):
        ok = np.isnan(expected) | (got == expected) | (np.abs(got - expected) <= tol + atol)
    if not ok.all():
        bad = np.argwhere(~ok)[:5]
        detail = ", ".join(f"{tuple(int(i) for i in b)}: {got[tuple(b)]!r} vs "
                           f"{expected[tuple(b)]!r}" for b in bad)
        raise AssertionError(f"{what}: {int((~ok).sum())} of {ok.size} differ; {detail}")


def make_logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def make_target(rng, shape, n_classes):
    return rng.integers(0, n_classes, size=shape)


def check_fd_gradient(total, x, grad, indices=None, *, h=1e-3, rel=1e-7, abs_tol=1e-9):
    """Compare ``grad`` with 4th-order central differences of the scalar function
    ``total`` at float64 ``x``, at ``indices`` (default: every entry)."""
    for index in (np.ndindex(*x.shape) if indices is None else indices):
        def at(delta, index=index):
            shifted = x.copy()
            shifted[index] += delta
            return total(shifted)
        numeric = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
        assert grad[index] == pytest.approx(numeric, rel=rel, abs=abs_tol), index


def cross_entropy_terms(logits, target, *, weight=None, ignore_index=-100,
                        label_smoothing=0.0, sample_weight=None, z_loss=0.0,
                        reduction="mean", axis=-1, base=None):
    """The size of the terms of each entry of cross_entropy's gradient,
    s / D ((sum_j q_j + 2 z lse) softmax - q) (see ``reference.cross_entropy``):
    |s / D| ((sum_j q_j + 2 z |lse|) softmax + q).

    The kernels form a gradient entry from these terms, each within a few ulps, so its
    error is bounded by a few ulps of their size, not of the entry: where they cancel
    (a smoothed or soft target that matches the softmax) an exact 0 comes out as a few
    ulps of the terms. This is the documented bound."""
    x = np.moveaxis(np.asarray(logits, dtype=np.float64), axis, -1)
    n_classes = x.shape[-1]
    target = np.asarray(target)
    w = np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    if target.dtype.kind == "f":
        dist = np.moveaxis(target.astype(np.float64), axis, -1)
        counted = np.ones(x.shape[:-1], dtype=bool)
    else:
        counted = target != ignore_index
        dist = np.eye(n_classes)[np.where(counted, target, 0)]
    s = np.ones(counted.shape) if sample_weight is None else np.asarray(sample_weight, float)
    counted = counted & (s != 0)
    q = ((1.0 - label_smoothing) * dist + label_smoothing / n_classes) * w
    q = q * counted[..., None]
    if reduction != "mean":
        denominator = 1.0
    elif target.dtype.kind == "f":
        denominator = float(np.sum(s))
    else:
        denominator = float(np.sum(s * np.where(counted, w[np.where(counted, target, 0)], 0)))
    scale = np.abs(s) / denominator if denominator > 0 else np.zeros_like(s)
    from fastloss import reference
    with np.errstate(invalid="ignore", over="ignore"):
        soft = reference.softmax(x, -1)
        lse = reference.logsumexp(x, -1)
        slope = q.sum(-1) + 2 * z_loss * np.abs(lse)
        terms = scale[..., None] * (slope[..., None] * soft + q)
    unit = 1.0 if base is None else abs(np.log(base))
    return np.moveaxis(np.nan_to_num(terms, nan=0.0, posinf=0.0) / unit, -1, axis)
