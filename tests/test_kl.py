"""kl_div against the NumPy reference, finite differences and known values; every bad
input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from elementwise_cases import SHAPES, check_matches_reference, fd_gradient, make_case
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastloss
from fastloss import reference

kl_div = fastloss.kl_div

REDUCTIONS = ["mean", "batchmean", "sum", "none"]


@pytest.mark.parametrize("log_target", [False, True], ids=["p", "log_p"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(rng, dtype, shape, reduction, log_target):
    x, target = make_case(rng, "kl", shape, dtype, log_target=log_target)
    check_matches_reference("kl", x, target, reduction, log_target=log_target)


@pytest.mark.parametrize("log_target", [False, True], ids=["p", "log_p"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_a_million_elements(rng, dtype, reduction, log_target):
    x, target = make_case(rng, "kl", (1000, 1000), dtype, log_target=log_target)
    check_matches_reference("kl", x, target, reduction, log_target=log_target, n_threads=2)


class TestKnownValues:
    def test_theory_worked_example(self, dtype):
        # docs/theory.md: p = (0.8, 0.1, 0.1), q = (0.2, 0.2, 0.6): KL = 0.860545 nats,
        # H(p, q) = 1.499577 and H(p) = 0.639032.
        p = np.array([[0.8, 0.1, 0.1]], dtype=dtype)
        log_q = np.log(np.array([[0.2, 0.2, 0.6]])).astype(dtype)
        assert round(float(kl_div(log_q, p, reduction="batchmean")), 6) == 0.860545
        assert round(float(kl_div(log_q, np.log(p), reduction="sum", log_target=True)),
                     6) == 0.860545
        cross = fastloss.cross_entropy(log_q, p, reduction="sum")
        entropy = -np.sum(p.astype(np.float64) * np.log(p.astype(np.float64)))
        assert float(cross) == pytest.approx(1.499577, abs=1e-6)
        assert float(kl_div(log_q, p, reduction="sum")) == pytest.approx(cross - entropy,
                                                                         rel=1e-6)
        bits = kl_div(log_q, p, reduction="sum", base=2)
        assert float(bits) == pytest.approx(0.860545 / np.log(2), rel=1e-6)

    def test_zero_when_distributions_agree(self, rng, dtype):
        raw = rng.random((20, 7)) + 0.1
        p = (raw / raw.sum(axis=1, keepdims=True)).astype(dtype)
        loss, grad = kl_div(np.log(p), p, reduction="sum", return_grad=True)
        assert abs(float(loss)) < 1e-5
        np.testing.assert_array_equal(grad, -p)

    def test_gradient_of_the_kl_equals_that_of_the_cross_entropy(self, rng):
        # docs/theory.md: KL = CE - H(p), and H(p) does not depend on the model.
        logits = rng.standard_normal((30, 9))
        raw = rng.random((30, 9))
        p = raw / raw.sum(axis=1, keepdims=True)
        log_q, lse = fastloss.log_softmax(logits), fastloss.logsumexp(logits)
        _, grad_kl = kl_div(log_q, p, reduction="batchmean", return_grad=True)
        # Chain rule through log_softmax: dKL/ds = softmax * sum(g) - g per row... with g the
        # gradient with respect to log q, which sums to -1 on each row of probabilities.
        softmax = np.exp(log_q)
        grad_logits = grad_kl - softmax * grad_kl.sum(axis=1, keepdims=True)
        _, grad_ce = fastloss.cross_entropy(logits, p, return_grad=True)
        np.testing.assert_allclose(grad_logits, grad_ce, rtol=1e-12, atol=1e-16)
        assert lse.shape == (30,)


class TestZeroTargets:
    @pytest.mark.parametrize("log_target", [False, True], ids=["p", "log_p"])
    def test_zero_target_against_minus_inf_input(self, dtype, log_target):
        x = np.array([-np.inf, -np.inf, 0.5, -np.inf, -1.0], dtype=dtype)
        p = np.array([0.0, 0.3, 0.0, 0.0, 0.5], dtype=dtype)
        with np.errstate(divide="ignore"):
            target = np.log(p) if log_target else p
        loss, grad = kl_div(x, target, reduction="none", log_target=log_target,
                            return_grad=True)
        assert loss[0] == 0 and loss[2] == 0 and loss[3] == 0
        assert loss[1] == np.inf
        assert grad[0] == 0 and grad[2] == 0 and grad[3] == 0
        assert np.isfinite(grad).all()
        check_matches_reference("kl", x, target, "none", log_target=log_target)
        assert kl_div(x[[0, 2, 3, 4]], target[[0, 2, 3, 4]], reduction="sum",
                      log_target=log_target) == pytest.approx(0.5 * (np.log(0.5) + 1))

    def test_very_negative_log_targets_underflow_to_zero(self, dtype):
        x = np.array([-np.inf, -3.0], dtype=dtype)
        target = np.array([-800.0, -800.0], dtype=dtype)
        loss, grad = kl_div(x, target, reduction="none", log_target=True, return_grad=True)
        np.testing.assert_array_equal(loss, [0.0, 0.0])
        np.testing.assert_array_equal(grad, [0.0, 0.0])

    @pytest.mark.parametrize("log_target", [False, True], ids=["p", "log_p"])
    def test_nan_propagates(self, rng, dtype, log_target):
        x, target = make_case(rng, "kl", (30, 700), dtype, log_target=log_target)
        zero = -np.inf if log_target else 0.0
        x[3, 5] = np.nan                     # against a zero target: still NaN
        target[3, 5] = zero
        target[7, 8] = np.nan
        loss, grad = kl_div(x, target, reduction="none", log_target=log_target,
                            return_grad=True)
        assert np.isnan(loss[3, 5]) and np.isnan(loss[7, 8])
        assert np.isnan(loss).sum() == 2
        assert np.isnan(grad[7, 8]) and np.isnan(grad).sum() == 1
        for reduction in ("mean", "batchmean", "sum"):
            assert np.isnan(kl_div(x, target, reduction=reduction, log_target=log_target))
        check_matches_reference("kl", x, target, "none", log_target=log_target)

    def test_extreme_values(self, dtype):
        big = float(np.finfo(dtype).max)
        tiny = float(np.finfo(dtype).smallest_subnormal)
        x = np.array([-1e30, 1e30, -1e4, 0.0, -big, 0.0, 20.0], dtype=dtype)
        p = np.array([tiny, 1.0, 1e-30, big, 1.0, 1e-300, 1e-20], dtype=dtype)
        check_matches_reference("kl", x, p, "none")
        with np.errstate(divide="ignore"):
            check_matches_reference("kl", x, np.log(p), "none", log_target=True)
        logs = np.array([-745.0, -700.0, -1e-300, 0.0, 5.0, 88.0, 700.0], dtype=dtype)
        check_matches_reference("kl", np.zeros(7, dtype), logs, "none", log_target=True)


def _ulps(got, expected):
    """|got - expected| in ulps of expected (subnormal spacing below the normal range)."""
    with np.errstate(invalid="ignore"):         # inf - inf where both are infinite
        return np.abs(got - expected) / np.spacing(np.abs(expected))


def test_exp_and_log_over_their_whole_range():
    # The kernels' own exp and log (plain arithmetic that vectorises): within 1 ulp of the
    # C library's, subnormal and overflowing results included. With log_target the
    # gradient of the sum is -exp(target); against a zero input the term is p log p.
    rng = np.random.default_rng(5)
    t = np.concatenate([rng.uniform(-746, 710, 300_000), rng.uniform(-1, 1, 50_000),
                        [-np.inf, np.inf, 0.0, -745.13, -745.14, 709.78, 709.79]])
    _, grad = kl_div(np.zeros_like(t), t, log_target=True, reduction="sum", return_grad=True)
    with np.errstate(over="ignore"):
        expected = np.exp(t)
    assert (_ulps(-grad, expected)[np.isfinite(expected)] <= 1).all()
    np.testing.assert_array_equal(-grad[~np.isfinite(expected)], expected[~np.isfinite(expected)])
    p = np.concatenate([np.exp(rng.uniform(-744, 709, 300_000)), rng.uniform(0, 2, 50_000),
                        [5e-324, 1e-310, 2.2250738585072014e-308, 1.7976931348623157e308]])
    loss = kl_div(np.zeros_like(p), p, reduction="none")
    with np.errstate(over="ignore"):
        expected = p * np.log(p)
    normal = np.isfinite(expected) & (np.abs(expected) >= np.finfo(np.float64).tiny)
    assert (_ulps(loss, expected)[normal] <= 2).all()
    small = np.abs(expected) < np.finfo(np.float64).tiny
    assert (np.abs(loss[small] - expected[small]) <= 2 * 5e-324).all()
    np.testing.assert_array_equal(loss[np.isinf(expected)], expected[np.isinf(expected)])


class TestReductions:
    def test_empty(self, dtype):
        x = np.empty((0, 3), dtype)
        assert kl_div(x, x, reduction="sum") == 0
        assert np.isnan(kl_div(x, x, reduction="mean"))
        assert np.isnan(kl_div(x, x, reduction="batchmean"))
        loss, grad = kl_div(x, x, reduction="none", return_grad=True)
        assert loss.shape == grad.shape == (0, 3)
        # An empty second axis: the sum, 0, over a first dimension of 5 (as PyTorch).
        assert kl_div(np.empty((5, 0), dtype), np.empty((5, 0)), reduction="batchmean") == 0

    def test_batchmean_of_a_zero_dim_input_is_the_sum(self, dtype):
        x, target = np.asarray(-1.0, dtype), np.asarray(0.5, dtype)
        assert kl_div(x, target, reduction="batchmean") == kl_div(x, target, reduction="sum")
        assert_close(kl_div(x, target, reduction="batchmean"), 0.5 * (np.log(0.5) + 1), dtype)

    def test_batchmean_is_sum_over_first_dimension(self, rng, dtype):
        x, target = make_case(rng, "kl", (6, 50, 7), dtype)
        total = kl_div(x, target, reduction="sum", return_grad=True)
        per_sample = kl_div(x, target, reduction="batchmean", return_grad=True)
        mean = kl_div(x, target, reduction="mean", return_grad=True)
        rtol = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(per_sample[0], total[0] / 6, rtol=rtol)
        np.testing.assert_allclose(per_sample[1], total[1] / 6, rtol=rtol)
        np.testing.assert_allclose(mean[0], total[0] / x.size, rtol=rtol)
        np.testing.assert_allclose(mean[1], total[1] / x.size, rtol=rtol)


@pytest.mark.parametrize("base", [None, 2.0])
@pytest.mark.parametrize("log_target", [False, True], ids=["p", "log_p"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradient_matches_finite_differences(rng, reduction, log_target, base):
    x, target = make_case(rng, "kl", (4, 6), np.float64, log_target=log_target)

    def total(z):
        return float(np.sum(kl_div(z, target, reduction=reduction, log_target=log_target,
                                   base=base)))

    _, grad = kl_div(x, target, reduction=reduction, log_target=log_target, base=base,
                     return_grad=True)
    for index in np.ndindex(*x.shape):
        numeric = fd_gradient(total, x, index, 1e-3)
        assert grad[index] == pytest.approx(numeric, rel=1e-7, abs=1e-9), index


@st.composite
def kl_cases(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9))
    log_target = draw(st.booleans())
    x = draw(hnp.arrays(dtype, shape, elements=st.one_of(
        st.floats(-1e4, 1e3, width=32), st.sampled_from([0.0, -np.inf, -1e30]))))
    if log_target:
        elements = st.one_of(st.floats(-1e3, 80, width=32), st.sampled_from([-np.inf, 0.0]))
    else:
        elements = st.one_of(st.floats(0, 1e6, width=32), st.sampled_from([0.0, 1e-38]))
    target = draw(hnp.arrays(dtype, shape, elements=elements))
    return x, target, log_target


@given(kl_cases(), st.sampled_from(REDUCTIONS), st.sampled_from([1, 2]))
def test_property_matches_reference(case, reduction, n_threads):
    x, target, log_target = case
    check_matches_reference("kl", x, target, reduction, log_target=log_target,
                            n_threads=n_threads)


def test_reference_is_independent_of_fastloss():
    # The same formula written three ways: the reference, the definition, the torch-like
    # xlogy form with the zero-target convention.
    x = np.log(np.array([0.2, 0.5, 0.3]))
    p = np.array([0.0, 0.6, 0.4])
    expected = np.array([0.0, 0.6 * np.log(0.6 / 0.5), 0.4 * np.log(0.4 / 0.3)])
    np.testing.assert_allclose(reference.kl_div(x, p, reduction="none"), expected,
                               rtol=1e-15)


# --- bad input ---------------------------------------------------------------------------

X = np.log(np.full((4, 3), 1 / 3))
P = np.full((4, 3), 1 / 3)


@pytest.mark.parametrize("bad", [-1e-3, -np.inf])
def test_negative_target_probabilities(bad):
    target = P.copy()
    target[1, 1] = bad
    with pytest.raises(ValueError, match=r"target must be >= 0 \(probabilities; pass "
                                         r"log_target=True for log-probabilities\), got "
                                         "values from"):
        kl_div(X, target)


def test_negative_log_targets_are_fine():
    assert np.isfinite(kl_div(X, np.log(P), log_target=True))


@pytest.mark.parametrize("reduction", ["avg", "MEAN", None, "batch_mean"])
def test_unknown_reduction(reduction):
    with pytest.raises(ValueError, match=r"reduction must be one of \('none', 'mean', "
                                         r"'sum', 'batchmean'\)"):
        kl_div(X, P, reduction=reduction)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_log_target_not_a_bool(value):
    with pytest.raises(TypeError, match="log_target must be a bool"):
        kl_div(X, P, log_target=value)
