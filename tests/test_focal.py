"""The focal losses: sigmoid_focal_loss (elementwise) and focal_loss (over softmax rows)
against the NumPy reference, finite differences and the losses they generalise; their
accuracy where 1 - p_t is tiny; every bad input (PyTorch and torchvision:
test_torch_focal.py). The properties shared
with the other elementwise losses (thread counts, SIMD builds, layouts, in place) come
from the registry in elementwise_cases.py."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from elementwise_cases import check_matches_reference, fd_gradient, make_case

import fastloss
from fastloss import reference

sigmoid_focal = fastloss.sigmoid_focal_loss
focal = fastloss.focal_loss

SHAPES = [(0,), (), (1,), (7,), (13, 3), (17, 33), (3, 4099)]
FOCAL_OPTIONS = [{}, {"alpha": -1.0}, {"alpha": 0.9, "gamma": 0.5}, {"gamma": 0.0},
                 {"gamma": 1.0}, {"gamma": 3.7}, {"weight": "C"}]


def _options(rng, options, shape, dtype):
    return {key: ((rng.random(shape[-1:]) + 0.1).astype(dtype) if value == "C" else value)
            for key, value in options.items()}


# --- sigmoid_focal_loss ------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("options", FOCAL_OPTIONS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_sigmoid_focal_matches_reference(rng, dtype, shape, options, reduction):
    x, target = make_case(rng, "focal", shape, dtype)
    kwargs = _options(rng, options, shape, dtype) if shape else {
        k: v for k, v in options.items() if k != "weight"}
    check_matches_reference("focal", x, target, reduction, **kwargs)


@pytest.mark.parametrize("soft", [True, False])
def test_sigmoid_focal_hard_and_soft_targets(rng, dtype, soft):
    x, target = make_case(rng, "focal", (40, 50), dtype, soft=soft)
    check_matches_reference("focal", x, target, "none", gamma=2.5, alpha=0.3)


@pytest.mark.parametrize("options", [{}, {"gamma": 0.5, "alpha": -1.0}, {"gamma": 3.0}],
                         ids=str)
def test_sigmoid_focal_gradient_by_finite_differences(rng, options):
    x = rng.standard_normal((5, 7)) * 3
    target = rng.random((5, 7))
    target[0] = 1.0
    target[1] = 0.0
    _, grad = sigmoid_focal(x, target, reduction="sum", return_grad=True, **options)

    def f(z):
        return float(reference.sigmoid_focal_loss(z, target, reduction="sum", **options))

    for index in [(0, 0), (1, 3), (2, 6), (4, 2)]:
        numeric = fd_gradient(f, x, index, 1e-3)
        assert abs(grad[index] - numeric) <= 1e-8 * max(1.0, abs(numeric)), index


def test_sigmoid_focal_without_focus_is_bce_with_logits(rng, dtype):
    x, target = make_case(rng, "focal", (31, 17), dtype)
    loss, grad = sigmoid_focal(x, target, alpha=-1.0, gamma=0.0, reduction="none",
                               return_grad=True)
    bce, bce_grad = fastloss.binary_cross_entropy_with_logits(x, target, reduction="none",
                                                              return_grad=True)
    assert_close(loss, bce.astype(np.float64), dtype, ulps=2, rtol64=4e-16,
                 atol=4e-16 * np.abs(bce).max(), what="loss")
    assert_close(grad, bce_grad.astype(np.float64), dtype, ulps=2, rtol64=4e-16,
                 atol=4e-16 * np.abs(bce_grad).max(), what="grad")


def test_sigmoid_focal_alpha_weighs_the_classes(rng):
    x = rng.standard_normal(64)
    target = (rng.random(64) < 0.5).astype(float)
    plain = sigmoid_focal(x, target, alpha=-1.0)
    weighted = sigmoid_focal(x, target, alpha=0.2)
    np.testing.assert_allclose(weighted, np.where(target == 1, 0.2, 0.8) * plain, rtol=1e-15)


def test_sigmoid_focal_confident_elements_keep_their_relative_accuracy():
    # 1 - p_t is sigmoid(-|x|) for a correct label: 1e-13 at |x| = 30, where 1 - p_t
    # computed as written is 0 in double.
    x = np.array([30.0, -30.0, 16.0, -88.0])
    target = np.array([1.0, 0.0, 1.0, 0.0])
    loss = sigmoid_focal(x, target, alpha=-1.0)
    m = np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x)))
    exact = m**2 * np.log1p(np.exp(-np.abs(x)))
    np.testing.assert_allclose(loss, exact, rtol=1e-14)
    assert np.all(loss > 0)


def test_sigmoid_focal_known_values():
    # one element at x = 0 against 1: 0.25 * (1/2)^2 * log 2
    assert sigmoid_focal(np.array([0.0]), np.array([1.0]))[0] == pytest.approx(
        0.25 * 0.25 * np.log(2), rel=1e-15)
    assert float(sigmoid_focal(np.zeros(4), np.ones(4), reduction="mean")) == pytest.approx(
        0.25 * 0.25 * np.log(2), rel=1e-15)


def test_sigmoid_focal_special_values():
    x = np.array([np.nan, np.inf, -np.inf, 1e300, -1e300])
    loss, grad = sigmoid_focal(x, np.array([1.0, 0.0, 1.0, 1.0, 0.0]), reduction="none",
                               return_grad=True)
    assert np.isnan(loss[0]) and np.isnan(grad[0])
    assert loss[1] == np.inf and loss[2] == np.inf
    assert loss[3] == 0.0 and loss[4] == 0.0 and grad[3] == 0.0 and grad[4] == 0.0


class TestSigmoidFocalBadArguments:
    @pytest.mark.parametrize("alpha", [1.5, np.inf, np.nan])
    def test_alpha(self, alpha):
        with pytest.raises(ValueError, match="alpha must be a finite number"):
            sigmoid_focal(np.zeros(3), np.ones(3), alpha=alpha)

    @pytest.mark.parametrize("gamma", [-0.5, np.inf, np.nan])
    def test_gamma(self, gamma):
        with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
            sigmoid_focal(np.zeros(3), np.ones(3), gamma=gamma)

    def test_gamma_type(self):
        with pytest.raises(TypeError, match="gamma must be a real number"):
            sigmoid_focal(np.zeros(3), np.ones(3), gamma="2")

    @pytest.mark.parametrize("bad", [-0.1, 1.5])
    def test_targets_outside_the_unit_interval(self, bad):
        with pytest.raises(ValueError, match=r"target must be in \[0, 1\] \(probabilities\)"):
            sigmoid_focal(np.zeros(3), np.array([0.0, bad, 1.0]))

    def test_reduction(self):
        with pytest.raises(ValueError, match="reduction must be one of"):
            sigmoid_focal(np.zeros(3), np.ones(3), reduction="batchmean")


# --- focal_loss --------------------------------------------------------------------------

def _rows_case(rng, shape, dtype, axis=-1, scale=3.0):
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    n_classes = shape[axis]
    batch = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    y = rng.integers(0, n_classes, batch)
    return x, y


ROW_SHAPES = [(0, 5), (1, 1), (6, 2), (9, 10), (33, 17), (8, 1000), (3, 40000)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{}, {"gamma": 0.5}, {"gamma": 4.0},
                                     {"weight": True, "sample_weight": True},
                                     {"ignore_index": 1}], ids=str)
@pytest.mark.parametrize("shape", ROW_SHAPES, ids=str)
def test_focal_matches_reference(rng, dtype, shape, options, reduction):
    x, y = _rows_case(rng, shape, dtype)
    kwargs = dict(options)
    if kwargs.pop("weight", None):
        kwargs["weight"] = rng.random(shape[1]) + 0.1
    if kwargs.pop("sample_weight", None):
        kwargs["sample_weight"] = rng.random(shape[0])
    loss, grad = focal(x, y, reduction=reduction, return_grad=True, **kwargs)
    ref_loss, ref_grad = reference.focal_loss(x, y, reduction=reduction, return_grad=True,
                                              **kwargs)
    ref_ce = reference.cross_entropy(x, y, reduction="none",
                                     ignore_index=kwargs.get("ignore_index", -100))
    # each row: the error of its cross-entropy (a few ulps of the row's logsumexp and its
    # target's logit, which cancel) carried by the factor, and a few roundings
    lse = np.abs(reference.logsumexp(x)) if x.size else np.zeros(shape[0])
    eps = np.finfo(dtype).eps
    row_atol = 8 * eps * (lse + np.abs(x).max(axis=-1, initial=0.0)) * np.abs(
        np.asarray(ref_loss) / np.where(ref_ce > 0, ref_ce, 1.0) if reduction == "none"
        else 1.0)
    if reduction == "none":
        assert loss.shape == shape[:1] and loss.dtype == dtype
        assert_close(loss, ref_loss, dtype, ulps=8, rtol64=1e-13, atol=row_atol, what="loss")
    else:
        assert isinstance(loss, np.dtype(dtype).type)
        assert_close(loss, ref_loss, dtype, ulps=8, rtol64=1e-13,
                     atol=8 * eps * float(np.sum(lse + np.abs(x).max(axis=-1, initial=0))),
                     what="loss")
    assert grad.shape == x.shape and grad.dtype == dtype
    assert_close(grad, ref_grad, dtype, ulps=8, rtol64=1e-13,
                 atol=8 * eps * np.abs(ref_grad).max(initial=0.0), what="grad")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{}, {"weight": True}, {"sample_weight": True},
                                     {"ignore_index": 0}], ids=str)
def test_focal_at_gamma_0_is_cross_entropy_bit_for_bit(rng, dtype, options, reduction):
    x, y = _rows_case(rng, (65, 10), dtype)
    kwargs = dict(options)
    if kwargs.pop("weight", None):
        kwargs["weight"] = rng.random(10) + 0.1
    if kwargs.pop("sample_weight", None):
        kwargs["sample_weight"] = rng.random(65)
    got = focal(x, y, gamma=0.0, reduction=reduction, return_grad=True, **kwargs)
    want = fastloss.cross_entropy(x, y, reduction=reduction, return_grad=True, **kwargs)
    for a, b in zip(got, want, strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
def test_focal_gradient_by_finite_differences(rng, gamma):
    x, y = _rows_case(rng, (4, 6), np.float64, scale=1.5)
    weight = rng.random(6) + 0.5
    _, grad = focal(x, y, gamma=gamma, weight=weight, return_grad=True)

    def f(z):
        return float(reference.focal_loss(z, y, gamma=gamma, weight=weight))

    for index in [(0, 0), (1, 5), (2, int(y[2])), (3, 3)]:
        numeric = fd_gradient(f, x, index, 1e-4)
        assert abs(grad[index] - numeric) <= 1e-9 * max(1.0, abs(numeric)), index


def test_focal_class_axis_and_leading_axes(rng, dtype):
    x, y = _rows_case(rng, (4, 7, 3), dtype, axis=1)
    loss, grad = focal(x, y, axis=1, reduction="none", return_grad=True)
    ref_loss, ref_grad = reference.focal_loss(x, y, axis=1, reduction="none",
                                              return_grad=True)
    assert loss.shape == (4, 3)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4 if dtype == np.float32 else 1e-11,
                               atol=1e-7 if dtype == np.float32 else 1e-15)


def test_focal_confident_rows_keep_their_relative_accuracy():
    # p_y = 1 - 2e^-30 / (1 + 2e^-30): 1 - p_y as written would be 0 or 1e-13 +- 1e-16
    x = np.array([[30.0, 0.0, 0.0], [20.0, 0.0, -5.0]])
    y = np.array([0, 0])
    loss = focal(x, y, gamma=2.0, reduction="none")
    others = np.array([2 * np.exp(-30.0), np.exp(-20.0) + np.exp(-25.0)])
    ce = np.log1p(others)
    exact = (-np.expm1(-ce)) ** 2 * ce
    np.testing.assert_allclose(loss, exact, rtol=1e-14)


@pytest.mark.parametrize("shape", [(2000, 37), (3001, 10), (777, 3)], ids=str)
def test_focal_same_bits_for_any_thread_count(rng, dtype, shape):
    x, y = _rows_case(rng, shape, dtype)
    results = [focal(x, y, reduction=reduction, return_grad=True, n_threads=n)
               for reduction in ("mean", "none") for n in (1, 2, 3)]
    for k in (0, 3):
        for other in results[k + 1:k + 3]:
            assert np.asarray(other[0]).tobytes() == np.asarray(results[k][0]).tobytes()
            assert other[1].tobytes() == results[k][1].tobytes()


def test_focal_in_place_gradient(rng, dtype):
    x, y = _rows_case(rng, (50, 9), dtype)
    loss, grad = focal(x, y, return_grad=True)
    in_place = x.copy()
    loss2, grad2 = focal(in_place, y, grad_out=in_place)
    assert grad2 is in_place
    assert loss2 == loss and grad2.tobytes() == grad.tobytes()


def test_focal_mean_over_no_counted_rows():
    loss, grad = focal(np.ones((3, 4)), np.full(3, -100), return_grad=True)
    assert np.isnan(loss) and not grad.any()


class TestFocalBadArguments:
    def test_probability_targets(self):
        with pytest.raises(TypeError, match="focal_loss takes integer class targets"):
            focal(np.zeros((2, 3)), np.full((2, 3), 1 / 3))

    @pytest.mark.parametrize("gamma", [-1.0, np.inf, np.nan])
    def test_gamma(self, gamma):
        with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
            focal(np.zeros((2, 3)), np.array([0, 1]), gamma=gamma)

    def test_targets_out_of_range(self):
        with pytest.raises(IndexError, match="target"):
            focal(np.zeros((2, 3)), np.array([0, 3]))

    def test_weight_shape(self):
        with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
            focal(np.zeros((2, 3)), np.array([0, 1]), weight=np.ones(2))

    def test_negative_sample_weight(self):
        with pytest.raises(ValueError, match="sample_weight must be non-negative"):
            focal(np.zeros((2, 3)), np.array([0, 1]), sample_weight=np.array([1.0, -1.0]))

    def test_reduction(self):
        with pytest.raises(ValueError, match="reduction must be one of"):
            focal(np.zeros((2, 3)), np.array([0, 1]), reduction="avg")
