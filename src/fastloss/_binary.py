"""binary_cross_entropy and binary_cross_entropy_with_logits: validation and dispatch to
the elementwise kernels."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastloss._common import ElementwiseSpec, check_real, run_elementwise
from fastloss._kernels import _kernels

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits"]

_UNIT = (0.0, 1.0)
_BCE = ElementwiseSpec(_kernels.BCE, "probs", x_bounds=_UNIT, target_bounds=_UNIT,
                       bounds_hint=" (probabilities)")
_BCE_WITH_LOGITS = ElementwiseSpec(_kernels.BCE_WITH_LOGITS, "logits",
                                   target_bounds=_UNIT, bounds_hint=" (probabilities)")


def binary_cross_entropy(
    probs: Any, target: Any, *, weight: Any = None, reduction: str = "mean",
    base: float | None = None, n_threads: int | None = None, return_grad: bool = False,
    grad_out: np.ndarray | None = None,
) -> Any:
    r"""Binary cross-entropy between probabilities and targets, fused with its gradient:
    PyTorch's ``torch.nn.functional.binary_cross_entropy``.

    Elementwise, for a probability :math:`p`, a target :math:`y \in [0, 1]` (a hard or a
    soft label) and a weight :math:`w` (1 without ``weight``):

    .. math::

        \ell = -w\,\big[\,y\,\max(\log p, -100) + (1 - y)\,\max(\log(1 - p), -100)\,\big]

    The logs are floored at -100 as in PyTorch, so that :math:`p = 0` or :math:`1` gives a
    finite loss (100 against the opposite label). The derivative with respect to ``probs``
    is PyTorch's

    .. math::

        \frac{\partial\ell}{\partial p} = w\,\frac{p - y}{\max\big(p(1 - p), \epsilon\big)}

    with PyTorch's :math:`\epsilon = 10^{-12}` rounded to single precision
    (:math:`10^{-12}(1 - 4 \cdot 10^{-9})`), so that it is about :math:`\mp 10^{12} w` at
    :math:`p = 0` or :math:`1` against the opposite label, and 0 where :math:`p = y`. The
    returned gradient is that of the reduced loss.

    Reductions: ``"none"`` returns each element's loss; ``"sum"`` their sum; ``"mean"``
    their sum over the number of elements (weights are not in the denominator, as in
    PyTorch). A mean over no elements is NaN.

    float64 is computed in double; float32 in float where that keeps each loss and
    derivative within 4 float32 ulps of the exact value, in double where it would not.
    The sum for a reduction is formed in double in a fixed order, so it is the same bits
    for any ``n_threads`` and whether or not the gradient is computed.

    Parameters
    ----------
    probs : array_like of float32 or float64, any shape
        Probabilities in [0, 1]. NaN is allowed and gives NaN for its element (and any
        reduction). float16 is computed in float32 and long double in float64; results
        come back in the input's dtype.
    target : array_like of the shape of ``probs``
        Labels or soft labels in [0, 1] (NaN propagates). Targets of another real dtype
        (integers and booleans included) are converted to the dtype ``probs`` is
        computed in.
    weight : array_like, optional
        Finite, non-negative weights that broadcast to the shape of ``probs``. Weights
        constant over leading axes (a scalar, shape (C,) against (N, C), (D, C) against
        (N, D, C), or the full shape) are read as they are; other broadcasts, such as
        (N, 1), are first expanded to the full shape (one copy).
    reduction : {"mean", "sum", "none"}, default "mean"
    base : float, optional
        Base of the logarithm: None for nats, 2 for bits, any positive number other than
        1; the loss and the gradient are divided by :math:`\ln(\text{base})`.
    n_threads : int, optional
        OpenMP threads. None: OpenMP's default (``OMP_NUM_THREADS``); -1: all CPUs;
        0 is an error.
    return_grad : bool, default False
        Also return the gradient of the loss with respect to ``probs`` (for "none": of
        the sum of the losses).
    grad_out : ndarray, optional
        C-contiguous buffer of the shape and dtype of ``probs`` for the gradient (implies
        ``return_grad``). It may be ``probs`` itself (in place); it must not share memory
        with ``target`` or ``weight``.

    Returns
    -------
    loss : ndarray or scalar of the dtype of ``probs``
        The shape of ``probs`` for "none", else a NumPy scalar.
    grad : ndarray, with ``return_grad`` or ``grad_out``

    Raises
    ------
    ValueError
        Probabilities or targets outside [0, 1], shapes that do not match, weights that
        are negative, infinite, NaN or do not broadcast. The values are checked in the
        kernel's pass: a ``grad_out`` other than ``probs`` itself may have been written
        when their error is raised (in place, ``probs`` is left as it was).
    TypeError
        Non-real arrays.

    Notes
    -----
    Differences from PyTorch: a NaN probability or target gives a NaN loss where PyTorch
    raises an error; targets of another dtype are converted where PyTorch requires the
    dtype of the input; weights must be finite and non-negative; ``base`` is an extra.
    PyTorch computes float32 input in float32, so the two agree to a few float32 ulps.

    Examples
    --------
    The worked figures of the theory notes (``docs/theory.md``), in bits, for the label 1:

    >>> import numpy as np, fastloss
    >>> p = np.array([0.6, 0.9, 0.3])
    >>> fastloss.binary_cross_entropy(p, np.ones(3), reduction="none", base=2).round(4)
    array([0.737, 0.152, 1.737])
    >>> loss, grad = fastloss.binary_cross_entropy(p, [1.0, 0.0, 1.0], return_grad=True)
    >>> round(float(loss), 5)
    1.33913
    >>> grad.round(5)            # (p - y) / (p (1 - p)) / 3
    array([-0.55556,  3.33333, -1.11111])
    """
    return run_elementwise(_BCE, probs, target, weight=weight, reduction=reduction,
                           base=base, n_threads=n_threads, return_grad=return_grad,
                           grad_out=grad_out)


def binary_cross_entropy_with_logits(
    logits: Any, target: Any, *, weight: Any = None, pos_weight: Any = None,
    label_smoothing: float = 0.0, reduction: str = "mean", base: float | None = None,
    n_threads: int | None = None, return_grad: bool = False,
    grad_out: np.ndarray | None = None,
) -> Any:
    r"""Binary cross-entropy between sigmoid(logits) and targets, fused with its gradient:
    PyTorch's ``torch.nn.functional.binary_cross_entropy_with_logits``.

    Elementwise, for a logit :math:`x`, a target :math:`y \in [0, 1]`, a weight :math:`w`
    and a positive-class weight :math:`v` (``pos_weight``; 1 without), with the smoothed
    target :math:`t = y\,(1 - \varepsilon) + \varepsilon / 2` (:math:`t = y` without
    ``label_smoothing``) and :math:`L = 1 + (v - 1)\,t`:

    .. math::

        \ell = w\,\big[(1 - t)\,x + L\,\mathrm{softplus}(-x)\big],
        \qquad \mathrm{softplus}(-x) = \max(-x, 0) + \log\big(1 + e^{-|x|}\big)

    which is :math:`-w\,[\,v\,t \log\sigma(x) + (1 - t) \log(1 - \sigma(x))\,]`, and
    without ``pos_weight`` :math:`w\,[\max(x, 0) - x\,t + \log(1 + e^{-|x|})]`. Its
    derivative with respect to ``logits`` is

    .. math::

        \frac{\partial\ell}{\partial x} = w\,\big(L\,\sigma(x) - v\,t\big)
        \qquad (= w\,(\sigma(x) - t) \text{ without } \texttt{pos\_weight})

    One exponential per element, :math:`e^{-|x|}`, gives both: per sign of :math:`x`
    the loss is a sum of non-negative parts (:math:`(1 - t)\,x` or :math:`-v\,t\,x`, plus
    :math:`L \log(1 + e^{-|x|})`), so nothing cancels and logits of any size (1e4 in
    float32, 1e30) are exact. The returned gradient is that of the reduced loss.

    Reductions as in :func:`binary_cross_entropy`: "none", "sum", or "mean" over the
    number of elements (NaN for none); reduced losses are the same bits for any
    ``n_threads`` and whether or not the gradient is computed.

    Parameters
    ----------
    logits : array_like of float32 or float64, any shape
        Scores; NaN propagates to its element's loss and gradient. An infinite logit
        gives NaN where its coefficient is 0 (+inf with :math:`t = 1`, -inf with
        :math:`t = 0`: :math:`0 \cdot \infty`, as in PyTorch), else +inf (where
        PyTorch gives NaN for -inf), and a finite gradient. float16 is computed in
        float32 and long double in float64.
    target : array_like of the shape of ``logits``
        Labels or soft labels in [0, 1] (NaN propagates); other real dtypes, integers
        and booleans included, are converted to the dtype ``logits`` is computed in.
    weight : array_like, optional
        Finite, non-negative weights that broadcast to the shape of ``logits`` (see
        :func:`binary_cross_entropy` for which broadcasts are read without a copy).
    pos_weight : array_like, optional
        Finite, non-negative weights of the positive class that broadcast to the shape
        of ``target``, typically of shape (C,) for C labels along the last axis.
    label_smoothing : float in [0, 1], default 0
        Replaces the target by :math:`y\,(1 - \varepsilon) + \varepsilon / 2` before
        anything else (``pos_weight`` then weighs the smoothed target). PyTorch has no
        such argument.
    reduction : {"mean", "sum", "none"}, default "mean"
    base, n_threads, return_grad, grad_out
        As in :func:`binary_cross_entropy`, for ``logits``; ``grad_out`` must not share
        memory with ``pos_weight`` either.

    Returns
    -------
    loss, grad
        As in :func:`binary_cross_entropy`: the gradient is with respect to ``logits``.

    Notes
    -----
    Differences from PyTorch: targets outside [0, 1] and negative or non-finite
    ``pos_weight`` raise ``ValueError`` where PyTorch computes something; targets of
    another dtype are converted; a logit of -inf against a positive target gives +inf
    (PyTorch: NaN); ``label_smoothing`` and ``base`` are extras. PyTorch computes
    float32 input in float32, so the two agree to a few float32 ulps.

    Examples
    --------
    >>> import numpy as np, fastloss
    >>> p = np.array([0.6, 0.9, 0.3])
    >>> x = np.log(p / (1 - p))                      # sigmoid(x) = p
    >>> fastloss.binary_cross_entropy_with_logits(x, np.ones(3), reduction="none",
    ...                                           base=2).round(4)
    array([0.737, 0.152, 1.737])
    >>> loss, grad = fastloss.binary_cross_entropy_with_logits(
    ...     np.array([[1e4, -1e4]], dtype=np.float32), np.array([[1.0, 1.0]]),
    ...     pos_weight=np.array([1.0, 3.0]), reduction="sum", return_grad=True)
    >>> float(loss), grad                            # 3 * softplus(1e4)
    (30000.0, array([[ 0., -3.]], dtype=float32))
    """
    return run_elementwise(
        _BCE_WITH_LOGITS, logits, target, weight=weight, pos_weight=pos_weight,
        label_smoothing=check_real(label_smoothing, "label_smoothing", 0.0, 1.0),
        reduction=reduction, base=base, n_threads=n_threads, return_grad=return_grad,
        grad_out=grad_out,
    )
