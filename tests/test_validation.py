"""Bad input gets a clear exception that names the argument; it never crashes."""

from __future__ import annotations

import numpy as np
import pytest

import fastloss
from fastloss import _common

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
    "target",
    [TARGET.astype(np.float64), TARGET.astype(bool), TARGET.astype(object), ["a"] * 4],
    ids=["float", "bool", "object", "str"],
)
def test_non_integer_target(target):
    with pytest.raises(TypeError, match="target must be an array of integer class indices"):
        fastloss.cross_entropy(LOGITS, target)


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
    with pytest.raises(IndexError, match=rf"class indices in \[0, 3\), got {bad_value} "
                                         rf"at index \({index},\)"):
        fastloss.cross_entropy(LOGITS, target)


def test_unsigned_target_out_of_range():
    with pytest.raises(IndexError, match="got 18446744073709551615"):
        fastloss.cross_entropy(LOGITS, np.array([0, 1, 2, 2**64 - 1], dtype=np.uint64))


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

    def test_resolution(self, monkeypatch):
        big = _common.PARALLEL_MIN_ELEMENTS
        if not fastloss.openmp_enabled():
            assert _common.effective_n_threads(4, big) == 1
            return
        monkeypatch.setattr(_common, "_usable_cpus", lambda: 8)
        assert _common.effective_n_threads(3, big) == 3
        assert _common.effective_n_threads(-1, big) == 8
        assert _common.effective_n_threads(-2, big) == 7
        assert _common.effective_n_threads(-20, big) == 1
        assert _common.effective_n_threads(4, big - 1) == 1      # too small to pay
        from fastloss._kernels import _openmp_helpers
        assert _common.effective_n_threads(None, big) == _openmp_helpers.max_threads()
