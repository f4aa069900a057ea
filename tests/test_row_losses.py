"""Properties every row loss has, run over the registry of tests/row_loss_cases.py:
agreement with its NumPy reference, gradients by finite differences, reduced losses that
do not depend on the thread count, every SIMD build, the gradient in place, empty batches
and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import simd_builds
from row_loss_cases import ROW_LOSS_IDS, ROW_LOSSES, make_rows

SHAPES = [(1, 1), (7, 2), (33, 10), (5, 17), (6, 1000), (2, 5000)]


def _assert_within(got, want, atol, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, what
    assert (np.isnan(got) == np.isnan(want)).all(), what
    with np.errstate(invalid="ignore"):
        err = np.where(got == want, 0.0, np.abs(got - want))
    bad = np.broadcast_to(np.asarray(err > atol), err.shape)
    assert not bad.any(), (f"{what}: {int(bad.sum())} entries off, the worst by "
                           f"{float(np.max(err))} (allowed {np.max(atol)})")


def _tolerance(x, dtype):
    """Slack of one row's loss or gradient entry: a few units of rounding of the row's
    logsumexp and its largest score, which the formulas subtract."""
    finite = np.where(np.isfinite(x), np.abs(x.astype(np.float64)), 0.0)
    scale = finite.max(axis=-1, initial=0.0) + np.log(max(x.shape[-1], 2)) + 1.0
    eps = np.finfo(dtype).eps
    return 32 * eps * scale


@pytest.mark.parametrize("loss", ROW_LOSSES, ids=ROW_LOSS_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(rng, dtype, loss, shape):
    x, target = make_rows(rng, loss, shape, dtype)
    row_tol = _tolerance(x, dtype)
    for reduction in loss.reductions:
        got, grad = loss(x, target, reduction=reduction, return_grad=True)
        want, want_grad = loss.reference(x, target, reduction=reduction, return_grad=True)
        assert grad.shape == x.shape and grad.dtype == dtype
        got = np.asarray(got, dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        if reduction == "none":
            assert got.shape == shape[:1]
            tol = row_tol * np.maximum(1.0, np.abs(want))
        else:
            tol = float(np.sum(row_tol)) * max(1.0, abs(float(want)))
        _assert_within(got, want, tol, f"{reduction} loss")
        grad_tol = np.max(row_tol) * max(1.0, float(np.abs(want_grad).max(initial=0.0)))
        _assert_within(grad, want_grad, grad_tol, f"{reduction} gradient")


@pytest.mark.parametrize("loss", ROW_LOSSES, ids=ROW_LOSS_IDS)
def test_gradient_by_finite_differences(rng, loss):
    # the derivative along a random direction v: <grad, v> against a 4th-order difference
    x, target = make_rows(rng, loss, (4, 6), np.float64, scale=1.5)
    x[np.isinf(x)] = -3.0
    reduction = loss.reductions[1]                      # "sum"
    _, grad = loss(x, target, reduction=reduction, return_grad=True)
    v = rng.standard_normal(x.shape)

    def f(t):
        return float(loss.reference(x + t * v, target, reduction=reduction))

    h = 1e-3
    numeric = (f(-2 * h) - 8 * f(-h) + 8 * f(h) - f(2 * h)) / (12 * h)
    assert abs(float(np.sum(grad * v)) - numeric) <= 1e-8 * max(1.0, abs(numeric))


@pytest.mark.parametrize("loss", ROW_LOSSES, ids=ROW_LOSS_IDS)
def test_same_bits_for_any_thread_count(rng, dtype, loss):
    x, target = make_rows(rng, loss, (3001, 23), dtype)
    for reduction in loss.reductions:
        results = [loss(x, target, reduction=reduction, return_grad=True, n_threads=n)
                   for n in (1, 2, 3, None)]
        for got, grad in results[1:]:
            assert np.asarray(got).tobytes() == np.asarray(results[0][0]).tobytes()
            assert grad.tobytes() == results[0][1].tobytes()


@pytest.mark.parametrize("build", ["avx2", "avx512"])
@pytest.mark.parametrize("loss", ROW_LOSSES, ids=ROW_LOSS_IDS)
def test_every_simd_build_agrees_with_the_baseline(rng, dtype, loss, build, use_build):
    if build not in simd_builds():
        pytest.skip(f"this CPU or build has no {build} kernels")
    x, target = make_rows(rng, loss, (257, 13), dtype)
    results = {}
    for chosen in ("baseline", build):
        use_build(chosen)
        results[chosen] = loss(x, target, reduction="none", return_grad=True)
    tol = _tolerance(x, dtype)
    (a, ga), (b, gb) = results.values()
    _assert_within(a, b, tol * np.maximum(1.0, np.abs(np.asarray(a, np.float64))), "loss")
    _assert_within(ga, gb, float(np.max(tol)), "gradient")


@pytest.mark.parametrize("loss", ROW_LOSSES, ids=ROW_LOSS_IDS)
def test_gradient_in_place(rng, dtype, loss):
    x, target = make_rows(rng, loss, (40, 9), dtype)
    got, grad = loss(x, target, reduction=loss.reductions[-1], return_grad=True)
    buffer = x.copy()
    got2, grad2 = loss(buffer, target, reduction=loss.reductions[-1], grad_out=buffer)
    assert grad2 is buffer
    assert np.asarray(got2).tobytes() == np.asarray(got).tobytes()
    assert grad2.tobytes() == grad.tobytes()


@pytest.mark.parametrize("loss", ROW_LOSSES, ids=ROW_LOSS_IDS)
def test_no_rows(rng, dtype, loss):
    x, target = make_rows(rng, loss, (0, 5), dtype)
    assert loss(x, target, reduction="none").shape == (0,)
    assert float(loss(x, target, reduction="sum")) == 0.0
    _, grad = loss(x, target, reduction="sum", return_grad=True)
    assert grad.shape == (0, 5)


@pytest.mark.parametrize("loss", ROW_LOSSES, ids=ROW_LOSS_IDS)
def test_bad_input(rng, loss):
    x, target = make_rows(rng, loss, (4, 3), np.float64)
    with pytest.raises(TypeError):
        loss(np.zeros(x.shape, np.int64), target)
    with pytest.raises(ValueError, match="n_threads"):
        loss(x, target, n_threads=0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        loss(x, target, reduction="median")
    with pytest.raises(ValueError, match="grad_out must have shape"):
        loss(x, target, grad_out=np.empty((3, 4)))
    if target is not None:
        with pytest.raises((ValueError, IndexError)):
            loss(x, target[:3])
