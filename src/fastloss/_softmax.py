"""softmax, log_softmax and logsumexp: validation and dispatch to the row kernels."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastloss._common import (
    as_floating,
    check_out,
    class_axis,
    full_output,
    to_rows,
)
from fastloss._dispatch import kernels
from fastloss._threads import effective_n_threads

__all__ = ["log_softmax", "logsumexp", "softmax"]


# The kernels' row operations (_kernels.rows).
_SOFTMAX, _LOG_SOFTMAX, _LOGSUMEXP = range(3)


def _rowwise(op: int, x: Any, axis: int, out: np.ndarray | None,
             n_threads: int | None) -> np.ndarray:
    """Shared body of softmax and log_softmax: a full-shape result, row by row."""
    x = as_floating(x, "x")
    axis = class_axis(x, axis, "x")
    if out is not None:
        check_out(out, "out", x.shape, x.dtype, may_alias=x)
    layout = to_rows(x, axis)
    buf, finish = full_output(layout, out)
    if buf.size:
        kernels().rows(op, layout.rows, buf, effective_n_threads(n_threads, buf.size))
    return finish()


def softmax(
    x: Any, axis: int = -1, *, out: np.ndarray | None = None, n_threads: int | None = None
) -> np.ndarray:
    r"""Softmax along one axis.

    .. math:: \mathrm{softmax}(x)_k = \frac{e^{x_k - m}}{\sum_j e^{x_j - m}},
              \quad m = \max_j x_j

    Computed with the max subtracted, so it never overflows; each row is read from memory
    once (chunked online max and sum) and written once.

    Parameters
    ----------
    x : array_like of float32 or float64
        Scores (logits). Other float dtypes are computed in the nearest kernel dtype
        (float16 in float32, long double in float64) and returned in their own dtype.
        Integer, bool, complex and object arrays are rejected with ``TypeError``.
    axis : int, default -1
        The class axis. The fast path is the last axis of a C-contiguous array; any other
        axis or layout is computed on one contiguous copy.
    out : ndarray, optional
        Where to write the result: same shape and dtype as ``x``. It may be ``x`` itself
        (in place), but may not partly overlap it.
    n_threads : int, optional
        OpenMP threads. None: OpenMP's default (``OMP_NUM_THREADS``); -1: all CPUs;
        0 is an error. Small inputs run on one thread.

    Returns
    -------
    ndarray
        Probabilities, same shape and dtype as ``x`` (``out`` if given). Along ``axis``
        they are non-negative and sum to 1. A row that contains NaN or +inf gives NaN;
        ``-inf`` entries (masked classes) get probability 0; a row of all ``-inf`` is NaN.

    Examples
    --------
    >>> import numpy as np, fastloss
    >>> fastloss.softmax(np.array([2.3, -1.2])).round(5)
    array([0.97069, 0.02931])
    """
    return _rowwise(_SOFTMAX, x, axis, out, n_threads)


def log_softmax(
    x: Any, axis: int = -1, *, out: np.ndarray | None = None, n_threads: int | None = None
) -> np.ndarray:
    r"""Log of the softmax along one axis, computed without forming the softmax.

    .. math:: \log\mathrm{softmax}(x)_k = (x_k - m) - \log \sum_j e^{x_j - m},
              \quad m = \max_j x_j

    Parameters
    ----------
    x : array_like of float32 or float64
        Scores (logits); other dtypes as in :func:`softmax`.
    axis : int, default -1
        The class axis.
    out : ndarray, optional
        Same shape and dtype as ``x``; may be ``x`` itself.
    n_threads : int, optional
        As in :func:`softmax`.

    Returns
    -------
    ndarray
        Log-probabilities, same shape and dtype as ``x``: ``-inf`` where ``x`` is ``-inf``,
        NaN for rows that contain NaN or +inf.

    Examples
    --------
    >>> import numpy as np, fastloss
    >>> fastloss.log_softmax(np.array([2.3, -1.2])).round(5)
    array([-0.02975, -3.52975])
    """
    return _rowwise(_LOG_SOFTMAX, x, axis, out, n_threads)


def logsumexp(
    x: Any, axis: int = -1, *, out: np.ndarray | None = None, n_threads: int | None = None
) -> np.ndarray:
    r"""Log of the sum of exponentials along one axis, without overflow.

    .. math:: \mathrm{logsumexp}(x) = m + \log \sum_j e^{x_j - m}, \quad m = \max_j x_j

    Parameters
    ----------
    x : array_like of float32 or float64
        Scores; other dtypes as in :func:`softmax`.
    axis : int, default -1
        The axis to reduce.
    out : ndarray, optional
        Shape of ``x`` without ``axis``, dtype of ``x``.
    n_threads : int, optional
        As in :func:`softmax`.

    Returns
    -------
    ndarray
        Shape of ``x`` without ``axis`` (a 0-d array for 1-d ``x``). An all ``-inf``
        row gives ``-inf``; NaN propagates. An empty axis is a ``ValueError``, as for every
        function with a class axis (PyTorch and SciPy give ``-inf``, the log of an empty
        sum).

    Examples
    --------
    >>> import numpy as np, fastloss
    >>> round(float(fastloss.logsumexp(np.array([0.0, np.log(3.0)]))), 12)  # log(1 + 3)
    1.38629436112
    """
    x = as_floating(x, "x")
    axis = class_axis(x, axis, "x")
    layout = to_rows(x, axis)
    batch_shape = layout.batch_shape
    if out is not None:
        check_out(out, "out", batch_shape, x.dtype, may_alias=None, no_overlap=(("x", x),))
    lse = np.empty(layout.rows.shape[0], dtype=layout.rows.dtype)
    if lse.size:
        kernels().rows(_LOGSUMEXP, layout.rows, lse, effective_n_threads(n_threads, x.size))
    lse = lse.reshape(batch_shape)
    if out is None:
        return lse.astype(x.dtype, copy=False)
    out[...] = lse
    return out
