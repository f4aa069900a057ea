"""Focal losses: the sigmoid focal loss of dense detection (elementwise) and the
multi-class focal loss over softmax (one row per sample)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fastloss._common import ElementwiseSpec, check_real, run_elementwise
from fastloss._cross_entropy import _cross_entropy, cross_entropy
from fastloss._kernels import _kernels

__all__ = ["focal_loss", "sigmoid_focal_loss"]

_SIGMOID_FOCAL = ElementwiseSpec(_kernels.SIGMOID_FOCAL, "logits", target_bounds=(0.0, 1.0),
                                 bounds_hint=" (probabilities)")


def sigmoid_focal_loss(
    logits: Any, target: Any, *, alpha: float = 0.25, gamma: float = 2.0,
    reduction: str = "none", weight: Any = None, n_threads: int | None = None,
    return_grad: bool = False, grad_out: np.ndarray | None = None,
) -> Any:
    r"""Sigmoid focal loss (Lin et al., 2017), fused with its gradient:
    ``torchvision.ops.sigmoid_focal_loss``.

    Elementwise, for a logit :math:`x` with :math:`p = \sigma(x)`, a target
    :math:`t \in [0, 1]` and a weight :math:`w` (1 without ``weight``):

    .. math::

        \ell = w\,\alpha_t\,(1 - p_t)^\gamma\,\mathrm{BCE}(x, t),\qquad
        1 - p_t = p\,(1 - t) + t\,(1 - p),\qquad
        \alpha_t = \alpha\,t + (1 - \alpha)(1 - t)

    with :math:`\mathrm{BCE}(x, t) = \max(x, 0) - x\,t + \log(1 + e^{-|x|})` (as in
    :func:`binary_cross_entropy_with_logits`) and :math:`\alpha_t = 1` where
    :math:`\alpha < 0`. With :math:`m = 1 - p_t` its derivative is

    .. math::

        \frac{\partial\ell}{\partial x} = w\,\alpha_t\,\big[m^\gamma\,(p - t)
        + \gamma\,m^{\gamma - 1}\,\mathrm{BCE}(x, t)\,(1 - 2t)\,p\,(1 - p)\big]

    :math:`p` and :math:`1 - p` both come from :math:`e^{-|x|}`, so :math:`m` is a sum of
    non-negative parts: a confident, correct element (:math:`m` tiny) keeps its relative
    accuracy, where :math:`1 - p_t` computed as written cancels to 0. Computed in double
    for both dtypes; :math:`m^\gamma` is exact but for a rounding at :math:`\gamma` = 0, 1,
    2 and :math:`e^{\gamma \log m}` otherwise.

    Parameters
    ----------
    logits : array_like of float32 or float64, any shape
        Scores; NaN propagates. float16 is computed in float32, long double in float64.
    target : array_like of the shape of ``logits``
        Labels or soft labels in [0, 1], converted to the dtype ``logits`` is computed in.
    alpha : float, default 0.25
        Weight of the positive class in [0, 1]; a negative value disables the
        :math:`\alpha_t` factor, as in torchvision.
    gamma : float, default 2.0
        Focusing exponent, finite and :math:`\ge 0`; 0 gives :math:`\alpha_t`-weighted BCE.
    reduction : {"none", "mean", "sum"}, default "none"
        torchvision's default is "none"; "mean" divides by the number of elements.
    weight : array_like, optional
        Finite, non-negative weights that broadcast to the shape of ``logits`` (an extra).
    n_threads : int, optional
        Threads for the kernel (default: all the process may use, serial below a size).
    return_grad : bool, default False
        Also return the gradient of the reduced loss (of the sum for "none").
    grad_out : ndarray, optional
        Where to write the gradient (may be ``logits`` itself); implies ``return_grad``.

    Returns
    -------
    loss : ndarray or scalar
        Per element for "none", else a scalar of the input's dtype; reduced losses are
        the same bits for any ``n_threads``.
    grad : ndarray
        Only with ``return_grad`` or ``grad_out``.

    Notes
    -----
    Differences from torchvision: ``alpha`` above 1 and targets outside [0, 1] raise
    ``ValueError``; ``weight``, ``return_grad`` and ``n_threads`` are extras. Where
    :math:`m = 0` exactly the gradient's second part is its limit 0 (torchvision's
    autograd gives NaN there for :math:`\gamma < 1`).

    Examples
    --------
    >>> import numpy as np, fastloss
    >>> x = np.array([3.0, -2.0, 0.5])
    >>> t = np.array([1.0, 0.0, 1.0])
    >>> fastloss.sigmoid_focal_loss(x, t).round(6)
    array([2.7000e-05, 1.3530e-03, 1.6893e-02])
    >>> loss, grad = fastloss.sigmoid_focal_loss(x, t, reduction="sum", return_grad=True)
    >>> round(float(loss), 6), grad.round(5)
    (0.018273, array([-8.000e-05,  3.650e-03, -3.448e-02]))
    """
    alpha = check_real(alpha, "alpha", -math.inf, 1.0)
    gamma = check_real(gamma, "gamma", 0.0)
    return run_elementwise(
        _SIGMOID_FOCAL, logits, target, weight=weight, reduction=reduction, base=None,
        n_threads=n_threads, return_grad=return_grad, grad_out=grad_out,
        focal=(alpha, gamma),
    )


def focal_loss(
    logits: Any, target: Any, *, gamma: float = 2.0, weight: Any = None,
    ignore_index: int = -100, sample_weight: Any = None, reduction: str = "mean",
    axis: int = -1, n_threads: int | None = None, return_grad: bool = False,
    grad_out: np.ndarray | None = None,
) -> Any:
    r"""Multi-class focal loss over softmax(logits) with class targets, fused with its
    gradient.

    For a row with target class :math:`y`, :math:`\ell = -\log\mathrm{softmax}(x)_y` (the
    cross-entropy of :func:`cross_entropy`) and :math:`p_y = e^{-\ell}`, class weights
    :math:`w` and sample weight :math:`s` (1 without):

    .. math::

        L = s\,w_y\,(1 - p_y)^\gamma\,\ell,\qquad
        \frac{\partial L}{\partial x_j} = s\,w_y\,\big[(1 - p_y)^\gamma
        + \gamma\,(1 - p_y)^{\gamma - 1}\,p_y\,\ell\big]\,(\mathrm{softmax}(x)_j - [j = y])

    :math:`1 - p_y` is formed as :math:`-\mathrm{expm1}(-\ell)`, without cancellation, so a
    confident row (:math:`p_y` near 1) keeps its relative accuracy. At :math:`\gamma = 0`
    this is :func:`cross_entropy` (with the same arguments, the same bits: the call is
    passed to it).

    Reductions as :func:`cross_entropy`'s for class targets: "none" (each row), "sum",
    or "mean", the sum over :math:`\sum_i s_i\,w_{y_i}` of the rows not ignored (NaN,
    with a zero gradient, where that is 0).

    Parameters
    ----------
    logits : array_like of float32 or float64
        Scores, C classes along ``axis``.
    target : array_like of integers
        Class indices in [0, C), or ``ignore_index``, of the shape of ``logits`` without
        its class axis.
    gamma : float, default 2.0
        Focusing exponent, finite and :math:`\ge 0`.
    weight, ignore_index, sample_weight, reduction, axis, n_threads, return_grad, grad_out
        As in :func:`cross_entropy`.

    Returns
    -------
    loss, grad
        As in :func:`cross_entropy`.

    Notes
    -----
    Computed by the cross-entropy kernel with the focal loss's finishing: each row's
    cross-entropy and its gradient are formed as for :func:`cross_entropy` (one read of
    the logits, the gradient written in the same pass), and the row's loss and gradient
    scale are multiplied by the factors above, in double. Row losses are within a few ulps
    of the input dtype of the exact value.

    Examples
    --------
    >>> import numpy as np, fastloss
    >>> logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    >>> round(float(fastloss.focal_loss(logits, np.array([0, 1]))), 6)
    0.002461
    >>> float(fastloss.focal_loss(logits, np.array([0, 1]), gamma=0.0)) == float(
    ...     fastloss.cross_entropy(logits, np.array([0, 1])))
    True
    """
    gamma = check_real(gamma, "gamma", 0.0)
    if gamma == 0.0:
        return cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                             sample_weight=sample_weight, reduction=reduction, axis=axis,
                             n_threads=n_threads, return_grad=return_grad, grad_out=grad_out)
    classes = np.asarray(target)
    if classes.dtype.kind not in "iu":
        raise TypeError(f"focal_loss takes integer class targets, got dtype {classes.dtype}")
    return _cross_entropy(logits, classes, weight, ignore_index, 0.0, sample_weight, 0.0,
                          reduction, axis, n_threads, return_grad, grad_out, False, None,
                          focal_gamma=gamma)
