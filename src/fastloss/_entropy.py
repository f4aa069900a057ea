"""entropy and entropy_from_logits: validation and dispatch to the row kernels."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastloss._common import (
    as_floating,
    check_non_negative,
    check_reduction,
    class_axis,
    full_output,
    gradient_requested,
    log_base,
    to_rows,
)
from fastloss._cross_entropy import reduce_rows
from fastloss._dispatch import kernels
from fastloss._threads import effective_n_threads

__all__ = ["entropy", "entropy_from_logits"]


def entropy(
    p: Any, *, axis: int = -1, base: float | None = None, n_threads: int | None = None
) -> np.ndarray:
    r"""Shannon entropy of probability vectors along an axis.

    .. math:: H(p) = -\sum_j p_j \log p_j, \qquad 0 \log 0 = 0

    Parameters
    ----------
    p : array_like of float
        Probabilities along ``axis``: finite and non-negative (``ValueError`` otherwise;
        NaN propagates to its row). Rows are used as given: unlike
        ``scipy.stats.entropy``, fastloss does not renormalise them to sum 1.
    axis : int, default -1
    base : float, optional
        None for nats, 2 for bits, any positive number other than 1.
    n_threads : int, optional
        OpenMP threads (None: OpenMP's default, -1: all CPUs).

    Returns
    -------
    ndarray
        Shape of ``p`` without ``axis``, dtype of ``p``.

    Examples
    --------
    >>> import numpy as np, fastloss
    >>> float(fastloss.entropy(np.array([0.5, 0.5]), base=2))      # a fair coin: 1 bit
    1.0
    >>> round(float(fastloss.entropy(np.full(6, 1 / 6))), 4)        # a fair die: log 6
    1.7918
    """
    p = as_floating(p, "p")
    axis = class_axis(p, axis, "p")
    check_non_negative(p, "p", nan_ok=True, n_threads=n_threads)
    unit = log_base(base)
    layout = to_rows(p, axis)
    out = np.empty(layout.rows.shape[0], dtype=np.float64)
    if out.size:
        kernels().entropy(layout.rows, out, 1.0 / unit, effective_n_threads(n_threads, p.size))
    return out.reshape(layout.batch_shape).astype(p.dtype)


def entropy_from_logits(
    logits: Any,
    *,
    axis: int = -1,
    base: float | None = None,
    reduction: str = "none",
    n_threads: int | None = None,
    return_grad: bool = False,
    grad_out: np.ndarray | None = None,
) -> Any:
    r"""Entropy of softmax(logits) (the predictive entropy), and its gradient.

    With :math:`q = \mathrm{softmax}(x)`:

    .. math::

        H = -\sum_j q_j \log q_j = \mathrm{lse}(x) - \sum_j q_j x_j, \qquad
        \frac{\partial H}{\partial x_j} = q_j\,(\mathrm{lse}(x) - x_j - H)

    computed from one read of each row (the gradient in a second pass over the row while
    it is in cache), e.g. for an entropy bonus in reinforcement learning or a confidence
    penalty. ``-inf`` logits are classes of probability 0 (gradient 0).

    Parameters
    ----------
    logits : array_like of float32 or float64
        C classes along ``axis``.
    axis : int, default -1
        The class axis; any axis but the last of a C-contiguous array costs one copy.
    base : float, optional
        None for nats, 2 for bits.
    reduction : {"none", "mean", "sum"}, default "none"
        "none": the entropy of each row; "mean" / "sum" over the rows.
    n_threads : int, optional
        OpenMP threads (None: OpenMP's default, -1: all CPUs).
    return_grad : bool, default False
        Also return the gradient (of the sum of the row entropies for "none").
    grad_out : ndarray, optional
        C-contiguous buffer of the logits' shape and dtype for the gradient; may be
        ``logits`` itself.

    Returns
    -------
    entropy : ndarray (shape of ``logits`` without ``axis``) or scalar
    grad : ndarray, with ``return_grad`` or ``grad_out``

    Examples
    --------
    >>> import numpy as np, fastloss
    >>> float(fastloss.entropy_from_logits(np.zeros(2), base=2))    # uniform over 2: 1 bit
    1.0
    """
    logits = as_floating(logits, "logits")
    axis = class_axis(logits, axis, "logits")
    reduction = check_reduction(reduction)
    unit = log_base(base)
    with_grad = gradient_requested(return_grad, grad_out, logits)
    layout = to_rows(logits, axis)
    n_rows = layout.rows.shape[0]
    row_entropy = np.empty(n_rows, dtype=np.float64)
    denominator = float(n_rows) if reduction == "mean" else 1.0
    grad_buf = None
    if with_grad:
        grad_buf, finish = full_output(layout, grad_out)
    if n_rows:
        kernels().entropy_from_logits(
            layout.rows, row_entropy, grad_buf,
            1.0 / denominator if denominator else 0.0, 1.0 / unit,
            effective_n_threads(n_threads, logits.size),
        )
    result = reduce_rows(row_entropy, reduction, denominator, layout.batch_shape,
                         logits.dtype)
    return (result, finish()) if with_grad else result
