"""cross_entropy: validation, dispatch to the fused kernels, and the reduction."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastloss._common import (
    as_floating,
    check_out,
    check_reduction,
    effective_n_threads,
    full_output,
    normalize_axis,
    to_rows,
)
from fastloss._kernels import _cross_entropy

__all__ = ["cross_entropy"]


def _check_class_target(target: Any, batch_shape: tuple[int, ...], n_classes: int,
                        axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (the target as given, the target as flat C-contiguous intp for the kernel)."""
    given = np.asarray(target)
    if given.dtype.kind not in "iu":
        raise TypeError(
            f"target must be an array of integer class indices, got dtype {given.dtype}"
        )
    if given.shape != batch_shape:
        raise ValueError(
            f"target must have the shape of logits without its class axis ({axis}), "
            f"{batch_shape}, got {given.shape}"
        )
    if given.size and (given.min() < 0 or given.max() >= n_classes):
        flat = given.reshape(-1)
        first = int(np.flatnonzero((flat < 0) | (flat >= n_classes))[0])
        where = np.unravel_index(first, batch_shape) if batch_shape else ()
        raise IndexError(
            f"target must hold class indices in [0, {n_classes}), "
            f"got {flat[first]} at index {tuple(int(i) for i in where)}"
        )
    return given, np.ascontiguousarray(given, dtype=np.intp).reshape(-1)


def _reduce(row_losses: np.ndarray, reduction: str, batch_shape: tuple[int, ...],
            dtype: np.dtype) -> Any:
    """Per-row float64 losses to the result. The sum is NumPy's pairwise sum over a buffer
    written in row order, so it does not depend on the number of threads."""
    if reduction == "none":
        return row_losses.reshape(batch_shape).astype(dtype, copy=False)
    total = float(np.sum(row_losses))
    if reduction == "mean":
        total = total / row_losses.size if row_losses.size else float("nan")
    return dtype.type(total)


def cross_entropy(
    logits: Any,
    target: Any,
    *,
    reduction: str = "mean",
    axis: int = -1,
    n_threads: int | None = None,
    return_grad: bool = False,
    grad_out: np.ndarray | None = None,
) -> Any:
    r"""Cross-entropy between softmax(logits) and integer class targets, optionally fused
    with its gradient.

    For a row of scores :math:`x` (length C) and its class :math:`y`:

    .. math::

        \ell = -\log \mathrm{softmax}(x)_y = \operatorname{logsumexp}(x) - x_y
             = (m - x_y) + \log \sum_j e^{x_j - m}, \quad m = \max_j x_j

    .. math::

        \frac{\partial \ell}{\partial x_k} = \mathrm{softmax}(x)_k - [k = y]

    ``reduction="mean"`` averages over the N rows (every position of the target), so its
    gradient is the one above divided by N; ``"sum"`` adds them; ``"none"`` returns each
    row's loss, and the gradient of their sum. This matches
    ``torch.nn.functional.cross_entropy`` with integer targets (and no weight,
    ignore_index or label smoothing) when ``axis`` names the class axis (PyTorch's is 1).

    The loss and gradient of a row come out of one fused kernel: the first pass reads the
    row once and stores its exponentials in the gradient buffer, the second rescales them
    while the row is in cache. Each row's loss is formed in double before it is rounded,
    and reductions sum float64 row losses in a fixed order, so they are the same bits for
    any ``n_threads`` and whether or not the gradient is computed.

    Parameters
    ----------
    logits : array_like of float32 or float64, shape (..., C, ...)
        Unnormalised scores, C classes along ``axis``. Other float dtypes are computed in
        float32 (float16) or float64 (long double) and returned in their own dtype.
        ``-inf`` masks a class; NaN gives NaN for its row (and any reduction over it).
    target : array_like of int
        Class indices in ``[0, C)``, shape of ``logits`` without ``axis``.
    reduction : {"mean", "sum", "none"}, default "mean"
        With N = 0 rows, "sum" gives 0 and "mean" NaN, like PyTorch.
    axis : int, default -1
        The class axis. The fast path (no copy) is the last axis of a C-contiguous array;
        otherwise one contiguous copy with the class axis last is made, and the returned
        gradient is a view of a buffer in that layout.
    n_threads : int, optional
        OpenMP threads. None: OpenMP's default (``OMP_NUM_THREADS``); -1: all CPUs;
        0 is an error.
    return_grad : bool, default False
        Also return the gradient of the loss with respect to ``logits``.
    grad_out : ndarray, optional
        C-contiguous buffer of the shape and dtype of ``logits`` for the gradient (implies
        ``return_grad=True``). It may be ``logits`` itself: on the fast path the logits
        are then overwritten by the gradient and no N x C memory is allocated.

    Returns
    -------
    loss : ndarray or scalar of the dtype of ``logits``
        Shape of ``target`` for "none", else a NumPy scalar.
    grad : ndarray, only with ``return_grad`` or ``grad_out``
        Same shape and dtype as ``logits`` (``grad_out`` if given).

    Examples
    --------
    >>> import numpy as np, fastloss
    >>> logits = np.array([[2.3, -1.2]])      # dog 2.3, cat -1.2
    >>> loss, grad = fastloss.cross_entropy(logits, np.array([1]), return_grad=True)
    >>> round(float(loss), 5)                 # the true class is "cat"
    3.52975
    >>> grad.round(5)                         # softmax - onehot
    array([[ 0.97069, -0.97069]])
    """
    logits = as_floating(logits, "logits")
    axis = normalize_axis(axis, logits.ndim, "logits")
    reduction = check_reduction(reduction)
    n_classes = logits.shape[axis]
    if n_classes == 0:
        raise ValueError(f"logits must have at least one class along axis {axis}, got 0")
    batch_shape = logits.shape[:axis] + logits.shape[axis + 1:]
    given_target, flat_target = _check_class_target(target, batch_shape, n_classes, axis)
    with_grad = bool(return_grad) or grad_out is not None
    if grad_out is not None:
        check_out(grad_out, "grad_out", logits.shape, logits.dtype, may_alias=logits,
                  no_overlap=(("target", given_target),), require_c_contiguous=True)

    layout = to_rows(logits, axis)
    n_rows = layout.rows.shape[0]
    row_losses = np.empty(n_rows, dtype=np.float64)
    threads = effective_n_threads(n_threads, logits.size)
    if with_grad:
        grad_buf, finish = full_output(layout, grad_out)
        scale = 1.0 / n_rows if reduction == "mean" and n_rows else 1.0
        if n_rows:
            _cross_entropy.cross_entropy_grad_rows(
                layout.rows, flat_target, row_losses, grad_buf, scale, threads
            )
        loss = _reduce(row_losses, reduction, batch_shape, layout.dtype)
        return loss, finish()
    if n_rows:
        _cross_entropy.cross_entropy_rows(layout.rows, flat_target, row_losses, threads)
    return _reduce(row_losses, reduction, batch_shape, layout.dtype)
