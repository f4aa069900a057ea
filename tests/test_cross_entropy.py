"""fastloss.cross_entropy against the NumPy reference, finite differences and known values."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import assert_close, check_fd_gradient, make_logits, make_target
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastloss
from fastloss import reference

REDUCTIONS = ["mean", "sum", "none"]

# (N, C): empty batch, single row/class, two classes, SIMD tails, the chunk boundary
# (2048) and either side of it, several chunks, and a GPT-2 vocabulary.
SHAPES = [(0, 5), (1, 1), (5, 1), (1, 7), (5, 2), (17, 33), (4, 2047), (3, 2048),
          (3, 2049), (2, 5000), (33, 1000), (4, 50257)]


def loss_atol(dtype):
    """Absolute slack for losses near 0 (see assert_close)."""
    return 1e-13 if dtype == np.float64 else 1e-12


GRAD_ATOL = 1e-15


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_reference(rng, dtype, shape, reduction):
    logits = make_logits(rng, shape, dtype)
    target = make_target(rng, shape[:1], shape[1])
    loss, grad = fastloss.cross_entropy(logits, target, reduction=reduction, return_grad=True)
    ref_loss, ref_grad = reference.cross_entropy(
        logits, target, reduction=reduction, return_grad=True
    )
    if reduction == "none":
        assert loss.shape == target.shape
    else:
        assert isinstance(loss, dtype.type)
    assert_close(loss, ref_loss, dtype, atol=loss_atol(dtype), what="loss")
    assert grad.shape == logits.shape
    assert_close(grad, ref_grad, dtype, atol=GRAD_ATOL, what="grad")


@pytest.mark.parametrize("target_class, expected", [(1, 3.52975), (0, 0.02975)])
def test_theory_worked_example(dtype, target_class, expected):
    # docs/theory.md: scores dog 2.3, cat -1.2; probabilities 0.97069, 0.02931.
    logits = np.array([[2.3, -1.2]], dtype=dtype)
    loss, grad = fastloss.cross_entropy(logits, np.array([target_class]), return_grad=True)
    assert round(float(loss), 5) == expected
    probs = np.array([0.97069, 0.02931])
    onehot = np.eye(2)[target_class]
    np.testing.assert_allclose(grad[0], probs - onehot, atol=1e-5)


def test_unbatched_logits(dtype, rng):
    logits = make_logits(rng, (6,), dtype)
    loss = fastloss.cross_entropy(logits, 4, reduction="none")
    assert loss.shape == ()
    assert_close(loss, reference.cross_entropy(logits, 4, reduction="none"), dtype,
                 atol=loss_atol(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_loss_is_same_bits_with_or_without_grad(rng, dtype, reduction):
    logits = make_logits(rng, (40, 4500), dtype)          # several chunks per row
    target = make_target(rng, 40, 4500)
    alone = fastloss.cross_entropy(logits, target, reduction=reduction)
    fused, _ = fastloss.cross_entropy(logits, target, reduction=reduction, return_grad=True)
    np.testing.assert_array_equal(alone, fused)


@pytest.mark.parametrize("shape", [(3000, 100), (64, 5000)], ids=["many-rows", "long-rows"])
def test_same_bits_for_any_thread_count(rng, dtype, shape):
    logits = make_logits(rng, shape, dtype)
    target = make_target(rng, shape[0], shape[1])
    results = [
        fastloss.cross_entropy(logits, target, reduction=reduction, n_threads=n,
                               return_grad=True)
        for reduction in ("mean", "sum")
        for n in (1, 2, 3, -1, None)
    ]
    for i in range(0, len(results), 5):
        for loss, grad in results[i + 1: i + 5]:
            assert loss.tobytes() == results[i][0].tobytes()
            np.testing.assert_array_equal(grad, results[i][1])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_in_place_gradient_equals_out_of_place(rng, dtype, reduction):
    logits = make_logits(rng, (50, 3000), dtype)
    target = make_target(rng, 50, 3000)
    loss, grad = fastloss.cross_entropy(logits, target, reduction=reduction, return_grad=True)
    buffer = logits.copy()
    loss2, grad2 = fastloss.cross_entropy(buffer, target, reduction=reduction, grad_out=buffer)
    assert grad2 is buffer
    np.testing.assert_array_equal(loss2, loss)
    assert grad2.tobytes() == grad.tobytes()


def test_grad_out_is_written_and_returned(rng, dtype):
    logits = make_logits(rng, (20, 30), dtype)
    target = make_target(rng, 20, 30)
    out = np.full_like(logits, np.nan)
    _loss, grad = fastloss.cross_entropy(logits, target, grad_out=out)
    assert grad is out
    _, expected = fastloss.cross_entropy(logits, target, return_grad=True)
    np.testing.assert_array_equal(out, expected)


def test_in_place_allocates_no_batch_sized_memory(rng):
    logits = make_logits(rng, (2000, 1000), np.float32)      # 8 MB
    target = make_target(rng, 2000, 1000)
    tracemalloc.start()
    try:
        fastloss.cross_entropy(logits, target, grad_out=logits, reduction="sum")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Per-row float64 losses (16 KB) and small scratch only, nothing of N x C.
    assert peak < logits.nbytes / 20, peak


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(4, 5), (2, 2), (3, 1), (2, 2500)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_gradient_matches_finite_differences(rng, shape, reduction):
    logits = make_logits(rng, shape, np.float64, scale=2.0)
    target = make_target(rng, shape[0], shape[1])

    def total_loss(x):
        return float(np.sum(fastloss.cross_entropy(x, target, reduction=reduction)))

    _, grad = fastloss.cross_entropy(logits, target, reduction=reduction, return_grad=True)
    # Every entry of small rows; for long rows the targets, the largest logits and a sample.
    indices = None
    if logits.size > 40:
        picks = set(zip(range(shape[0]), target, strict=True))
        picks |= {(i, int(np.argmax(logits[i]))) for i in range(shape[0])}
        picks |= {(int(i), int(j)) for i, j in zip(rng.integers(0, shape[0], 8),
                                                   rng.integers(0, shape[1], 8), strict=True)}
        indices = sorted(picks)
    check_fd_gradient(total_loss, logits, grad, indices)


class TestExtremeValues:
    @pytest.mark.parametrize("big", [1e4, 1e30])
    def test_huge_logits_stay_finite(self, dtype, big):
        logits = np.array([[big, -big, 0.0], [big, big, -big], [-big, -big, -big]], dtype=dtype)
        target = np.array([0, 1, 2])
        loss, grad = fastloss.cross_entropy(logits, target, reduction="none", return_grad=True)
        ref_loss, ref_grad = reference.cross_entropy(logits, target, reduction="none",
                                                     return_grad=True)
        assert np.isfinite(loss).all() and np.isfinite(grad).all()
        assert_close(loss, ref_loss, dtype, atol=loss_atol(dtype), what="loss")
        assert_close(grad, ref_grad, dtype, atol=GRAD_ATOL, what="grad")
        np.testing.assert_allclose(loss, [0.0, np.log(2), np.log(3)], rtol=1e-6)

    def test_large_logits_keep_float32_accuracy(self, rng):
        # Around 1e4 a float32 ulp is 1e-3: the row loss must be formed before rounding.
        logits = (1e4 + rng.standard_normal((64, 100))).astype(np.float32)
        target = make_target(rng, 64, 100)
        loss = fastloss.cross_entropy(logits, target, reduction="none")
        ref = reference.cross_entropy(logits, target, reduction="none")
        assert_close(loss, ref, np.float32, ulps=2, what="loss")

    def test_far_apart_loss_is_finite(self, dtype):
        big = 1e30
        loss = fastloss.cross_entropy(np.array([[big, -big]], dtype=dtype), [1], reduction="sum")
        assert float(loss) == pytest.approx(2 * big, rel=1e-6)

    @pytest.mark.parametrize("n_classes", [4, 5000])
    def test_minus_inf_masks(self, dtype, n_classes):
        logits = np.full((2, n_classes), -np.inf, dtype=dtype)
        logits[:, 1] = 2.3
        logits[:, -1] = -1.2          # in the last chunk when the row has several
        target = np.array([n_classes - 1, 1])
        loss, grad = fastloss.cross_entropy(logits, target, reduction="none", return_grad=True)
        np.testing.assert_allclose(loss, [3.52975, 0.02975], atol=1e-5)
        masked = np.isneginf(logits)
        assert (grad[masked] == 0).all()
        assert np.isfinite(grad).all()

    def test_masked_target_gives_infinite_loss(self, dtype):
        logits = np.array([[-np.inf, 1.0, 2.0]], dtype=dtype)
        loss, grad = fastloss.cross_entropy(logits, [0], reduction="sum", return_grad=True)
        assert loss == np.inf
        assert grad[0, 0] == -1.0

    def test_all_masked_row_is_nan_like_pytorch(self, dtype):
        logits = np.full((1, 3), -np.inf, dtype=dtype)
        loss, grad = fastloss.cross_entropy(logits, [0], return_grad=True)
        assert np.isnan(loss) and np.isnan(grad).all()

    @pytest.mark.parametrize("n_classes", [3, 5000])
    def test_nan_gives_nan_in_its_row_only(self, dtype, n_classes, rng):
        logits = make_logits(rng, (3, n_classes), dtype)
        logits[1, n_classes // 2] = np.nan
        target = np.array([0, 0, 1])
        losses = fastloss.cross_entropy(logits, target, reduction="none")
        assert np.isnan(losses[1]) and np.isfinite(losses[[0, 2]]).all()
        assert np.isnan(fastloss.cross_entropy(logits, target, reduction="mean"))
        _, grad = fastloss.cross_entropy(logits, target, reduction="sum", return_grad=True)
        assert np.isnan(grad[1]).all() and np.isfinite(grad[[0, 2]]).all()


class TestEmptyBatch:
    def test_reductions(self, dtype):
        logits = np.empty((0, 5), dtype=dtype)
        target = np.empty(0, dtype=np.int64)
        assert fastloss.cross_entropy(logits, target, reduction="sum") == 0
        assert np.isnan(fastloss.cross_entropy(logits, target, reduction="mean"))
        none = fastloss.cross_entropy(logits, target, reduction="none")
        assert none.shape == (0,) and none.dtype == dtype

    def test_gradient(self, dtype):
        logits = np.empty((0, 5), dtype=dtype)
        _loss, grad = fastloss.cross_entropy(logits, np.empty(0, dtype=int), return_grad=True)
        assert grad.shape == (0, 5) and grad.dtype == dtype


class TestLayouts:
    """Axes, strides, read-only and memory-mapped inputs, other float dtypes."""

    @pytest.mark.parametrize("axis", [0, 1, 2, -1])
    def test_any_axis(self, rng, dtype, axis):
        logits = make_logits(rng, (4, 6, 5), dtype)
        batch = tuple(n for i, n in enumerate(logits.shape) if i != axis % 3)
        target = make_target(rng, batch, logits.shape[axis])
        loss, grad = fastloss.cross_entropy(logits, target, axis=axis, reduction="none",
                                            return_grad=True)
        ref_loss, ref_grad = reference.cross_entropy(logits, target, axis=axis,
                                                     reduction="none", return_grad=True)
        assert loss.shape == batch and grad.shape == logits.shape
        assert_close(loss, ref_loss, dtype, atol=loss_atol(dtype))
        assert_close(grad, ref_grad, dtype, atol=GRAD_ATOL)

    @pytest.mark.parametrize("axis", [1, -1])
    def test_grad_out_with_moved_axis(self, rng, dtype, axis):
        logits = make_logits(rng, (3, 4, 5), dtype)
        batch = (3, 5) if axis == 1 else (3, 4)
        target = make_target(rng, batch, logits.shape[axis])
        _, expected = fastloss.cross_entropy(logits, target, axis=axis, return_grad=True)
        _, grad = fastloss.cross_entropy(logits, target, axis=axis, grad_out=logits)
        assert grad is logits
        np.testing.assert_array_equal(grad, expected)

    @pytest.mark.parametrize("layout", ["strided", "fortran", "readonly", "memmap"])
    def test_input_layouts(self, rng, dtype, layout, tmp_path):
        base = make_logits(rng, (30, 41), dtype)
        if layout == "strided":
            logits = np.repeat(base, 2, axis=1)[:, ::2]
        elif layout == "fortran":
            logits = np.asfortranarray(base)
        elif layout == "readonly":
            logits = base.copy()
            logits.flags.writeable = False
        else:
            logits = np.memmap(tmp_path / "logits.bin", dtype=dtype, mode="w+", shape=base.shape)
            logits[...] = base
            logits.flush()
            logits = np.memmap(tmp_path / "logits.bin", dtype=dtype, mode="r", shape=base.shape)
        target = make_target(rng, 30, 41)
        loss, grad = fastloss.cross_entropy(logits, target, return_grad=True)
        expected_loss, expected_grad = fastloss.cross_entropy(base, target, return_grad=True)
        assert loss == expected_loss
        np.testing.assert_array_equal(grad, expected_grad)

    @pytest.mark.parametrize("other", [np.float16, np.longdouble])
    def test_other_float_dtypes_keep_their_dtype(self, rng, other):
        logits = make_logits(rng, (10, 7), other)
        target = make_target(rng, 10, 7)
        loss, grad = fastloss.cross_entropy(logits, target, reduction="none", return_grad=True)
        assert loss.dtype == other and grad.dtype == other
        ref_loss, ref_grad = reference.cross_entropy(logits, target, reduction="none",
                                                     return_grad=True)
        tol = 2e-3 if other == np.float16 else 1e-12
        np.testing.assert_allclose(loss.astype(float), ref_loss, rtol=tol, atol=tol)
        np.testing.assert_allclose(grad.astype(float), ref_grad, rtol=tol, atol=tol)

    @pytest.mark.parametrize("target_dtype", [np.int8, np.uint8, np.int32, np.uint64])
    def test_integer_target_dtypes(self, rng, target_dtype):
        logits = make_logits(rng, (9, 5), np.float64)
        target = make_target(rng, 9, 5)
        expected = fastloss.cross_entropy(logits, target)
        assert fastloss.cross_entropy(logits, target.astype(target_dtype)) == expected
        assert fastloss.cross_entropy(logits.tolist(), target.tolist()) == expected


@st.composite
def logits_and_targets(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(0, 12))
    c = draw(st.integers(1, 70))
    values = st.one_of(
        st.floats(-50, 50, width=32),
        st.sampled_from([-np.inf, 1e4, -1e4, 0.0]),
    )
    logits = draw(hnp.arrays(dtype, (n, c), elements=values))
    # At least one finite logit per row, so the loss is defined.
    logits[:, 0] = np.where(np.isfinite(logits[:, 0]), logits[:, 0], 0.0)
    target = draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))
    return logits, target


@given(logits_and_targets(), st.sampled_from(REDUCTIONS), st.sampled_from([1, 2]))
def test_property_matches_reference(case, reduction, n_threads):
    logits, target = case
    dtype = logits.dtype
    loss, grad = fastloss.cross_entropy(logits, target, reduction=reduction,
                                        n_threads=n_threads, return_grad=True)
    ref_loss, ref_grad = reference.cross_entropy(logits, target, reduction=reduction,
                                                 return_grad=True)
    # Sums of up to 12 losses of up to ~2e4 each: a few ulp of the largest term.
    atol = 1e-9 if dtype == np.float64 else 1e-12
    assert_close(loss, ref_loss, dtype, atol=atol, what="loss")
    # The kernel sums a row's exponentials in order, the max (exactly 1) first, so the
    # target entry's p_y - 1 carries up to ~C ulps of 1 in absolute terms.
    c_atol = GRAD_ATOL + logits.shape[1] * np.finfo(np.float64).eps
    assert_close(grad, ref_grad, dtype, atol=c_atol, what="grad")
    masked = np.isneginf(logits)
    masked[np.arange(len(target)), target] = False      # a masked target's gradient is -1
    assert np.all(grad[masked] == 0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(32, 10), (5000, 3), (40, 1000)], ids=str)
def test_the_plain_call_matches_the_general_path_bit_for_bit(rng, dtype, reduction, shape):
    """Class targets without options take a shorter path (call overhead); return_lse
    forces the general one: the same loss and gradient bits."""
    x = make_logits(rng, shape, dtype)
    target = rng.integers(0, shape[1], shape[0])
    target[::5] = -100
    plain_loss, plain_grad = fastloss.cross_entropy(x, target, reduction=reduction,
                                                    return_grad=True)
    loss, grad, _ = fastloss.cross_entropy(x, target, reduction=reduction, return_grad=True,
                                           return_lse=True)
    assert plain_loss.dtype == loss.dtype == dtype
    assert plain_loss.tobytes() == loss.tobytes()
    np.testing.assert_array_equal(plain_grad, grad)
    assert fastloss.cross_entropy(x, target, reduction=reduction).tobytes() == loss.tobytes()
    out = np.empty_like(x)
    assert fastloss.cross_entropy(x, target, reduction=reduction, grad_out=out)[1] is out
    np.testing.assert_array_equal(out, grad)
    in_place = x.copy()
    fastloss.cross_entropy(in_place, target, reduction=reduction, grad_out=in_place)
    np.testing.assert_array_equal(in_place, grad)


def test_the_plain_call_leaves_bad_arguments_to_the_general_checks():
    x = np.zeros((4, 3), dtype=np.float32)
    target = np.array([0, 1, 2, 3])
    with pytest.raises(IndexError, match=r"got 3 at index \(3,\)"):
        fastloss.cross_entropy(x, target)
    buf = np.zeros((8, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="overlaps the input only partly"):
        fastloss.cross_entropy(buf[:4], target % 3, grad_out=buf[2:6])
    read_only = np.zeros_like(x)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="grad_out must be writeable"):
        fastloss.cross_entropy(x, target % 3, grad_out=read_only)
    with pytest.raises(ValueError, match="C-contiguous"):
        fastloss.cross_entropy(x, target % 3, grad_out=np.zeros((3, 4), np.float32).T)
    shared = np.zeros(4 * 3, dtype=np.int64)
    with pytest.raises(ValueError, match="must not share memory with target"):
        fastloss.cross_entropy(np.zeros((4, 3)), shared[4:8],
                               grad_out=shared.view(np.float64).reshape(4, 3))
    with pytest.raises(TypeError, match="label_smoothing must be a real number"):
        fastloss.cross_entropy(x, target % 3, label_smoothing=False)
