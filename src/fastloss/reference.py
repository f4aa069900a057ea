"""Plain NumPy implementations of fastloss's functions, written from the formulas.

These are the oracle for the tests and the NumPy peer in the benchmarks. They never call
fastloss, favour clarity over speed (they allocate freely), and compute in float64
whatever the input dtype, returning float64 results.

Conventions shared with fastloss: the max is subtracted before exponentiating; a row whose
max is not finite (all ``-inf``, or containing +inf/NaN) is shifted by 0 instead, so -inf
entries contribute exp(-inf) = 0 and NaN propagates.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "entropy",
    "entropy_from_logits",
    "focal_loss",
    "kl_div",
    "kl_div_with_logits",
    "log_softmax",
    "logsumexp",
    "sigmoid_focal_loss",
    "softmax",
]


def _shifted(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """x - m and m (kept dims), with m the max along axis, or 0 where it is not finite."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[axis] == 0:
        m = np.zeros((*x.shape[:axis % x.ndim], 1, *x.shape[axis % x.ndim + 1:]))
    else:
        m = np.max(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
    return x - m, m


def _log_sum_exp(z: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    """log(sum_j exp(z_j)) for shifted scores z, as log1p(sum - 1).

    The terms z_j = 0 (the max) are exactly 1: counting them instead of adding them keeps
    sum - 1 exact, so that a log near 0 (a small loss) keeps its relative accuracy, which
    log(sum) would round away (1e-14 relative at a loss of 1e-2).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        others = np.sum(np.where(z == 0, 0.0, np.exp(z)), axis=axis, keepdims=keepdims)
        ones = np.sum(z == 0, axis=axis, keepdims=keepdims)
        result: np.ndarray = np.log1p((ones - 1.0) + others)
    return result


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """m + log(sum_j exp(x_j - m)) along axis."""
    z, m = _shifted(x, axis)
    result: np.ndarray = np.squeeze(m, axis) + _log_sum_exp(z, axis)
    return result


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """(x_k - m) - log(sum_j exp(x_j - m)) along axis."""
    z, _ = _shifted(x, axis)
    with np.errstate(invalid="ignore"):
        result: np.ndarray = z - _log_sum_exp(z, axis, keepdims=True)
    return result


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(x_k - m) / sum_j exp(x_j - m) along axis."""
    z, _ = _shifted(x, axis)
    e = np.exp(z)
    with np.errstate(divide="ignore", invalid="ignore"):
        result: np.ndarray = e / np.sum(e, axis=axis, keepdims=True)
    return result


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
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    sample_weight: np.ndarray | None = None,
    z_loss: float = 0.0,
    reduction: str = "mean",
    axis: int = -1,
    return_grad: bool = False,
    return_lse: bool = False,
    base: float | None = None,
) -> Any:
    """Cross-entropy of softmax(logits) against class indices or probabilities.

    Per row, with q the target distribution times the class weights,
    q = ((1 - eps) * onehot(y) + eps / C) * w for a class y, or
    q = ((1 - eps) * t + eps / C) * w for probabilities t, the loss is
    -sum_j q_j log_softmax(x)_j + z * logsumexp(x)^2, times the sample weight s; a
    term with q_j = 0 counts 0. Ignored rows, and rows with s = 0, count 0.
    "mean" divides by sum(s * w_y) over counted rows (class targets) or sum(s)
    (probabilities). The gradient of a row is s / D * ((sum_j q_j + 2 z lse) softmax - q).
    Loss and gradient are divided by ln(base) (base None: nats).
    """
    unit = 1.0 if base is None else np.log(base)
    x = np.asarray(logits, dtype=np.float64)
    axis = axis % x.ndim
    n_classes = x.shape[axis]
    target = np.asarray(target)
    soft = target.dtype.kind == "f"
    shape_w = [1] * x.ndim
    shape_w[axis] = n_classes
    w = np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    if soft:
        counted = np.ones(x.shape[:axis] + x.shape[axis + 1:], dtype=bool)
        dist = target.astype(np.float64)
        w_target: np.ndarray | None = None
    else:
        counted = target != ignore_index
        classes = np.where(counted, target, 0)
        dist = _one_hot(classes, n_classes, axis, x.ndim)
        w_target = w[classes]
    s = np.ones(counted.shape) if sample_weight is None else np.asarray(sample_weight, float)
    counted = counted & (s != 0)
    q = ((1.0 - label_smoothing) * dist + label_smoothing / n_classes) * w.reshape(shape_w)
    q = q * np.expand_dims(counted, axis)
    logp = log_softmax(x, axis)
    lse = logsumexp(x, axis)
    with np.errstate(invalid="ignore"):
        terms = np.where(q == 0, 0.0, -q * logp)
    losses = np.sum(terms, axis=axis) + z_loss * lse**2
    losses = np.where(counted, s * losses, 0.0)
    loss: Any
    if reduction == "none":
        loss = losses
        denominator = 1.0
    elif reduction == "sum":
        loss = np.sum(losses)
        denominator = 1.0
    elif reduction == "mean":
        w_counted = 1.0 if soft else cast(np.ndarray, w_target)   # w_target: class targets
        denominator = np.sum(np.where(counted, s * w_counted, 0.0))
        loss = np.sum(losses) / denominator if denominator > 0 else np.nan
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    results = [loss / unit]
    if return_grad:
        slope = np.sum(q, axis=axis, keepdims=True) + 2 * z_loss * np.expand_dims(lse, axis)
        row_scale = np.expand_dims(np.where(counted, s, 0.0), axis)
        with np.errstate(invalid="ignore"):
            grad = row_scale * (slope * softmax(x, axis) - q)
        grad = np.where(np.expand_dims(counted, axis), grad, 0.0)
        results.append((grad / denominator if denominator > 0 else grad * 0.0) / unit)
    if return_lse:
        results.append(lse)
    return results[0] if len(results) == 1 else tuple(results)


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x * log(y), and 0 where x == 0 (whatever y is)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(y))


def _reduce(values: np.ndarray, reduction: str, denominator: float) -> Any:
    if reduction == "none":
        return values
    total = np.sum(values)
    if reduction == "sum":
        return total
    return total / denominator if denominator else np.nan


def entropy(p: np.ndarray, axis: int = -1, base: float | None = None) -> np.ndarray:
    """-sum_j p_j log p_j along axis, with 0 log 0 = 0, divided by ln(base)."""
    p = np.asarray(p, dtype=np.float64)
    unit = 1.0 if base is None else np.log(base)
    result: np.ndarray = -np.sum(_xlogy(p, p), axis=axis) / unit
    return result


def entropy_from_logits(
    logits: np.ndarray,
    axis: int = -1,
    base: float | None = None,
    reduction: str = "none",
    return_grad: bool = False,
) -> Any:
    """H(softmax(x)) = -sum_j q_j log q_j per row; gradient -q_j (log q_j + H)."""
    x = np.asarray(logits, dtype=np.float64)
    unit = 1.0 if base is None else np.log(base)
    q = softmax(x, axis)
    logq = log_softmax(x, axis)
    with np.errstate(invalid="ignore"):
        h = -np.sum(np.where(q == 0, 0.0, q * logq), axis=axis)
    n_rows = h.size
    result = _reduce(h, reduction, n_rows) / unit
    if not return_grad:
        return result
    with np.errstate(invalid="ignore"):
        grad = np.where(q == 0, 0.0, -q * (logq + np.expand_dims(h, axis)))
    if reduction == "mean":
        grad = grad / n_rows if n_rows else grad
    return result, grad / unit


def kl_div_with_logits(
    student_logits: np.ndarray,
    teacher: np.ndarray,
    *,
    teacher_kind: str = "probs",
    temperature: float = 1.0,
    scale_by_temperature: bool = True,
    reduction: str = "batchmean",
    axis: int = -1,
    base: float | None = None,
    return_grad: bool = False,
) -> Any:
    """T^2 * sum_j p_j (log p_j - log q_j) per row, q = softmax(s / T), p the teacher's
    distribution (given, exp of given log-probabilities, or softmax(t / T)); terms with
    p_j = 0 count 0. Gradient T * (q * sum_j p_j - p) (without the T^2: divided by T^2)."""
    s = np.asarray(student_logits, dtype=np.float64)
    t = np.asarray(teacher, dtype=np.float64)
    axis = axis % s.ndim
    temp = float(temperature)
    if teacher_kind == "probs":
        p = t
        with np.errstate(divide="ignore"):
            logp = np.log(t)
    elif teacher_kind == "log_probs":
        p, logp = np.exp(t), t
    else:
        p, logp = softmax(t / temp, axis), log_softmax(t / temp, axis)
    logq = log_softmax(s / temp, axis)
    with np.errstate(invalid="ignore"):
        terms = np.where(p == 0, 0.0, p * (logp - logq))
    factor = temp**2 if scale_by_temperature else 1.0
    rows = factor * np.sum(terms, axis=axis)
    unit = 1.0 if base is None else np.log(base)
    denominator = {"batchmean": s.shape[0], "mean": s.size}.get(reduction, 1)
    loss = _reduce(rows, reduction, denominator) / unit
    if not return_grad:
        return loss
    q = softmax(s / temp, axis)
    grad = factor / temp * (q * np.sum(p, axis=axis, keepdims=True) - p)
    if reduction in ("batchmean", "mean"):
        grad = grad / denominator if denominator else grad
    return loss, grad / unit
def _reduce_elementwise(losses: np.ndarray, grad: np.ndarray, reduction: str,
                        base: float | None, return_grad: bool) -> Any:
    """Elementwise losses and derivatives (float64) to the result: "none", "sum", "mean"
    (over the number of elements) or "batchmean" (over the first dimension; a 0-d input
    is summed), all in units of ``base`` (None: nats). The gradient is that of the
    reduced loss ("none": of the sum)."""
    if reduction in ("none", "sum"):
        denominator = 1.0
    elif reduction == "mean":
        denominator = float(losses.size)
    elif reduction == "batchmean":
        denominator = float(losses.shape[0]) if losses.ndim else 1.0
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    unit = 1.0 if base is None else float(np.log(base))
    loss: Any
    if reduction == "none":
        loss = losses / unit
    else:
        loss = np.sum(losses) / denominator / unit if denominator > 0 else np.nan
    if not return_grad:
        return loss
    return loss, grad / (denominator * unit) if denominator > 0 else grad


def _broadcast_weight(weight: Any, shape: tuple[int, ...]) -> np.ndarray:
    if weight is None:
        return np.ones(shape)
    return np.broadcast_to(np.asarray(weight, dtype=np.float64), shape)


def binary_cross_entropy(
    probs: np.ndarray,
    target: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    reduction: str = "mean",
    base: float | None = None,
    return_grad: bool = False,
) -> Any:
    """-w [y max(log p, -100) + (1 - y) max(log(1 - p), -100)] per element; its
    derivative w (p - y) / max(p (1 - p), eps), as PyTorch defines both, with PyTorch's
    eps = 1e-12 in single precision."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    w = _broadcast_weight(weight, p.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = np.maximum(np.log(p), -100.0)
        log_q = np.maximum(np.log1p(-p), -100.0)
        losses = -w * (y * log_p + (1.0 - y) * log_q)
        grad = w * (p - y) / np.maximum(p * (1.0 - p), float(np.float32(1e-12)))
    return _reduce_elementwise(losses, grad, reduction, base, return_grad)


def binary_cross_entropy_with_logits(
    logits: np.ndarray,
    target: np.ndarray,
    *,
    weight: np.ndarray | None = None,
    pos_weight: np.ndarray | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    base: float | None = None,
    return_grad: bool = False,
) -> Any:
    """w [(1 - t) x + L softplus(-x)] per element, with t = y (1 - eps) + eps / 2 and
    L = 1 + (v - 1) t (v: pos_weight); derivative w (L sigmoid(x) - v t).

    softplus(-x) = max(-x, 0) + log1p(exp(-|x|)). For x < 0 the linear parts
    (1 - t) x - L x are collected into -v t x first, so that no two large terms cancel
    (they would for x = -1e4 and t near 0); likewise the derivative is formed from
    sigmoid(-|x|) on each side, where it does not round to 1."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    w = _broadcast_weight(weight, x.shape)
    v = _broadcast_weight(pos_weight, x.shape)
    t = y * (1.0 - label_smoothing) + label_smoothing / 2.0
    coef = 1.0 + (v - 1.0) * t
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(-np.abs(x))
        softplus_part = np.log1p(e)                         # softplus(-x) - max(-x, 0)
        sigmoid_small = e / (1.0 + e)                       # sigmoid(-|x|)
        linear = np.where(x >= 0, (1.0 - t) * x, -v * t * x)
        losses = w * (linear + coef * softplus_part)
        slope = np.where(x >= 0, (1.0 - t) - coef * sigmoid_small,
                         coef * sigmoid_small - v * t)
        grad = w * slope
    return _reduce_elementwise(losses, grad, reduction, base, return_grad)


def kl_div(
    input: np.ndarray,
    target: np.ndarray,
    *,
    reduction: str = "mean",
    log_target: bool = False,
    base: float | None = None,
    return_grad: bool = False,
) -> Any:
    """p (log p - x) per element with p the target probability (exp(target) with
    log_target), exactly 0 where p = 0 unless x is NaN; derivative -p with respect to x."""
    x = np.asarray(input, dtype=np.float64)
    given = np.asarray(target, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        p = np.exp(given) if log_target else given
        log_p = given if log_target else np.log(given)
        terms = p * (log_p - x)
    zero_terms = np.where(np.isnan(x), np.nan, 0.0)
    losses = np.where(p == 0, zero_terms, terms)
    return _reduce_elementwise(losses, -p, reduction, base, return_grad)


def sigmoid_focal_loss(
    logits: np.ndarray,
    target: np.ndarray,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
    weight: np.ndarray | None = None,
    return_grad: bool = False,
) -> Any:
    """w a_t (1 - p_t)^g BCE(x, t) per element, p = sigmoid(x), 1 - p_t = p (1 - t) +
    t (1 - p), a_t = a t + (1 - a)(1 - t) (1 for a < 0); its derivative
    w a_t [(1 - p_t)^g (p - t) + g (1 - p_t)^(g - 1) BCE (1 - 2 t) p (1 - p)].

    p and 1 - p are each taken as 1 / (1 + exp(-x)) and 1 / (1 + exp(x)), the BCE with
    logits as in :func:`binary_cross_entropy_with_logits`; 0^(g - 1) times 0 counts 0."""
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    w = _broadcast_weight(weight, x.shape)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        p = 1.0 / (1.0 + np.exp(-x))
        p_c = 1.0 / (1.0 + np.exp(x))
        bce = np.where(x >= 0, (1.0 - t) * x, -t * x) + np.log1p(np.exp(-np.abs(x)))
        m = p * (1.0 - t) + t * p_c
        a_t = alpha * t + (1.0 - alpha) * (1.0 - t) if alpha >= 0 else np.ones_like(x)
        losses = w * a_t * m**gamma * bce
        focus = np.where(m > 0, gamma * m ** (gamma - 1.0) * bce * (1.0 - 2.0 * t) * p * p_c,
                         0.0) if gamma != 0 else 0.0
        grad = w * a_t * (m**gamma * (p - t) + focus)
    return _reduce_elementwise(losses, grad, reduction, None, return_grad)


def focal_loss(
    logits: np.ndarray,
    target: np.ndarray,
    *,
    gamma: float = 2.0,
    weight: np.ndarray | None = None,
    ignore_index: int = -100,
    sample_weight: np.ndarray | None = None,
    reduction: str = "mean",
    axis: int = -1,
    return_grad: bool = False,
) -> Any:
    """s w_y (1 - p_y)^g ce per row, ce = -log softmax(x)_y, p_y = softmax(x)_y (1 - p_y
    as the sum of the other classes' probabilities); ignored rows count 0; "mean" divides
    by sum(s w_y) over the counted rows. The gradient of a row is
    s w_y [(1 - p_y)^g - g (1 - p_y)^(g - 1) p_y log p_y] (softmax - onehot(y)) / D."""
    x = np.asarray(logits, dtype=np.float64)
    axis = axis % x.ndim
    n_classes = x.shape[axis]
    y = np.asarray(target)
    counted = y != ignore_index
    classes = np.where(counted, y, 0)
    onehot = _one_hot(classes, n_classes, axis, x.ndim)
    w = np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    s = np.ones(y.shape) if sample_weight is None else np.asarray(sample_weight, float)
    row_w = np.where(counted, s * w[classes], 0.0)
    probs = softmax(x, axis)
    ce = -np.sum(np.where(onehot == 1, log_softmax(x, axis), 0.0), axis=axis)
    p_y = np.sum(probs * onehot, axis=axis)
    others = np.sum(probs * (1 - onehot), axis=axis)           # 1 - p_y
    with np.errstate(divide="ignore", invalid="ignore"):
        losses = row_w * others**gamma * ce
        p_ce = np.where(p_y > 0, p_y * ce, 0.0)          # its limit 0 where ce = inf
        factor = np.where(others > 0, row_w * others ** (gamma - 1.0) *
                          (others + gamma * p_ce), 0.0)
    loss: Any
    denominator = 1.0
    if reduction == "none":
        loss = losses
    elif reduction == "sum":
        loss = np.sum(losses)
    elif reduction == "mean":
        denominator = float(np.sum(row_w))
        loss = np.sum(losses) / denominator if denominator > 0 else np.nan
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    if not return_grad:
        return loss
    grad = np.expand_dims(factor, axis) * (probs - onehot)
    return loss, grad / denominator if denominator > 0 else grad * 0.0
