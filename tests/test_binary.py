"""binary_cross_entropy and binary_cross_entropy_with_logits against the NumPy reference,
finite differences, known values and each other; every bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from elementwise_cases import (
    FUNCTIONS,
    SHAPES,
    check_matches_reference,
    fd_gradient,
    make_case,
)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastloss
from fastloss import _common, reference

bce = fastloss.binary_cross_entropy
bce_logits = fastloss.binary_cross_entropy_with_logits

REDUCTIONS = ["mean", "sum", "none"]
NAMES = ["bce", "bce_logits"]
SIGMOID_LOGITS = np.log(np.array([0.6, 0.9, 0.3]) / np.array([0.4, 0.1, 0.7]))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference(rng, dtype, name, shape, reduction):
    x, target = make_case(rng, name, shape, dtype)
    check_matches_reference(name, x, target, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_hard_targets_on_a_million_elements(rng, dtype, name, reduction):
    x, target = make_case(rng, name, (1000, 1000), dtype, soft=False)
    check_matches_reference(name, x, target, reduction, n_threads=2)


# weight shapes against an input of shape (N, D, C) = (6, 5, 7): periodic ones are read in
# place (scalar, (C,), (1, C), (D, C), full), the others are materialised.
WEIGHT_SHAPES = [(), (1,), (7,), (1, 7), (5, 7), (6, 5, 7), (6, 1, 1), (6, 5, 1), (5, 1),
                 (1, 5, 7), (6, 1, 7)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight_shape", WEIGHT_SHAPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_broadcast_weights(rng, dtype, name, weight_shape, reduction):
    x, target = make_case(rng, name, (6, 5, 7), dtype)
    weight = (rng.random(weight_shape) * 2).astype(dtype)
    check_matches_reference(name, x, target, reduction, weight=weight)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("pos_shape", [(), (7,), (5, 7), (6, 5, 7), (6, 5, 1)], ids=str)
@pytest.mark.parametrize("weight_shape", [None, (7,), (6, 1, 1)], ids=str)
def test_pos_weight(rng, dtype, weight_shape, pos_shape, reduction):
    x, target = make_case(rng, "bce_logits", (6, 5, 7), dtype)
    kwargs = {"pos_weight": (rng.random(pos_shape) * 4).astype(dtype)}
    if weight_shape is not None:
        kwargs["weight"] = (rng.random(weight_shape) * 2).astype(dtype)
    check_matches_reference("bce_logits", x, target, reduction, **kwargs)


@pytest.mark.parametrize(
    "shape, weight_shape",
    [((3000, 7), (7,)),                 # period 7, tiled to a multiple past the block
     ((5, 4099), (4099,)),              # a period longer than a block
     ((3, 4, 5000), (4, 5000)),         # a period of 20000 across blocks
     ((40000,), (40000,)),              # the full shape, read in place
     ((2, 3, 4096), (2, 1, 1))],        # materialised
    ids=["C7", "C4099", "DC", "full", "materialised"],
)
@pytest.mark.parametrize("name", NAMES)
def test_weights_across_block_boundaries(rng, dtype, name, shape, weight_shape):
    x, target = make_case(rng, name, shape, dtype)
    kwargs = {"weight": (rng.random(weight_shape) + 0.5).astype(dtype)}
    if name == "bce_logits":
        kwargs["pos_weight"] = (rng.random(shape[-1:]) * 3).astype(dtype)
    for reduction in ("sum", "none"):
        check_matches_reference(name, x, target, reduction, n_threads=3, **kwargs)


class TestPeriodicWeights:
    """How _common.periodic_weights passes weights to the kernels."""

    def test_periodic_is_a_view_or_a_small_copy(self):
        full = np.random.default_rng(0).random((60, 50, 7))
        assert np.shares_memory(_common.periodic_weights(full, "w", full.shape,
                                                         full.dtype, "x"), full)
        period = _common.periodic_weights(np.arange(7.0), "w", (6000, 7), full.dtype, "x")
        assert period.size >= 4096 and period.size % 7 == 0
        np.testing.assert_array_equal(period[:14], np.tile(np.arange(7.0), 2))

    def test_other_broadcasts_are_materialised(self):
        column = np.arange(6.0).reshape(6, 1)
        flat = _common.periodic_weights(column, "w", (6, 7), np.dtype(np.float32), "x")
        np.testing.assert_array_equal(flat[:14].reshape(2, 7),
                                      np.repeat(np.arange(2.0), 7).reshape(2, 7))
        assert flat.dtype == np.float32

    def test_no_weights_are_ones(self):
        ones = _common.periodic_weights(None, "w", (3, 4), np.dtype(np.float64), "x")
        assert (ones == 1).all() and not ones.flags.writeable


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_label_smoothing(rng, dtype, smoothing, reduction):
    x, target = make_case(rng, "bce_logits", (13, 9), dtype, soft=False)
    pos_weight = (rng.random(9) * 3).astype(dtype)
    loss, grad = check_matches_reference("bce_logits", x, target, reduction,
                                         label_smoothing=smoothing, pos_weight=pos_weight)
    # The same as the smoothed target itself (computed in float64 from the dtype's target).
    smoothed = target.astype(np.float64) * (1 - smoothing) + smoothing / 2
    ref = reference.binary_cross_entropy_with_logits(x, smoothed, pos_weight=pos_weight,
                                                     reduction=reduction, return_grad=True)
    np.testing.assert_allclose(loss, ref[0], rtol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(grad, ref[1], rtol=1e-5 if dtype == np.float32 else 1e-11,
                               atol=1e-7 if dtype == np.float32 else 1e-15)


def test_pos_weight_of_one_changes_nothing(rng, dtype):
    x, target = make_case(rng, "bce_logits", (50, 40), dtype)
    plain = bce_logits(x, target, reduction="none", return_grad=True)
    ones = bce_logits(x, target, pos_weight=np.ones(40, dtype), reduction="none",
                      return_grad=True)
    assert plain[0].tobytes() == ones[0].tobytes()
    assert plain[1].tobytes() == ones[1].tobytes()


class TestKnownValues:
    @pytest.mark.parametrize("p, bits", [(0.6, 0.7370), (0.9, 0.1520), (0.3, 1.7370)])
    def test_theory_figures_in_bits(self, dtype, p, bits):
        # docs/theory.md: BCE for the label 1, in bits.
        probs = np.array([p], dtype=dtype)
        assert round(float(bce(probs, np.ones(1, dtype), base=2)), 4) == bits
        logit = np.log(np.array([p / (1 - p)], dtype=dtype))
        assert round(float(bce_logits(logit, np.ones(1, dtype), base=2)), 4) == bits

    def test_bits_are_nats_over_ln2(self, rng, dtype):
        for name in NAMES:
            fn = FUNCTIONS[name][0]
            x, target = make_case(rng, name, (20, 30), dtype)
            nats, grad_nats = fn(x, target, return_grad=True)
            for base in (2, 10, 0.5, np.e):
                other, grad_other = fn(x, target, base=base, return_grad=True)
                rtol = 1e-6 if dtype == np.float32 else 1e-14
                np.testing.assert_allclose(other, nats / np.log(base), rtol=rtol)
                np.testing.assert_allclose(grad_other, grad_nats / np.log(base), rtol=rtol)

    def test_binary_entropy_at_its_maximum(self, dtype):
        # -0.5 log 0.5 - 0.5 log 0.5 = 1 bit at p = y = 0.5; the gradient is 0 at p = y.
        loss, grad = bce(np.full(4, 0.5, dtype), np.full(4, 0.5, dtype), base=2,
                         return_grad=True)
        assert loss == 1.0
        assert (grad == 0).all()

    def test_logit_zero(self, dtype):
        loss, grad = bce_logits(np.zeros(3, dtype), np.array([0.0, 1.0, 0.5], dtype),
                                reduction="none", return_grad=True)
        np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-7)
        np.testing.assert_allclose(grad, [0.5, -0.5, 0.0], atol=1e-7)


def test_logs_over_their_whole_range():
    # The kernels' own log and log1p (plain arithmetic that vectorises) within 1 ulp of
    # the C library's: BCE against the label 1 is -log p, against 0 it is -log1p(-p), both
    # above the floor of -100; from logits, against 1 it is log1p(exp(-x)) for x >= 0.
    rng = np.random.default_rng(6)
    p = np.concatenate([np.exp(rng.uniform(-100, 0, 200_000)), rng.random(100_000),
                        1 - np.exp(rng.uniform(-36, 0, 100_000)), [1.0, 0.5]])
    ones, zeros = np.ones_like(p), np.zeros_like(p)

    def ulps(values):
        return np.spacing(np.abs(values))

    got = bce(p, ones, reduction="none")
    assert (np.abs(got + np.log(p)) <= ulps(np.log(p))).all()
    got = bce(p, zeros, reduction="none")
    with np.errstate(divide="ignore"):
        expected = np.minimum(-np.log1p(-p), 100.0)
    assert (np.abs(got - expected) <= ulps(expected)).all()
    x = np.concatenate([rng.uniform(0, 40, 200_000), np.exp(rng.uniform(-40, 6, 100_000))])
    got = bce_logits(x, np.ones_like(x), reduction="none")
    expected = np.log1p(np.exp(-x))         # itself rounded twice
    assert (np.abs(got - expected) <= 3 * ulps(expected)).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_logits_equal_bce_of_sigmoid(rng, reduction):
    # Well-conditioned logits, where sigmoid(x) is far from 0 and 1 in float64.
    x = rng.uniform(-8, 8, size=(40, 25))
    target = rng.random((40, 25))
    weight = rng.random(25) + 0.5
    loss, grad = bce_logits(x, target, weight=weight, reduction=reduction, return_grad=True)
    p = 1.0 / (1.0 + np.exp(-x))
    loss_p, grad_p = bce(p, target, weight=weight, reduction=reduction, return_grad=True)
    np.testing.assert_allclose(loss, loss_p, rtol=1e-9)
    # dL/dx = dL/dp * p (1 - p)
    np.testing.assert_allclose(grad, grad_p * p * (1 - p), rtol=1e-9, atol=1e-15)


class TestExtremeValues:
    @pytest.mark.parametrize("big", [1e4, 1e30])
    def test_huge_logits(self, dtype, big):
        x = np.array([big, -big, big, -big, big, -big], dtype=dtype)
        target = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5], dtype=dtype)
        loss, grad = check_matches_reference("bce_logits", x, target, "none")
        np.testing.assert_allclose(loss, [0, 0, big, big, big / 2, big / 2], rtol=1e-7)
        np.testing.assert_array_equal(grad, [0, 0, 1, -1, 0.5, -0.5])
        pos = np.full(6, 3.0, dtype)
        loss, grad = check_matches_reference("bce_logits", x, target, "none", pos_weight=pos)
        np.testing.assert_allclose(loss, [0, 0, big, 3 * big, big / 2, 1.5 * big], rtol=1e-7)
        np.testing.assert_array_equal(grad, [0, 0, 1, -3, 0.5, -1.5])

    def test_infinite_logits(self, dtype):
        x = np.array([np.inf, -np.inf, np.inf, -np.inf, np.inf, -np.inf], dtype=dtype)
        target = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5], dtype=dtype)
        loss, grad = check_matches_reference("bce_logits", x, target, "none")
        np.testing.assert_array_equal(loss, [np.nan, np.nan, np.inf, np.inf, np.inf, np.inf])
        np.testing.assert_array_equal(grad, [0, 0, 1, -1, 0.5, -0.5])

    def test_large_logits_keep_float32_accuracy(self, rng):
        # Around 1e4 a float32 ulp is 1e-3: the term is formed before rounding.
        x = (1e4 + rng.standard_normal(200)).astype(np.float32) * np.sign(rng.random(200) - 0.5)
        target = rng.random(200).astype(np.float32)
        check_matches_reference("bce_logits", x.astype(np.float32), target, "none")

    def test_tiny_gradients_keep_relative_accuracy(self, dtype):
        # sigmoid(x) - 1 for x = 30 is -exp(-30): no cancellation against 1.
        x = np.array([30.0, 80.0, -30.0, -80.0], dtype=dtype)
        target = np.array([1.0, 1.0, 0.0, 0.0], dtype=dtype)
        loss, grad = bce_logits(x, target, reduction="none", return_grad=True)
        e = np.exp(-np.array([30.0, 80.0, 30.0, 80.0]))
        rtol = 1e-6 if dtype == np.float32 else 1e-14
        np.testing.assert_allclose(loss, np.log1p(e), rtol=rtol)
        np.testing.assert_allclose(grad, e / (1 + e) * [-1, -1, 1, 1], rtol=rtol)

    def test_probabilities_at_zero_and_one(self, dtype):
        p = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=dtype)
        y = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.5], dtype=dtype)
        loss, grad = check_matches_reference("bce", p, y, "none")
        np.testing.assert_array_equal(loss, [0, 100, 100, 0, 50, 50])
        # PyTorch's (p - y) / max(p (1 - p), eps), eps = 1e-12 in single precision.
        eps = float(np.float32(1e-12))
        expected = np.array([0, -1, 1, 0, -0.5, 0.5]) / eps
        np.testing.assert_array_equal(grad, expected.astype(dtype))

    def test_probabilities_near_zero_and_one(self, dtype):
        tiny = np.finfo(dtype).smallest_subnormal
        p = np.array([tiny, 1e-30, 1e-10, 1 - np.finfo(dtype).epsneg, 0.5], dtype=dtype)
        y = np.array([0.0, 0.0, 1.0, 0.0, 0.0], dtype=dtype)
        check_matches_reference("bce", p, y, "none")
        check_matches_reference("bce", p, 1 - y, "none")

    def test_log_floor_is_minus_100(self, dtype):
        p = np.array([np.exp(-99.0), np.exp(-101.0)], dtype=dtype)
        loss = bce(p, np.ones(2, dtype), reduction="none")
        np.testing.assert_allclose(loss, [-np.log(float(p[0])), 100.0], rtol=1e-6)
        assert loss[1] == 100


class TestNaN:
    @pytest.mark.parametrize("where", ["x", "target"])
    @pytest.mark.parametrize("name", NAMES)
    def test_nan_propagates(self, rng, dtype, name, where):
        x, target = make_case(rng, name, (30, 700), dtype)
        (x if where == "x" else target)[3, 5] = np.nan
        fn = FUNCTIONS[name][0]
        loss, grad = fn(x, target, reduction="none", return_grad=True)
        assert np.isnan(loss[3, 5]) and np.isnan(grad[3, 5])
        assert np.isnan(loss).sum() == 1 and np.isnan(grad).sum() == 1
        for reduction in ("mean", "sum"):
            assert np.isnan(fn(x, target, reduction=reduction, n_threads=2))
        check_matches_reference(name, x, target, "none")


class TestReductions:
    @pytest.mark.parametrize("name", NAMES)
    def test_empty(self, name, dtype):
        fn = FUNCTIONS[name][0]
        x = np.empty((0, 3), dtype)
        assert fn(x, x, reduction="sum") == 0
        assert np.isnan(fn(x, x, reduction="mean"))
        loss, grad = fn(x, x, reduction="none", return_grad=True)
        assert loss.shape == grad.shape == (0, 3)

    @pytest.mark.parametrize("name", NAMES)
    def test_zero_dim(self, name, dtype):
        fn, ref = FUNCTIONS[name]
        x = np.asarray(0.25, dtype)
        loss, grad = fn(x, np.asarray(1.0, dtype), reduction="none", return_grad=True)
        assert loss.shape == grad.shape == ()
        assert_close(loss, ref(x, 1.0, reduction="none"), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "name, options",
    [("bce", {}), ("bce", {"weight": "C"}), ("bce", {"base": 2.0}),
     ("bce_logits", {}), ("bce_logits", {"weight": "NC"}),
     ("bce_logits", {"pos_weight": "C"}), ("bce_logits", {"label_smoothing": 0.2}),
     ("bce_logits", {"weight": "C", "pos_weight": "NC", "label_smoothing": 0.1,
                     "base": 10.0})],
    ids=lambda v: v if isinstance(v, str) else "-".join(v) or "plain",
)
def test_gradient_matches_finite_differences(rng, name, options, reduction):
    shape = (4, 6)
    x, target = make_case(rng, name, shape, np.float64)
    if name == "bce":
        x = rng.uniform(0.05, 0.95, shape)        # away from the edges of [0, 1]
    kwargs = {}
    for key, value in options.items():
        if value == "C":
            kwargs[key] = rng.random(6) * 2 + 0.1
        elif value == "NC":
            kwargs[key] = rng.random(shape) * 2 + 0.1
        else:
            kwargs[key] = value
    fn = FUNCTIONS[name][0]

    def total(z):
        return float(np.sum(fn(z, target, reduction=reduction, **kwargs)))

    _, grad = fn(x, target, reduction=reduction, return_grad=True, **kwargs)
    h = 1e-4 if name == "bce" else 1e-3
    for index in np.ndindex(*shape):
        numeric = fd_gradient(total, x, index, h)
        assert grad[index] == pytest.approx(numeric, rel=1e-7, abs=1e-9), index


@st.composite
def binary_cases(draw):
    """A loss, its inputs (any shape up to 3-d, either dtype) and options."""
    name = draw(st.sampled_from(NAMES))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9))
    if name == "bce":
        values = st.one_of(st.floats(0, 1, width=32), st.sampled_from([0.0, 1.0, 1e-30]))
    else:
        values = st.one_of(st.floats(-1e5, 1e5, width=32),
                           st.sampled_from([0.0, 1e4, -1e4, 1e30, -1e30]))
    x = draw(hnp.arrays(dtype, shape, elements=values))
    target = draw(hnp.arrays(dtype, shape, elements=st.one_of(
        st.floats(0, 1, width=32), st.sampled_from([0.0, 1.0]))))
    kwargs = {}
    trailing = shape[draw(st.integers(0, len(shape))):]
    if draw(st.booleans()):
        kwargs["weight"] = draw(hnp.arrays(dtype, trailing, elements=st.floats(0, 10, width=32)))
    if name == "bce_logits":
        if draw(st.booleans()):
            kwargs["pos_weight"] = draw(hnp.arrays(dtype, shape[len(shape) - 1:],
                                                   elements=st.floats(0, 10, width=32)))
        kwargs["label_smoothing"] = draw(st.sampled_from([0.0, 0.05, 0.5]))
    return name, x, target, kwargs


@given(binary_cases(), st.sampled_from(REDUCTIONS), st.sampled_from([1, 2]))
def test_property_matches_reference(case, reduction, n_threads):
    name, x, target, kwargs = case
    check_matches_reference(name, x, target, reduction, n_threads=n_threads, **kwargs)


# --- bad input ---------------------------------------------------------------------------

X = np.full((4, 3), 0.5)
Y = np.zeros((4, 3))


@pytest.mark.parametrize("name, arg", [("bce", "probs"), ("bce_logits", "logits")])
class TestBadInput:
    @pytest.mark.parametrize("bad", [-0.5, 1.5, np.inf, -np.inf])
    def test_target_outside_unit_interval(self, name, arg, bad):
        target = Y.copy()
        target[1, 2] = bad
        with pytest.raises(ValueError, match=r"target must be in \[0, 1\] \(probabilities\), "
                                             "got values from"):
            FUNCTIONS[name][0](X, target)

    @pytest.mark.parametrize(
        "weight, exc, message",
        [(np.ones(4), ValueError, r"weight of shape \(4,\) does not broadcast to the shape "
                                  r"of ARG, \(4, 3\)"),
         (np.ones((2, 4, 3)), ValueError, r"weight of shape \(2, 4, 3\) does not broadcast"),
         (np.ones((4, 2)), ValueError, r"weight of shape \(4, 2\) does not broadcast"),
         ([1.0, -0.5, 1.0], ValueError, "weight must be non-negative, got -0.5"),
         ([1.0, np.nan, 1.0], ValueError, "weight must be finite"),
         ([1.0, np.inf, 1.0], ValueError, "weight must be finite"),
         (np.ones(3, dtype=complex), TypeError, "weight must be an array of real numbers"),
         (np.ones(3, dtype=bool), TypeError, "weight must be an array of real numbers"),
         (["a", "b", "c"], TypeError, "weight must be an array of real numbers")],
        ids=["long", "more-dims", "2d", "negative", "nan", "inf", "complex", "bool", "str"],
    )
    def test_bad_weight(self, name, arg, weight, exc, message):
        with pytest.raises(exc, match=message.replace("ARG", arg)):
            FUNCTIONS[name][0](X, Y, weight=weight)

    @pytest.mark.parametrize("reduction", ["avg", "MEAN", None, "batchmean"])
    def test_unknown_reduction(self, name, arg, reduction):
        with pytest.raises(ValueError, match=r"reduction must be one of \('none', 'mean', "
                                             r"'sum'\)"):
            FUNCTIONS[name][0](X, Y, reduction=reduction)

    def test_grad_out_must_not_overlap_weight(self, name, arg):
        weight = np.ones((4, 3))
        with pytest.raises(ValueError, match="grad_out must not share memory with weight"):
            FUNCTIONS[name][0](X, Y, weight=weight[0], grad_out=weight)


@pytest.mark.parametrize("bad", [-1e-3, 1.001, -np.inf, np.inf])
def test_probabilities_outside_unit_interval(bad):
    probs = X.copy()
    probs[2, 0] = bad
    with pytest.raises(ValueError, match=r"probs must be in \[0, 1\] \(probabilities\), got "
                                         "values from"):
        bce(probs, Y)


def test_nan_probabilities_are_not_an_error():
    probs = np.full((4, 3), np.nan)
    assert np.isnan(bce(probs, Y))


@pytest.mark.parametrize(
    "pos_weight, exc, message",
    [(np.ones(4), ValueError, r"pos_weight of shape \(4,\) does not broadcast to the "
                              r"shape of target, \(4, 3\)"),
     ([1.0, -2.0, 1.0], ValueError, "pos_weight must be non-negative, got -2.0"),
     ([1.0, np.nan, 1.0], ValueError, "pos_weight must be finite"),
     (np.ones(3, dtype=complex), TypeError, "pos_weight must be an array of real numbers")],
    ids=["long", "negative", "nan", "complex"],
)
def test_bad_pos_weight(pos_weight, exc, message):
    with pytest.raises(exc, match=message):
        bce_logits(X, Y, pos_weight=pos_weight)


def test_grad_out_must_not_overlap_pos_weight():
    buf = np.ones((4, 3))
    with pytest.raises(ValueError, match="grad_out must not share memory with pos_weight"):
        bce_logits(X, Y, pos_weight=buf[1], grad_out=buf)


_SMOOTHING_RANGE = r"label_smoothing must be a finite number in \[0, 1\]"


@pytest.mark.parametrize("value, exc, message",
                         [(-0.1, ValueError, _SMOOTHING_RANGE),
                          (1.5, ValueError, _SMOOTHING_RANGE),
                          (np.inf, ValueError, _SMOOTHING_RANGE),
                          (np.nan, ValueError, _SMOOTHING_RANGE),
                          ("0.1", TypeError, "label_smoothing must be a real number"),
                          (None, TypeError, "label_smoothing must be a real number")])
def test_bad_label_smoothing(value, exc, message):
    with pytest.raises(exc, match=message):
        bce_logits(X, Y, label_smoothing=value)
