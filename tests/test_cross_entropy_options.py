"""cross_entropy's options: class and sample weights, ignore_index, label smoothing, soft
targets, z-loss, return_lse and the class axis in the middle, against the reference,
PyTorch, finite differences, and each other."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest
from conftest import assert_close, check_fd_gradient, cross_entropy_terms, make_logits
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastloss
from fastloss import reference

REDUCTIONS = ["mean", "sum", "none"]
GRAD_ATOL = 1e-15


def loss_atol(dtype):
    return 1e-13 if dtype == np.float64 else 1e-12


def grad_atol(logits, target, kwargs, reduction):
    """With soft targets or smoothing a gradient entry is a difference scale * (slope * p_j
    - a_j) whose terms can nearly cancel: its error is a few ulps of the terms
    (conftest.cross_entropy_terms, the documented bound), not of the small difference."""
    eps = np.finfo(np.asarray(logits).dtype).eps
    terms = cross_entropy_terms(logits, target, reduction=reduction, **kwargs)
    return GRAD_ATOL + 8 * eps * terms


def make_case(rng, shape, dtype, *, axis=-1, soft=False, weight=False, ignore=False,
              smoothing=0.0, sample_weight=False, z_loss=0.0, ignore_index=-100):
    """Logits and keyword arguments for one combination of options."""
    logits = make_logits(rng, shape, dtype)
    axis = axis % len(shape)
    n_classes = shape[axis]
    batch = shape[:axis] + shape[axis + 1:]
    if soft:
        raw = rng.random(shape) ** 3           # some near-zero probabilities
        target = (raw / raw.sum(axis=axis, keepdims=True)).astype(dtype)
    else:
        target = rng.integers(0, n_classes, size=batch)
        if ignore:
            target[rng.random(batch) < 0.3] = ignore_index
    kwargs = {"axis": axis, "label_smoothing": smoothing, "z_loss": z_loss}
    if weight:
        kwargs["weight"] = rng.random(n_classes) * 2
    if sample_weight:
        sw = rng.random(batch) * 3
        sw[rng.random(batch) < 0.2] = 0.0
        kwargs["sample_weight"] = sw
    if ignore and not soft:
        kwargs["ignore_index"] = ignore_index
    return logits, target, kwargs


def check_against_reference(logits, target, kwargs, reduction):
    dtype = logits.dtype
    loss, grad, lse = fastloss.cross_entropy(logits, target, reduction=reduction,
                                             return_grad=True, return_lse=True, **kwargs)
    ref_loss, ref_grad, ref_lse = reference.cross_entropy(
        logits, target, reduction=reduction, return_grad=True, return_lse=True, **kwargs
    )
    assert_close(loss, ref_loss, dtype, ulps=8, atol=loss_atol(dtype), what="loss")
    assert_close(grad, ref_grad, dtype, ulps=8,
                 atol=grad_atol(logits, target, kwargs, reduction), what="grad")
    assert_close(lse, ref_lse, dtype, atol=loss_atol(dtype), what="lse")
    return loss, grad


OPTION_GRID = [
    dict(soft=soft, weight=weight, ignore=ignore, smoothing=smoothing, extras=extras)
    for soft, weight, ignore, smoothing, extras in itertools.product(
        [False, True], [False, True], [False, True], [0.0, 0.1],
        ["plain", "sample_weight", "z_loss", "both"])
    if not (soft and ignore)
]


def _options_id(opts):
    parts = ["soft" if opts["soft"] else "int"]
    parts += [name for name in ("weight", "ignore") if opts[name]]
    if opts["smoothing"]:
        parts.append("smooth")
    if opts["extras"] != "plain":
        parts.append(opts["extras"])
    return "-".join(parts)


def _case_kwargs(opts):
    extras = opts["extras"]
    return dict(soft=opts["soft"], weight=opts["weight"], ignore=opts["ignore"],
                smoothing=opts["smoothing"],
                sample_weight=extras in ("sample_weight", "both"),
                z_loss=1e-3 if extras in ("z_loss", "both") else 0.0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", OPTION_GRID, ids=_options_id)
def test_options_match_reference(rng, dtype, opts, reduction):
    logits, target, kwargs = make_case(rng, (23, 37), dtype, **_case_kwargs(opts))
    check_against_reference(logits, target, kwargs, reduction)


@pytest.mark.parametrize("opts", OPTION_GRID, ids=_options_id)
@pytest.mark.parametrize("shape, axis", [((3, 4500), -1), ((5, 7, 20), 1), ((3, 2500, 2), 1),
                                         ((4, 3, 6), 0)], ids=["long", "nchw", "long-nchw",
                                                               "axis0"])
def test_options_on_layouts(rng, dtype, opts, shape, axis):
    logits, target, kwargs = make_case(rng, shape, dtype, axis=axis, **_case_kwargs(opts))
    check_against_reference(logits, target, kwargs, "none")
    check_against_reference(logits, target, kwargs, "mean")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", OPTION_GRID, ids=_options_id)
def test_gradient_matches_finite_differences(rng, opts, reduction):
    logits, target, kwargs = make_case(rng, (4, 5), np.float64, **_case_kwargs(opts))

    def total(x):
        return float(np.sum(fastloss.cross_entropy(x, target, reduction=reduction, **kwargs)))

    _, grad = fastloss.cross_entropy(logits, target, reduction=reduction, return_grad=True,
                                     **kwargs)
    check_fd_gradient(total, logits, grad)


@pytest.mark.parametrize("opts", OPTION_GRID, ids=_options_id)
def test_strided_axis_is_bitwise_the_transposed_rows(rng, dtype, opts):
    # The tiled kernel and the class-last kernel run the same row code on the same values.
    logits, target, kwargs = make_case(rng, (3, 9, 37), dtype, axis=1, **_case_kwargs(opts))
    loss, grad, lse = fastloss.cross_entropy(logits, target, reduction="none",
                                             return_grad=True, return_lse=True, **kwargs)
    moved = dict(kwargs, axis=-1)
    moved_target = np.moveaxis(target, 1, -1).copy() if opts["soft"] else target
    loss2, grad2, lse2 = fastloss.cross_entropy(
        np.moveaxis(logits, 1, -1).copy(), moved_target, reduction="none", return_grad=True,
        return_lse=True, **moved,
    )
    assert loss.tobytes() == loss2.tobytes()
    assert lse.tobytes() == lse2.tobytes()
    np.testing.assert_array_equal(grad, np.moveaxis(grad2, -1, 1))


@pytest.mark.parametrize("opts", OPTION_GRID, ids=_options_id)
@pytest.mark.parametrize("shape, axis", [((30, 3000), -1), ((4, 6, 21), 1)],
                         ids=["rows", "strided"])
def test_in_place_equals_out_of_place(rng, dtype, opts, shape, axis):
    logits, target, kwargs = make_case(rng, shape, dtype, axis=axis, **_case_kwargs(opts))
    loss, grad = fastloss.cross_entropy(logits, target, return_grad=True, **kwargs)
    buffer = logits.copy()
    loss2, grad2 = fastloss.cross_entropy(buffer, target, grad_out=buffer, **kwargs)
    assert grad2 is buffer
    assert loss2.tobytes() == loss.tobytes()
    assert grad2.tobytes() == grad.tobytes()


@pytest.mark.parametrize("axis", [-1, 1])
def test_in_place_with_options_allocates_nothing_batch_sized(rng, axis):
    shape = (2000, 1000) if axis == -1 else (20, 1000, 100)
    logits, target, kwargs = make_case(rng, shape, np.float32, axis=axis, weight=True,
                                       ignore=True, smoothing=0.1, sample_weight=True,
                                       z_loss=1e-4)
    tracemalloc.start()
    try:
        fastloss.cross_entropy(logits, target, grad_out=logits, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < logits.nbytes / 20, peak


@pytest.mark.parametrize("opts", [o for o in OPTION_GRID if o["extras"] == "both"],
                         ids=_options_id)
@pytest.mark.parametrize("shape, axis", [((3000, 100), -1), ((40, 50, 60), 1)],
                         ids=["rows", "strided"])
def test_same_bits_for_any_thread_count(rng, opts, shape, axis):
    logits, target, kwargs = make_case(rng, shape, np.float32, axis=axis, **_case_kwargs(opts))
    runs = [fastloss.cross_entropy(logits, target, n_threads=n, return_grad=True, **kwargs)
            for n in (1, 2, 3)]
    for loss, grad in runs[1:]:
        assert loss.tobytes() == runs[0][0].tobytes()
        assert grad.tobytes() == runs[0][1].tobytes()


def test_loss_is_same_bits_with_or_without_grad(rng, dtype):
    logits, target, kwargs = make_case(rng, (20, 4500), dtype, soft=True, weight=True,
                                       smoothing=0.2, sample_weight=True, z_loss=1e-3)
    alone = fastloss.cross_entropy(logits, target, **kwargs)
    fused, _ = fastloss.cross_entropy(logits, target, return_grad=True, **kwargs)
    assert alone.tobytes() == fused.tobytes()


class TestSemantics:
    def test_all_ignored_mean_is_nan_with_zero_gradient(self, dtype):
        logits = np.ones((3, 4), dtype=dtype)
        loss, grad = fastloss.cross_entropy(logits, [-100, -100, -100], return_grad=True,
                                            label_smoothing=0.1)
        assert np.isnan(loss)
        assert (grad == 0).all()
        assert fastloss.cross_entropy(logits, [-100] * 3, reduction="sum") == 0

    def test_ignored_rows_are_never_range_checked(self, rng):
        logits = make_logits(rng, (4, 3), np.float64)
        target = np.array([0, 7, 2, 7])
        loss = fastloss.cross_entropy(logits, target, ignore_index=7, reduction="none")
        assert loss[1] == 0 and loss[3] == 0
        ref = reference.cross_entropy(logits, target, ignore_index=7, reduction="none")
        np.testing.assert_allclose(loss, ref, rtol=1e-12)

    def test_ignore_index_inside_the_class_range(self, rng):
        logits = make_logits(rng, (6, 3), np.float64)
        target = np.array([0, 1, 2, 1, 0, 1])
        loss, grad = fastloss.cross_entropy(logits, target, ignore_index=1, return_grad=True)
        kept = target != 1
        expected = fastloss.cross_entropy(logits[kept], target[kept])
        assert loss == pytest.approx(expected, rel=1e-14)
        assert (grad[~kept] == 0).all()

    def test_ignored_rows_skip_nan_logits(self, dtype):
        logits = np.array([[np.nan, 1.0], [0.0, 1.0]], dtype=dtype)
        loss, grad = fastloss.cross_entropy(logits, [-100, 1], return_grad=True)
        assert np.isfinite(loss) and (grad[0] == 0).all()

    def test_sample_weight_zero_is_like_ignoring(self, rng):
        logits = make_logits(rng, (5, 4), np.float64)
        target = np.array([0, 1, 2, 3, 0])
        sw = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
        ignored = np.where(sw == 0, -100, target)
        a = fastloss.cross_entropy(logits, target, sample_weight=sw, return_grad=True)
        b = fastloss.cross_entropy(logits, ignored, return_grad=True)
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])

    def test_sample_weight_is_like_repeating_rows(self, rng):
        logits = make_logits(rng, (3, 5), np.float64)
        target = np.array([4, 0, 2])
        weight = rng.random(5)
        repeated = fastloss.cross_entropy(np.repeat(logits, [2, 1, 3], axis=0),
                                          np.repeat(target, [2, 1, 3]), weight=weight)
        weighted = fastloss.cross_entropy(logits, target, weight=weight,
                                          sample_weight=[2.0, 1.0, 3.0])
        assert weighted == pytest.approx(repeated, rel=1e-14)

    def test_z_loss_adds_weighted_square_of_lse(self, rng):
        logits = make_logits(rng, (4, 6), np.float64)
        target = np.array([0, 5, -100, 3])
        sw = np.array([1.0, 2.0, 5.0, 0.5])
        weight = rng.random(6)
        base = fastloss.cross_entropy(logits, target, reduction="none", weight=weight,
                                      sample_weight=sw)
        with_z = fastloss.cross_entropy(logits, target, reduction="none", weight=weight,
                                        sample_weight=sw, z_loss=0.01)
        lse = fastloss.logsumexp(logits)
        expected = base + np.where(target == -100, 0.0, 0.01 * sw * lse**2)
        np.testing.assert_allclose(with_z, expected, rtol=1e-14)

    def test_soft_targets_are_not_renormalised(self, rng, dtype):
        logits = make_logits(rng, (3, 4), dtype)
        target = np.array([[0.5, 0.5, 0.5, 0.5], [0, 0, 0, 0], [0.1, 0, 0, 0]], dtype=dtype)
        loss = fastloss.cross_entropy(logits, target, reduction="none")
        expected = -(target.astype(float) * reference.log_softmax(logits)).sum(axis=1)
        assert_close(loss, expected, dtype, atol=loss_atol(dtype))
        assert loss[1] == 0

    def test_hard_label_soft_target_equals_class_target(self, rng, dtype):
        logits = make_logits(rng, (8, 5), dtype)
        target = rng.integers(0, 5, 8)
        weight = rng.random(5)
        onehot = np.eye(5, dtype=dtype)[target]
        hard = fastloss.cross_entropy(logits, target, reduction="none", weight=weight,
                                      label_smoothing=0.3)
        soft = fastloss.cross_entropy(logits, onehot, reduction="none", weight=weight,
                                      label_smoothing=0.3)
        assert_close(soft, hard.astype(float), dtype, ulps=4, atol=loss_atol(dtype))

    def test_masked_classes_with_zero_coefficient_contribute_zero(self, dtype):
        # PyTorch gives NaN here (0 * -inf); fastloss takes 0 log 0 = 0.
        logits = np.array([[0.0, -np.inf, 1.0]], dtype=dtype)
        soft = np.array([[0.3, 0.0, 0.7]], dtype=dtype)
        loss, grad = fastloss.cross_entropy(logits, soft, return_grad=True)
        assert np.isfinite(loss) and np.isfinite(grad).all() and grad[0, 1] == 0
        weighted = fastloss.cross_entropy(logits, [2], weight=[1.0, 0.0, 1.0],
                                          label_smoothing=0.1)
        assert np.isfinite(weighted)
        # A masked class with a positive coefficient makes the loss infinite, as it must.
        assert fastloss.cross_entropy(logits, [2], label_smoothing=0.1) == np.inf

    def test_smoothing_one_is_uniform_target(self, rng):
        logits = make_logits(rng, (4, 6), np.float64)
        loss = fastloss.cross_entropy(logits, [0, 1, 2, 3], label_smoothing=1.0,
                                      reduction="none")
        expected = -reference.log_softmax(logits).mean(axis=1)
        np.testing.assert_allclose(loss, expected, rtol=1e-13)

    @pytest.mark.parametrize("big", [1e4, 1e30])
    def test_large_logits_with_smoothing_stay_accurate(self, dtype, big):
        logits = np.array([[big, big - 1, -big], [big, 0.0, big]], dtype=dtype)
        target = np.array([1, 0])
        kwargs = {"label_smoothing": 0.1, "weight": np.array([0.5, 1.0, 2.0])}
        check_against_reference(logits, target, kwargs, "none")

    def test_return_lse_matches_logsumexp(self, rng, dtype):
        logits = make_logits(rng, (5, 3, 7), dtype)
        target = rng.integers(0, 3, (5, 7))
        target[0, 0] = -100
        _, lse = fastloss.cross_entropy(logits, target, axis=1, return_lse=True)
        assert lse.shape == (5, 7) and lse.dtype == dtype
        np.testing.assert_array_equal(lse, fastloss.logsumexp(logits, axis=1))


@st.composite
def option_cases(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(0, 8))
    c = draw(st.integers(1, 40))
    elements = st.one_of(st.floats(-30, 30, width=32), st.just(0.0))
    logits = draw(hnp.arrays(dtype, (n, c), elements=elements))
    kwargs = {
        "label_smoothing": draw(st.sampled_from([0.0, 0.05, 0.5])),
        "z_loss": draw(st.sampled_from([0.0, 1e-2])),
    }
    # 0 or normal weights: with subnormal ones the reference itself rounds s * loss in the
    # subnormal range (extreme scales have their own exact test below).
    weights = st.one_of(st.just(0.0), st.floats(1e-300, 3))
    if draw(st.booleans()):
        kwargs["weight"] = draw(hnp.arrays(np.float64, c, elements=weights))
    if draw(st.booleans()):
        kwargs["sample_weight"] = draw(hnp.arrays(np.float64, n, elements=weights))
    if draw(st.booleans()):
        target = draw(hnp.arrays(dtype, (n, c), elements=st.floats(0, 1, width=32)))
    else:
        target = draw(hnp.arrays(np.int64, n, elements=st.integers(-1, c - 1)))
        kwargs["ignore_index"] = -1
    return logits, target, kwargs


@given(option_cases(), st.sampled_from(REDUCTIONS))
def test_property_options_match_reference(case, reduction):
    logits, target, kwargs = case
    dtype = logits.dtype
    loss, grad = fastloss.cross_entropy(logits, target, reduction=reduction, return_grad=True,
                                        **kwargs)
    ref_loss, ref_grad = reference.cross_entropy(logits, target, reduction=reduction,
                                                 return_grad=True, **kwargs)
    # Sums over up to 8 weighted rows of losses up to ~1e2: a few ulp of the total.
    atol = 1e-11 if dtype == np.float64 else 1e-6
    assert_close(loss, ref_loss, dtype, ulps=16, atol=atol, what="loss")
    assert_close(grad, ref_grad, dtype, ulps=16,
                 atol=grad_atol(logits, target, kwargs, reduction), what="grad")


@pytest.mark.parametrize("scale", [5e-324, 1e-310, 1e-200, 1e300])
@pytest.mark.parametrize("which", ["weight", "sample_weight", "both"])
def test_mean_with_uniform_weights_of_any_scale(rng, scale, which):
    # A mean does not depend on the weights' scale, so uniform weights give the unweighted
    # mean even where the denominator underflows (subnormal) or 1 / denominator would.
    logits = make_logits(rng, (3, 4), np.float64)
    target = np.array([0, 1, 3])
    kwargs = {} if which == "weight" else {"z_loss": 1e-2}     # z-loss ignores class weight
    expected = fastloss.cross_entropy(logits, target, return_grad=True, **kwargs)
    if which in ("weight", "both"):
        kwargs["weight"] = np.full(4, scale)
    if which in ("sample_weight", "both"):
        kwargs["sample_weight"] = np.full(3, scale)
    if which == "both":
        kwargs.pop("z_loss")
        expected = fastloss.cross_entropy(logits, target, return_grad=True)
    loss, grad = fastloss.cross_entropy(logits, target, return_grad=True, **kwargs)
    np.testing.assert_allclose(loss, expected[0], rtol=1e-13)
    np.testing.assert_allclose(grad, expected[1], rtol=1e-13, atol=1e-16)


def test_mean_of_soft_targets_with_tiny_class_weights(rng):
    # The soft "mean" divides by the number of rows only: class weights far from 1 scale
    # the loss and must not be normalised away.
    logits = make_logits(rng, (3, 4), np.float64)
    target = reference.softmax(make_logits(rng, (3, 4), np.float64))
    weight = np.full(4, 3e-217)
    loss = fastloss.cross_entropy(logits, target, weight=weight)
    plain = fastloss.cross_entropy(logits, target)
    assert loss == pytest.approx(plain * 3e-217, rel=1e-13)
