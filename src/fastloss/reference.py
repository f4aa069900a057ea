"""Plain NumPy implementations of fastloss's functions, written from the formulas.

These are the oracle for the tests and the NumPy peer in the benchmarks. They never call
fastloss, favour clarity over speed (they allocate freely), and compute in float64
whatever the input dtype, returning float64 results.

Conventions shared with fastloss: the max is subtracted before exponentiating; a row whose
max is not finite (all ``-inf``, or containing +inf/NaN) is shifted by 0 instead, so -inf
entries contribute exp(-inf) = 0 and NaN propagates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cross_entropy", "log_softmax", "logsumexp", "softmax"]


def _shifted(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """x - m and m (kept dims), with m the max along axis, or 0 where it is not finite."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[axis] == 0:
        m = np.zeros((*x.shape[:axis % x.ndim], 1, *x.shape[axis % x.ndim + 1:]))
    else:
        m = np.max(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
    return x - m, m


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """m + log(sum_j exp(x_j - m)) along axis."""
    z, m = _shifted(x, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(z), axis=axis))


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """(x_k - m) - log(sum_j exp(x_j - m)) along axis."""
    z, _ = _shifted(x, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x_k - m) / sum_j exp(x_j - m) along axis."""
    z, _ = _shifted(x, axis)
    e = np.exp(z)
    with np.errstate(divide="ignore", invalid="ignore"):
        return e / np.sum(e, axis=axis, keepdims=True)


def _one_hot(target: np.ndarray, n_classes: int, axis: int, ndim: int) -> np.ndarray:
    """One-hot encoding of integer targets, with the class axis inserted at ``axis``."""
    target = np.asarray(target)
    onehot = np.zeros((*target.shape, n_classes))      # class axis last
    np.put_along_axis(onehot, target[..., None], 1.0, axis=-1)
    return np.moveaxis(onehot, -1, axis % ndim)


def cross_entropy(
    logits: np.ndarray,
    target: np.ndarray,
    *,
    reduction: str = "mean",
    axis: int = -1,
    return_grad: bool = False,
):
    """-log softmax(logits)_y per row; gradient softmax - onehot (divided by N for mean).

    Per row the loss is written as (m - x_y) + log(sum_j exp(x_j - m)): the same value as
    logsumexp(x) - x_y, without rounding logsumexp first.
    """
    x = np.asarray(logits, dtype=np.float64)
    axis = axis % x.ndim
    n_classes = x.shape[axis]
    onehot = _one_hot(target, n_classes, axis, x.ndim)
    z, _ = _shifted(x, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_sum = np.log(np.sum(np.exp(z), axis=axis))
        # -sum_k onehot_k * z_k picks -z_y; masking with where() keeps -inf * 0 out.
        z_target = np.sum(np.where(onehot == 1, z, 0.0), axis=axis)
        losses = log_sum - z_target
    n = losses.size
    if reduction == "none":
        loss = losses
    elif reduction == "sum":
        loss = np.sum(losses)
    elif reduction == "mean":
        loss = np.sum(losses) / n if n else np.nan
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    if not return_grad:
        return loss
    grad = softmax(x, axis) - onehot
    if reduction == "mean" and n:
        grad = grad / n
    return loss, grad
