"""kl_div: validation and dispatch to the elementwise kernels."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fastloss._common import REDUCTIONS, ElementwiseSpec, run_elementwise
from fastloss._kernels import _kernels

__all__ = ["kl_div"]

_KL_REDUCTIONS = (*REDUCTIONS, "batchmean")
_KL = ElementwiseSpec(_kernels.KL_DIV, "input", target_bounds=(0.0, math.inf),
                      bounds_hint=" (probabilities; pass log_target=True for "
                                  "log-probabilities)", reductions=_KL_REDUCTIONS)
_KL_LOG_TARGET = ElementwiseSpec(_kernels.KL_DIV_LOG_TARGET, "input",
                                 reductions=_KL_REDUCTIONS)


def kl_div(
    input: Any,
    target: Any,
    *,
    reduction: str = "mean",
    log_target: bool = False,
    base: float | None = None,
    n_threads: int | None = None,
    return_grad: bool = False,
    grad_out: np.ndarray | None = None,
) -> Any:
    r"""Kullback-Leibler divergence of a target distribution from log-probabilities, fused
    with its gradient: PyTorch's ``torch.nn.functional.kl_div``.

    ``input`` holds log-probabilities :math:`\log q` (e.g. a ``log_softmax``), ``target``
    the probabilities :math:`p` (or :math:`\log p` with ``log_target=True``). Elementwise,

    .. math::

        \ell = p\,(\log p - \log q)
        \qquad\text{or, with log\_target,}\qquad
        \ell = e^{\log p}\,(\log p - \log q)

    and the term is exactly 0 where the target probability :math:`p` is 0, whatever
    :math:`\log q` is (even :math:`-\infty`), with a zero gradient: :math:`0 \log 0 = 0`.
    Summed over a distribution this is :math:`\mathrm{KL}(p\,\|\,q) = H(p, q) - H(p)`.

    The gradient is taken with respect to ``input`` only:
    :math:`\partial\ell/\partial\log q = -p` (:math:`-e^{\log p}` with ``log_target``),
    divided by the reduction's denominator.

    Reductions: ``"none"`` (each element), ``"sum"``, ``"mean"`` (the sum over the
    number of elements, which is PyTorch's default and meaning, not a mean over
    distributions) and ``"batchmean"`` (the sum over ``input.shape[0]``, the
    mathematical KL divergence per sample; the sum for a 0-d input). "mean" over no
    elements, and "batchmean" over an empty first axis, are NaN. Reduced losses are the
    same bits for any ``n_threads`` and whether or not the gradient is computed.

    Parameters
    ----------
    input : array_like of float32 or float64, any shape
        Log-probabilities. NaN propagates (also against a zero target). float16 is
        computed in float32 and long double in float64; results come back in the
        input's dtype.
    target : array_like of the shape of ``input``
        Probabilities (non-negative; NaN propagates), or log-probabilities with
        ``log_target=True`` (any real value; -inf is probability 0). Other real dtypes,
        integers and booleans included, are converted to the dtype ``input`` is computed
        in.
    reduction : {"mean", "batchmean", "sum", "none"}, default "mean"
    log_target : bool, default False
        Whether ``target`` holds log-probabilities.
    base, n_threads, return_grad, grad_out
        As in :func:`fastloss.binary_cross_entropy`, for ``input``: logarithms in base
        ``base`` (None: nats, 2: bits), OpenMP threads, and the gradient with respect to
        ``input``, optionally into ``grad_out`` (which may be ``input`` itself).

    Returns
    -------
    loss, grad
        As in :func:`fastloss.binary_cross_entropy`: an array of the shape of ``input``
        for "none", else a NumPy scalar, of its dtype; the gradient with ``return_grad``
        or ``grad_out``.

    Notes
    -----
    Differences from PyTorch: where the target probability is 0, PyTorch computes
    :math:`0 \cdot (-\infty) = \mathrm{NaN}` against an input of -inf, and with
    ``log_target=True`` against any input (:math:`e^{-\infty}\,(-\infty - \log q)`);
    fastloss takes the term, and its gradient, as 0. Negative target probabilities raise
    ``ValueError`` (PyTorch gives NaN); target and input must have the same shape
    (PyTorch broadcasts, with a warning); "mean" gives no warning; ``base`` is an extra.

    Examples
    --------
    The worked example of ``docs/theory.md``, :math:`p = (0.8, 0.1, 0.1)`,
    :math:`q = (0.2, 0.2, 0.6)`:

    >>> import numpy as np, fastloss
    >>> log_q = np.log([[0.2, 0.2, 0.6]])
    >>> p = np.array([[0.8, 0.1, 0.1]])
    >>> round(float(fastloss.kl_div(log_q, p, reduction="batchmean")), 6)
    0.860545
    >>> loss, grad = fastloss.kl_div(log_q, np.array([[1.0, 0.0, 0.0]]), reduction="sum",
    ...                              return_grad=True)
    >>> round(float(loss), 6), grad                 # a hard label: KL = CE = -log 0.2
    (1.609438, array([[-1., -0., -0.]]))
    """
    if not isinstance(log_target, (bool, np.bool_)):
        raise TypeError(f"log_target must be a bool, got {type(log_target).__name__}")
    return run_elementwise(_KL_LOG_TARGET if log_target else _KL, input, target,
                           reduction=reduction, base=base, n_threads=n_threads,
                           return_grad=return_grad, grad_out=grad_out)
