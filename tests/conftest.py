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
