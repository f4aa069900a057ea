"""Bad input gets a clear exception that names the argument; it never crashes."""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from fastloss import _threads
from fastloss._kernels import _kernels as _openmp_helpers

LOGITS = np.zeros((4, 3))
TARGET = np.array([0, 1, 2, 0])


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 3), dtype=np.int64), np.zeros((4, 3), dtype=bool),
     np.zeros((4, 3), dtype=np.complex128), np.zeros((4, 3), dtype=object),
     [[1, 2, 3]], "abc"],
    ids=["int", "bool", "complex", "object", "int-list", "str"],
)
class TestNonFloatScores:
    def test_cross_entropy(self, bad):
        with pytest.raises(TypeError, match="logits must be an array of real floating"):
            fastloss.cross_entropy(bad, TARGET)

    @pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
    def test_softmax_family(self, bad, name):
        with pytest.raises(TypeError, match="x must be an array of real floating"):
            getattr(fastloss, name)(bad)


@pytest.mark.parametrize(
    "target", [TARGET.astype(bool), TARGET.astype(object), ["a"] * 4, TARGET + 0j],
    ids=["bool", "object", "str", "complex"],
)
def test_non_integer_target(target):
    with pytest.raises(TypeError, match="target must be an array of integer class indices "
                                        "or of floating-point class probabilities"):
        fastloss.cross_entropy(LOGITS, target)


def test_float_class_indices_are_read_as_probabilities():
    with pytest.raises(ValueError, match=r"target probabilities must have the shape of "
                                         r"logits, \(4, 3\), got \(4,\) \(class indices "
                                         r"need an integer dtype\)"):
        fastloss.cross_entropy(LOGITS, TARGET.astype(np.float64))


@pytest.mark.parametrize(
    "logits, target, axis",
    [(LOGITS, TARGET[:3], -1), (LOGITS, TARGET[:, None], -1), (LOGITS, 0, -1),
     (np.zeros((2, 3, 4)), np.zeros((2, 3), dtype=int), 1), (LOGITS, TARGET, 0)],
    ids=["short", "extra-dim", "scalar", "wrong-axis-3d", "axis0"],
)
def test_target_shape_mismatch(logits, target, axis):
    with pytest.raises(ValueError, match="target must have the shape of logits without"):
        fastloss.cross_entropy(logits, target, axis=axis)


@pytest.mark.parametrize("bad_value, index", [(3, 2), (-1, 1), (2**40, 0)])
def test_target_out_of_range(bad_value, index):
    target = TARGET.copy()
    target[index] = bad_value
    with pytest.raises(IndexError, match=rf"class indices in \[0, 3\) or ignore_index "
                                         rf"\(-100\), got {bad_value} at index \({index},\)"):
        fastloss.cross_entropy(LOGITS, target)


@pytest.mark.parametrize("weighted", [False, True])
def test_first_out_of_range_target_of_many_blocks_is_reported(weighted):
    # The check runs by blocks of 4096 rows in parallel (a vectorised count where there
    # are no weights): the first bad index overall is the one reported.
    n = 3 * 4096 + 17
    target = np.arange(n) % 3
    target[[5000, 9000, n - 1]] = [-7, 3, 5]
    target[100] = -100                   # ignored, not bad
    weight = np.ones(3) if weighted else None
    for n_threads in (1, 2, 3):
        with pytest.raises(IndexError, match=r"got -7 at index \(5000,\)"):
            fastloss.cross_entropy(np.zeros((n, 3)), target, weight=weight,
                                   n_threads=n_threads)
    target[[5000, 9000]] = 0
    with pytest.raises(IndexError, match=rf"got 5 at index \({n - 1},\)"):
        fastloss.cross_entropy(np.zeros((n, 3)), target, weight=weight)
    target[n - 1] = 0
    loss = fastloss.cross_entropy(np.zeros((n, 3)), target, weight=weight)
    assert loss == pytest.approx(np.log(3), rel=1e-15)      # the ignored row left out


def test_unsigned_target_out_of_range():
    with pytest.raises(IndexError, match="got 18446744073709551615"):
        fastloss.cross_entropy(LOGITS, np.array([0, 1, 2, 2**64 - 1], dtype=np.uint64))


def test_unsigned_target_that_would_wrap_onto_ignore_index_is_an_error():
    # 2**64 - 100 cast to intp is -100, the default ignore_index: it must not be ignored.
    with pytest.raises(IndexError, match="got 18446744073709551516 at index \\(1,\\)"):
        fastloss.cross_entropy(LOGITS[:2], np.array([0, 2**64 - 100], dtype=np.uint64))


def test_out_of_range_target_never_reaches_the_kernel_in_place():
    logits = np.zeros((2, 3))
    with pytest.raises(IndexError):
        fastloss.cross_entropy(logits, [0, 3], grad_out=logits)
    assert (logits == 0).all()


def test_empty_class_axis():
    with pytest.raises(ValueError, match="logits must have at least one class along axis 1"):
        fastloss.cross_entropy(np.zeros((4, 0)), TARGET)


def test_zero_dim_logits():
    with pytest.raises(ValueError, match="at least one dimension"):
        fastloss.cross_entropy(np.float64(1.0), 0)


@pytest.mark.parametrize("axis, exc", [(2, np.exceptions.AxisError), (-3, np.exceptions.AxisError),
                                       (1.0, TypeError)])
def test_bad_axis(axis, exc):
    with pytest.raises(exc, match="axis"):
        fastloss.cross_entropy(LOGITS, TARGET, axis=axis)
    with pytest.raises(exc, match="axis"):
        fastloss.softmax(LOGITS, axis=axis)


@pytest.mark.parametrize("reduction", ["avg", "MEAN", None, "batchmean"])
def test_unknown_reduction(reduction):
    with pytest.raises(ValueError, match=r"reduction must be one of \('none', 'mean', 'sum'\)"):
        fastloss.cross_entropy(LOGITS, TARGET, reduction=reduction)


class TestGradOut:
    def test_wrong_shape(self):
        with pytest.raises(ValueError, match=r"grad_out must have shape \(4, 3\), got \(3, 4\)"):
            fastloss.cross_entropy(LOGITS, TARGET, grad_out=np.empty((3, 4)))

    def test_wrong_dtype(self):
        with pytest.raises(TypeError, match="grad_out must have dtype float64, got float32"):
            fastloss.cross_entropy(LOGITS, TARGET, grad_out=np.empty((4, 3), np.float32))

    def test_not_contiguous(self):
        with pytest.raises(ValueError, match="grad_out must be C-contiguous"):
            fastloss.cross_entropy(LOGITS, TARGET, grad_out=np.empty((3, 4)).T)

    def test_not_an_array(self):
        with pytest.raises(TypeError, match=r"grad_out must be a numpy\.ndarray, got list"):
            fastloss.cross_entropy(LOGITS, TARGET, grad_out=LOGITS.tolist())

    def test_read_only(self):
        out = np.empty((4, 3))
        out.flags.writeable = False
        with pytest.raises(ValueError, match="grad_out must be writeable"):
            fastloss.cross_entropy(LOGITS, TARGET, grad_out=out)

    def test_partial_overlap_with_logits(self):
        buf = np.zeros(13)
        logits, out = buf[:12].reshape(4, 3), buf[1:].reshape(4, 3)
        with pytest.raises(ValueError, match="grad_out overlaps the input only partly"):
            fastloss.cross_entropy(logits, TARGET, grad_out=out)

    def test_overlap_with_target(self):
        buf = np.zeros(12)
        target = buf.view(np.int64)[:4]
        with pytest.raises(ValueError, match="grad_out must not share memory with target"):
            fastloss.cross_entropy(LOGITS, target, grad_out=buf.reshape(4, 3))


class TestSoftmaxOut:
    @pytest.mark.parametrize("name", ["softmax", "log_softmax"])
    def test_wrong_shape_dtype_overlap(self, name):
        fn = getattr(fastloss, name)
        with pytest.raises(ValueError, match="out must have shape"):
            fn(LOGITS, out=np.empty((4, 4)))
        with pytest.raises(TypeError, match="out must have dtype float64"):
            fn(LOGITS, out=np.empty((4, 3), np.float32))
        buf = np.zeros(13)
        with pytest.raises(ValueError, match="overlaps the input only partly"):
            fn(buf[:12].reshape(4, 3), out=buf[1:].reshape(4, 3))

    def test_logsumexp_out(self):
        with pytest.raises(ValueError, match=r"out must have shape \(4,\)"):
            fastloss.logsumexp(LOGITS, out=np.empty(3))
        with pytest.raises(ValueError, match="out must not share memory with x"):
            x = np.zeros((4, 4))
            fastloss.logsumexp(x, out=x[:, 0])


class TestThreads:
    @pytest.mark.parametrize("name", ["cross_entropy", "softmax", "log_softmax", "logsumexp"])
    def test_zero_threads(self, name):
        args = (LOGITS, TARGET) if name == "cross_entropy" else (LOGITS,)
        with pytest.raises(ValueError, match="n_threads must be a non-zero int"):
            getattr(fastloss, name)(*args, n_threads=0)

    @pytest.mark.parametrize("bad", [1.5, "2", True])
    def test_non_int_threads(self, bad):
        with pytest.raises(TypeError, match="n_threads must be an int or None"):
            fastloss.cross_entropy(LOGITS, TARGET, n_threads=bad)

    @pytest.mark.parametrize("bad", [2**31, -(2**31), 10**30])
    def test_absurd_threads(self, bad):
        with pytest.raises(ValueError, match=r"n_threads must be within \[-2147483647, "):
            fastloss.cross_entropy(LOGITS, TARGET, n_threads=bad)

    def test_resolution(self):
        big = _threads.PARALLEL_MIN_ELEMENTS
        if not fastloss.openmp_enabled():
            assert _threads.effective_n_threads(4, big) == 1
            return
        previous = _openmp_helpers._set_cpu_limit(8)
        try:
            assert _threads.usable_cpus() == _openmp_helpers.num_procs()
            assert _threads.effective_n_threads(3, big) == 3
            assert _threads.effective_n_threads(100_000, big) == 8     # capped at the CPUs
            assert _threads.effective_n_threads(-1, big) == 8
            assert _threads.effective_n_threads(-2, big) == 7
            assert _threads.effective_n_threads(-20, big) == 1
            assert _threads.effective_n_threads(4, big - 1) == 1      # too small to pay
            assert _threads.effective_n_threads(None, big) == min(
                _openmp_helpers.max_threads(), 8)
        finally:
            _openmp_helpers._set_cpu_limit(previous)


class TestCrossEntropyOptions:
    @pytest.mark.parametrize(
        "weight, exc, message",
        [(np.ones(4), ValueError, r"weight must have shape \(3,\), got \(4,\)"),
         (np.ones((3, 1)), ValueError, r"weight must have shape \(3,\)"),
         ([1.0, -0.5, 1.0], ValueError, "weight must be non-negative, got -0.5"),
         ([1.0, np.nan, 1.0], ValueError, "weight must be finite"),
         ([1.0, np.inf, 1.0], ValueError, "weight must be finite"),
         (np.ones(3, dtype=complex), TypeError, "weight must be an array of real numbers"),
         (["a", "b", "c"], TypeError, "weight must be an array of real numbers")],
        ids=["long", "2d", "negative", "nan", "inf", "complex", "str"],
    )
    def test_bad_class_weight(self, weight, exc, message):
        with pytest.raises(exc, match=message):
            fastloss.cross_entropy(LOGITS, TARGET, weight=weight)

    @pytest.mark.parametrize("value", [-0.1, 1.5, np.nan, np.inf])
    def test_label_smoothing_outside_unit_interval(self, value):
        with pytest.raises(ValueError,
                           match=r"label_smoothing must be a finite number in \[0, 1\]"):
            fastloss.cross_entropy(LOGITS, TARGET, label_smoothing=value)

    @pytest.mark.parametrize("value", ["0.1", None, True])
    def test_label_smoothing_not_a_number(self, value):
        with pytest.raises(TypeError, match="label_smoothing must be a real number"):
            fastloss.cross_entropy(LOGITS, TARGET, label_smoothing=value)

    def test_soft_target_wrong_shape(self):
        with pytest.raises(ValueError, match=r"target probabilities must have the shape of "
                                             r"logits, \(4, 3\), got \(4, 2\)"):
            fastloss.cross_entropy(LOGITS, np.full((4, 2), 0.5))

    def test_soft_target_negative(self):
        target = np.full((4, 3), 0.5)
        target[2, 1] = -0.25
        with pytest.raises(ValueError, match=r"target probabilities must be non-negative, "
                                             "got -0.25"):
            fastloss.cross_entropy(LOGITS, target)

    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_soft_target_not_finite(self, bad):
        target = np.full((4, 3), 0.5)
        target[0, 0] = bad
        with pytest.raises(ValueError, match="target probabilities must be finite"):
            fastloss.cross_entropy(LOGITS, target)

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    @pytest.mark.parametrize("bad, message", [(np.nan, "must be finite"),
                                              (-np.inf, "must be finite"),
                                              (-0.5, "must be non-negative, got -0.5")])
    def test_bad_probability_deep_in_a_large_target(self, dtype, bad, message):
        # The check is one parallel pass by blocks of 4096 values: a bad one in any block,
        # on any thread, is found, in the target probabilities and a teacher's.
        logits = np.zeros((3000, 7), dtype=dtype)
        target = np.full(logits.shape, 1 / 7, dtype=dtype)
        target[2999, 6] = bad
        for n_threads in (1, 2, 3):
            with pytest.raises(ValueError, match=f"target probabilities {message}"):
                fastloss.cross_entropy(logits, target, n_threads=n_threads)
            with pytest.raises(ValueError, match=f"teacher probabilities {message}"):
                fastloss.kl_div_with_logits(logits, target, n_threads=n_threads)
        with pytest.raises(ValueError, match=f"target probabilities {message}"):
            fastloss.cross_entropy(logits, target[:, ::-1])       # not contiguous: NumPy
        if bad != -0.5:
            log_target = np.log(np.abs(target))
            log_target[2999, 6] = -bad if bad == -np.inf else bad      # NaN or +inf
            with pytest.raises(ValueError, match="log-probabilities must not be NaN or"):
                fastloss.kl_div_with_logits(logits, log_target, teacher_kind="log_probs",
                                            n_threads=2)

    def test_ignore_index_with_soft_targets(self):
        with pytest.raises(ValueError, match=r"ignore_index applies to integer class targets "
                                             "only.*sample_weight=0"):
            fastloss.cross_entropy(LOGITS, np.full((4, 3), 1 / 3), ignore_index=0)

    @pytest.mark.parametrize("bad", [1.5, "0", True, None])
    def test_ignore_index_not_an_int(self, bad):
        with pytest.raises(TypeError, match=r"ignore_index must be an int|integer"):
            fastloss.cross_entropy(LOGITS, TARGET, ignore_index=bad)

    @pytest.mark.parametrize(
        "sample_weight, message",
        [(np.ones(3), r"sample_weight must have shape \(4,\), got \(3,\)"),
         (np.ones((4, 1)), r"sample_weight must have shape \(4,\)"),
         ([1.0, 1.0, -2.0, 1.0], "sample_weight must be non-negative, got -2.0"),
         ([1.0, np.nan, 1.0, 1.0], "sample_weight must be finite")],
        ids=["short", "2d", "negative", "nan"],
    )
    def test_bad_sample_weight(self, sample_weight, message):
        with pytest.raises(ValueError, match=message):
            fastloss.cross_entropy(LOGITS, TARGET, sample_weight=sample_weight)

    @pytest.mark.parametrize("value", [-1e-3, np.nan, -np.inf, np.inf])
    def test_negative_or_infinite_z_loss(self, value):
        with pytest.raises(ValueError, match=r"z_loss must be a finite number >= 0, got"):
            fastloss.cross_entropy(LOGITS, TARGET, z_loss=value)

    def test_grad_out_must_not_overlap_soft_target(self):
        target = np.full((4, 3), 1 / 3)
        with pytest.raises(ValueError, match="grad_out must not share memory with target"):
            fastloss.cross_entropy(LOGITS, target, grad_out=target)

    def test_grad_out_may_overlap_weights(self):
        # Weights are copied before the kernel runs, so overwriting them is harmless.
        rng = np.random.default_rng(1)
        logits = rng.standard_normal((4, 3))
        buf = np.ones(15)
        expected = fastloss.cross_entropy(logits, TARGET, sample_weight=buf[:4].copy(),
                                          return_grad=True)
        loss, grad = fastloss.cross_entropy(logits, TARGET, sample_weight=buf[:4],
                                            grad_out=buf[3:].reshape(4, 3))
        assert loss == expected[0]
        np.testing.assert_array_equal(grad, expected[1])


EMPTY_CLASSES = {
    "softmax": lambda x: fastloss.softmax(x),
    "log_softmax": lambda x: fastloss.log_softmax(x),
    "logsumexp": lambda x: fastloss.logsumexp(x),
    "entropy": lambda x: fastloss.entropy(x),
    "entropy_from_logits": lambda x: fastloss.entropy_from_logits(x),
    "cross_entropy": lambda x: fastloss.cross_entropy(x, np.zeros(len(x), dtype=np.intp)),
    "cross_entropy_soft": lambda x: fastloss.cross_entropy(x, x),
    "kl_div_with_logits": lambda x: fastloss.kl_div_with_logits(x, x),
}


@pytest.mark.parametrize("rows", [0, 3])
@pytest.mark.parametrize("name", list(EMPTY_CLASSES))
def test_an_empty_class_axis_is_an_error(name, rows):
    # One rule for every function with a class axis: no distribution over no classes.
    with pytest.raises(ValueError, match="must have at least one class along axis 1, got 0"):
        EMPTY_CLASSES[name](np.empty((rows, 0)))
    with pytest.raises(ValueError, match="num_classes must be at least 1, got 0"):
        fastloss.one_hot(np.zeros(rows, dtype=np.intp), 0)


@pytest.mark.parametrize("value", ["no", "yes", 1, 0, None, np.array([True])])
@pytest.mark.parametrize("name", ["cross_entropy", "kl_div_with_logits",
                                  "entropy_from_logits", "binary_cross_entropy_with_logits"])
def test_return_grad_takes_booleans_only(name, value):
    x = np.zeros((2, 3))
    args = {"cross_entropy": (x, np.zeros(2, dtype=np.intp)), "kl_div_with_logits": (x, x + 1 / 3),
            "entropy_from_logits": (x,), "binary_cross_entropy_with_logits": (x, x)}[name]
    with pytest.raises(TypeError, match="return_grad must be a bool, got"):
        getattr(fastloss, name)(*args, return_grad=value)
    assert len(getattr(fastloss, name)(*args, return_grad=np.bool_(True))) == 2


@pytest.mark.parametrize("name, value", [("return_lse", "no"), ("scale_by_temperature", 1)])
def test_other_flags_take_booleans_only(name, value):
    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match=f"{name} must be a bool, got"):
        if name == "return_lse":
            fastloss.cross_entropy(x, np.zeros(2, dtype=np.intp), return_lse=value)
        else:
            fastloss.kl_div_with_logits(x, x + 1 / 3, scale_by_temperature=value)


@pytest.mark.parametrize("value", [0, 0.0, -1.0, np.inf, np.nan, 1e101])
def test_temperature_must_be_positive_and_finite(value):
    x = np.zeros((2, 3))
    with pytest.raises(ValueError,
                       match=r"temperature must be a finite number in \(0, 1e\+100\], got"):
        fastloss.kl_div_with_logits(x, x + 1 / 3, temperature=value)
