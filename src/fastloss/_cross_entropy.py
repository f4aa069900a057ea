"""cross_entropy: validation, the reduction's denominator, and dispatch to the fused kernels."""

from __future__ import annotations

import operator
from typing import Any, cast

import numpy as np

from fastloss._common import (
    KERNEL_DTYPES,
    as_floating,
    check_flag,
    check_non_negative,
    check_real,
    check_reduction,
    check_weights,
    class_axis,
    class_view,
    gradient_requested,
    kernel_array,
    log_base,
)
from fastloss._dispatch import kernels
from fastloss._kernels import _kernels
from fastloss._threads import effective_n_threads

__all__ = ["cross_entropy"]

_LOGSUMEXP = 2                  # the kernels' row operation (_kernels.rows)
_INTP = np.iinfo(np.intp)
_NO_CLASSES = np.empty(0, dtype=np.intp)


def _class_indices(given: np.ndarray, batch_shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Integer class targets as flat intp, after checking their shape (their range is
    checked with the denominator, by :func:`_check_class_range`)."""
    if given.shape != batch_shape:
        raise ValueError(
            f"target must have the shape of logits without its class axis ({axis}), "
            f"{batch_shape}, got {given.shape} (or the logits' shape for probabilities)"
        )
    flat = given.reshape(-1)
    if flat.size and not np.can_cast(flat.dtype, np.intp):
        # uint64 (or int64 on a 32-bit platform): a value past intp would wrap around,
        # possibly onto a valid class or ignore_index.
        limits = np.iinfo(np.intp)
        beyond = np.flatnonzero((flat > limits.max) | (flat < limits.min))
        if beyond.size:
            where = np.unravel_index(beyond[0], batch_shape) if batch_shape else ()
            raise IndexError(
                f"target must hold class indices, got {flat[beyond[0]]} at index "
                f"{tuple(int(i) for i in where)}"
            )
    return kernel_array(flat, np.dtype(np.intp))


def _check_class_range(classes: np.ndarray, batch_shape: tuple[int, ...], n_classes: int,
                       ignore_index: int, class_weight: np.ndarray | None,
                       row_weight: np.ndarray | None, n_threads: int | None) -> float:
    """Raise IndexError unless every target is in [0, C) or ``ignore_index`` (never
    range-checked); return the denominator of a "mean", sum(sample_weight * weight[y])
    over the targets not ignored, from the same parallel pass."""
    first_bad, denominator = kernels().class_targets(
        classes, n_classes, ignore_index, class_weight, row_weight,
        effective_n_threads(n_threads, classes.size),
    )
    if first_bad >= 0:
        where = np.unravel_index(first_bad, batch_shape) if batch_shape else ()
        raise IndexError(
            f"target must hold class indices in [0, {n_classes}) or ignore_index "
            f"({ignore_index}), got {classes[first_bad]} at index "
            f"{tuple(int(i) for i in where)}"
        )
    return float(denominator)


def _check_soft_target(given: np.ndarray, logits: np.ndarray, ignore_index: int,
                       n_threads: int | None) -> None:
    if given.shape != logits.shape:
        raise ValueError(
            f"target probabilities must have the shape of logits, {logits.shape}, got "
            f"{given.shape} (class indices need an integer dtype)"
        )
    if ignore_index != -100:
        raise ValueError(
            "ignore_index applies to integer class targets only; to leave out rows of "
            "probability targets, give them sample_weight=0"
        )
    check_non_negative(given, "target probabilities", n_threads=n_threads)


def _rescale_for_mean(
    class_weight: np.ndarray | None, row_weight: np.ndarray | None, z_loss: float, soft: bool
) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """Weights of an extreme scale, divided by their maximum.

    A "mean" does not change when the sample weights, or (for class targets, whose
    denominator holds the class weights) the class weights and z_loss together, are
    divided by a constant; doing so for weights far from 1 keeps the
    denominator (a sum of products of weights) and its reciprocal from under- or
    overflowing. Returns (class_weight, row_weight, z_loss).
    """
    def scale_of(weights: np.ndarray | None) -> float:
        top = 0.0 if weights is None or weights.size == 0 else float(weights.max())
        return top if top > 0 and not 1e-100 <= top <= 1e100 else 1.0

    top = scale_of(row_weight)
    if top != 1.0:
        row_weight = cast(np.ndarray, row_weight) / top     # top is 1.0 for None
    top = 1.0 if soft else scale_of(class_weight)
    if top != 1.0:
        class_weight, z_loss = cast(np.ndarray, class_weight) / top, z_loss / top
    return class_weight, row_weight, z_loss


def reduce_rows(row_losses: np.ndarray, reduction: str, denominator: float,
                batch_shape: tuple[int, ...], dtype: np.dtype,
                total_dtype: np.dtype | None = None) -> Any:
    """Per-row float64 losses to the result. The sum is NumPy's pairwise sum over a buffer
    written in row order, so it does not depend on the number of threads. A reduced loss
    comes in ``total_dtype`` (None: ``dtype``; float64 for callers that add such sums)."""
    # A loss beyond the dtype's range rounds to inf, which is the answer: no warning.
    with np.errstate(over="ignore"):
        if reduction == "none":
            return row_losses.reshape(batch_shape).astype(dtype, copy=False)
        total = float(np.sum(row_losses))
        if reduction == "mean":
            total = total / denominator if denominator > 0 else float("nan")
        return (total_dtype or dtype).type(total)


# The kernels' targets (losses/row_loss.h's fl_target_kind).
TARGET_CLASSES = _kernels.TARGET_CLASSES
TARGET_PROBS = _kernels.TARGET_PROBS
KL_PROBS = _kernels.TEACHER_PROBS
KL_LOG_PROBS = _kernels.TEACHER_LOG_PROBS
KL_LOGITS = _kernels.TEACHER_LOGITS


def fused_rows(
    view: np.ndarray,
    logits: np.ndarray,
    axis: int,
    kind: int,
    target_rows: np.ndarray | None,
    classes: np.ndarray,
    *,
    class_weight: np.ndarray | None = None,
    row_weight: np.ndarray | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    ignore_index: int = -100,
    denominator: float = 1.0,
    unit: float = 1.0,
    temperature: float = 1.0,
    loss_factor: float = 1.0,
    with_grad: bool = False,
    grad_out: np.ndarray | None = None,
    return_lse: bool = False,
    per_row: bool = True,
    n_threads: int | None = None,
    focal_gamma: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Run the fused row kernel on validated arguments, for cross_entropy and
    kl_div_with_logits: (float64 row losses, gradient or None, logsumexp or None).

    Without ``per_row`` the losses may come as sums over fixed spans of rows instead
    (the kernels' ``rows_per_sum``), which is all a reduction needs: their sum.

    ``view`` is ``class_view(logits, axis)``; ``target_rows`` has the logits' shape (any
    float dtype; converted to the kernel's); losses and gradient are divided by ``unit``
    (ln of the base), the gradient also by ``denominator``. ``focal_gamma``: the focal
    loss's exponent (class targets; 0: none).
    """
    n_rows = view.shape[0] * view.shape[2]
    kdtype = view.dtype
    rows_view = (class_view(target_rows.astype(kdtype, copy=False), axis)
                 if target_rows is not None else None)
    direct = grad_out is not None and grad_out.dtype == kdtype and grad_out.flags.aligned
    grad_view = None
    if with_grad:
        grad_view = (cast(np.ndarray, grad_out).reshape(view.shape) if direct
                     else np.empty_like(view))
    threads = effective_n_threads(n_threads, logits.size)
    span = 0 if per_row or view.shape[2] != 1 else _kernels.rows_per_sum(n_rows, view.shape[1])
    row_losses = np.empty(-(-n_rows // span) if span else n_rows, dtype=np.float64)
    lse = np.empty(n_rows, dtype=np.float64) if return_lse else None
    lse_first = None
    if (return_lse and kdtype == np.float32 and grad_view is not None and view.shape[2] == 1
            and np.may_share_memory(grad_view, view)):
        # A float row's logsumexp may need the row again after its exponentials
        # (refined_lse), which a gradient in place has overwritten by then: the logsumexp
        # kernel first (the same bits), and none from the fused kernel.
        lse_first = np.empty(n_rows, dtype=kdtype)
        kernels().rows(_LOGSUMEXP, view.reshape(n_rows, view.shape[1]), lse_first, threads)
        lse = None
    total = kernels().row_loss(
        view, classes if kind == TARGET_CLASSES else None, rows_view, class_weight,
        row_weight, kind, label_smoothing, z_loss, ignore_index,
        1.0 / (denominator * unit) if denominator > 0 else 0.0,    # the gradient's scale
        temperature, loss_factor, row_losses, span, grad_view, lse, threads, focal_gamma,
    )
    if span:            # the kernel's sum of its partial sums, in order
        row_losses = np.array([total])
    if unit != 1.0:
        row_losses /= unit
    grad = None
    if grad_view is not None and grad_out is not None:
        if not direct:                # float16 / long double: computed in a kernel dtype
            grad_out[...] = grad_view.reshape(logits.shape)
        grad = grad_out
    elif grad_view is not None:
        grad = grad_view.reshape(logits.shape).astype(logits.dtype, copy=False)
    batch_shape = logits.shape[:axis] + logits.shape[axis + 1:]
    # logsumexp is a property of the logits, in nats whatever the loss's base.
    if lse_first is not None:
        lse = lse_first
    lse_out = (cast(np.ndarray, lse).reshape(batch_shape).astype(logits.dtype) if return_lse
               else None)
    return row_losses, grad, lse_out


def _plain_class_loss(logits: Any, target: Any, ignore_index: Any, label_smoothing: Any,
                      z_loss: Any, reduction: Any, axis: Any, n_threads: int | None,
                      return_grad: bool, grad_out: Any) -> Any:
    """cross_entropy's result for C-contiguous (N, C) float32/float64 logits and (N,)
    intp targets in range, without options, reduced by "mean" or "sum"; None for any other
    call (or a target out of range, or a grad_out the kernel refuses), which the general
    path then handles and checks."""
    if not (type(logits) is np.ndarray and type(target) is np.ndarray
            and logits.ndim == 2 and target.ndim == 1 and logits.dtype in KERNEL_DTYPES
            and target.dtype == np.intp and logits.flags.c_contiguous
            and target.flags.c_contiguous and logits.flags.aligned and target.flags.aligned
            and 0 < logits.shape[1]
            and target.shape[0] == logits.shape[0] and type(ignore_index) is int
            and _INTP.min <= ignore_index <= _INTP.max
            and (axis == -1 or axis == 1) and type(axis) is int
            and type(label_smoothing) in (int, float) and label_smoothing == 0
            and type(z_loss) in (int, float) and z_loss == 0
            and (reduction == "mean" or reduction == "sum")
            and (grad_out is None or (type(grad_out) is np.ndarray
                                      and grad_out.dtype == logits.dtype
                                      and grad_out.shape == logits.shape
                                      and grad_out.flags.aligned))):
        return None
    if grad_out is None and return_grad:
        grad_out = np.empty_like(logits)
    total = kernels().cross_entropy_classes(
        logits, target, grad_out, reduction == "mean", ignore_index,
        effective_n_threads(n_threads, logits.size))
    if total is None:
        return None
    loss = logits.dtype.type(total)
    return loss if grad_out is None else (loss, grad_out)


def cross_entropy(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    sample_weight: Any = None,
    z_loss: float = 0.0,
    reduction: str = "mean",
    axis: int = -1,
    n_threads: int | None = None,
    return_grad: bool = False,
    grad_out: np.ndarray | None = None,
    return_lse: bool = False,
    base: float | None = None,
) -> Any:
    r"""Cross-entropy between softmax(logits) and class or probability targets, fused with
    its gradient.

    For a row of scores :math:`x` (C classes along ``axis``), write
    :math:`\ell_j = -\log\mathrm{softmax}(x)_j = \mathrm{lse}(x) - x_j` with
    :math:`\mathrm{lse}(x) = m + \log\sum_j e^{x_j - m}`, :math:`m = \max_j x_j`, class
    weights :math:`w` (1 without ``weight``), smoothing :math:`\varepsilon` and sample
    weight :math:`s` (1 without ``sample_weight``). The row's loss is

    - integer target :math:`y`:
      :math:`L = (1-\varepsilon)\,w_y\,\ell_y + \frac{\varepsilon}{C}\sum_j w_j\,\ell_j`
    - probability target :math:`t`:
      :math:`L = \sum_j w_j\,t'_j\,\ell_j` with :math:`t' = (1-\varepsilon)\,t + \varepsilon/C`

    plus :math:`z\,\mathrm{lse}(x)^2` (``z_loss``), all times :math:`s`. Rows whose target
    is ``ignore_index``, and rows with :math:`s = 0`, contribute 0 loss and 0 gradient.

    Reductions: ``"none"`` returns each row's (weighted) loss; ``"sum"`` their sum;
    ``"mean"`` their sum divided by

    - integer targets: :math:`\sum_i s_i\,w_{y_i}` over the rows not ignored (the number
      of such rows without weights), as PyTorch's ``weight`` does;
    - probability targets: :math:`\sum_i s_i` (the number of rows; class weights are not
      in the denominator), as PyTorch does.

    So sample weights act like repeating rows, and with ``weight`` the effective weight
    of a row is :math:`s_i\,w_{y_i}`. A "mean" over no counted rows is NaN (as in
    PyTorch) and its gradient is 0.

    The gradient with respect to the logits is, per row,

    .. math::

        \frac{s}{D}\Big[(h + A + 2z\,\mathrm{lse})\,\mathrm{softmax}(x) - a - h\,e_y\Big]

    with :math:`a_j` the coefficients of :math:`\ell_j` above (:math:`A = \sum_j a_j`),
    :math:`h = (1-\varepsilon)w_y` for an integer target (0 for probabilities) and
    :math:`D` the denominator of the reduction (1 for "sum"; for "none", the gradient of
    the sum of the row losses).

    Everything is computed in one fused kernel that reads each row once: loss, gradient
    and logsumexp, in double before rounding. Reduced losses are the same bits for any
    ``n_threads`` and whether or not the gradient is computed.

    Parameters
    ----------
    logits : array_like of float32 or float64
        Unnormalised scores with C classes along ``axis``. float16 is computed in
        float32 and long double in float64, and results come back in the input's dtype.
        ``-inf`` masks a class; NaN gives NaN for its row (and any reduction over it).
    target : array_like
        Integer class indices in ``[0, C)`` (or ``ignore_index``), with the shape of
        ``logits`` without ``axis``; or floating-point class probabilities with the
        shape of ``logits`` (finite, non-negative; rows need not sum to 1 and are not
        renormalised).
    weight : array_like, shape (C,), optional
        Non-negative class weights.
    ignore_index : int, default -100
        Integer targets equal to it are ignored (never range-checked). With probability
        targets it must stay -100: give rows ``sample_weight=0`` instead.
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution: :math:`(1-\varepsilon)` target
        :math:`+\ \varepsilon/C`.
    sample_weight : array_like, optional
        Non-negative weight of each row, shape of ``logits`` without ``axis`` (PyTorch has
        no such argument; scikit-learn's losses do).
    z_loss : float >= 0, default 0
        Adds :math:`z\,\mathrm{lse}(x)^2` per row (the PaLM auxiliary loss), weighted by
        ``sample_weight`` but not by ``weight``; ignored rows add none.
    reduction : {"mean", "sum", "none"}, default "mean"
    axis : int, default -1
        The class axis (PyTorch's is 1: pass ``axis=1`` for its (N, C, d1, ...) layout).
        Any axis of a C-contiguous float32/float64 array is read in place; other inputs
        are first made C-contiguous in the kernel dtype (one copy).
    n_threads : int, optional
        OpenMP threads. None: OpenMP's default (``OMP_NUM_THREADS``); -1: all CPUs;
        0 is an error.
    return_grad : bool, default False
        Also return the gradient of the loss with respect to ``logits``.
    grad_out : ndarray, optional
        C-contiguous buffer of the shape and dtype of ``logits`` for the gradient (implies
        ``return_grad``). It may be ``logits`` itself: the logits are then overwritten by
        the gradient, and no memory of their size is allocated.
    return_lse : bool, default False
        Also return each row's logsumexp (shape of the batch, dtype of ``logits``),
        which the kernel computes anyway, e.g. for a later backward pass.
    base : float, optional
        Unit of the loss and its gradient: None for nats (natural log), 2 for bits, any
        positive number other than 1 (the loss is divided by ln(base)). The returned
        logsumexp stays in nats.

    Returns
    -------
    loss : ndarray or scalar of the dtype of ``logits``
        Shape of the batch for "none", else a NumPy scalar.
    grad : ndarray, with ``return_grad`` or ``grad_out``
    lse : ndarray, with ``return_lse``
        Returned in this order: ``loss``, ``(loss, grad)``, ``(loss, lse)`` or
        ``(loss, grad, lse)``.

    Notes
    -----
    Where PyTorch gives NaN because a zero coefficient meets a ``-inf`` logit (a class of
    target probability 0, or of weight 0, that is masked), fastloss takes the term as 0,
    as for 0 log 0, so masked vocabularies work with soft targets.

    Examples
    --------
    >>> import numpy as np, fastloss
    >>> logits = np.array([[2.3, -1.2]])      # dog 2.3, cat -1.2
    >>> loss, grad = fastloss.cross_entropy(logits, np.array([1]), return_grad=True)
    >>> round(float(loss), 5)                 # the true class is "cat"
    3.52975
    >>> grad.round(5)                         # softmax - onehot
    array([[ 0.97069, -0.97069]])
    >>> soft = np.array([[0.2, 0.8]])
    >>> round(float(fastloss.cross_entropy(logits, soft, label_smoothing=0.1)), 5)
    2.72475
    """
    if (weight is None and sample_weight is None and base is None and not return_lse
            and (return_grad is False or return_grad is True)):
        # The common call (class targets, no options) without the general path's per-call
        # work: what it would check is checked here, or it takes over.
        result = _plain_class_loss(logits, target, ignore_index, label_smoothing, z_loss,
                                   reduction, axis, n_threads, return_grad, grad_out)
        if result is not None:
            return result
    return _cross_entropy(logits, target, weight, ignore_index, label_smoothing,
                          sample_weight, z_loss, reduction, axis, n_threads, return_grad,
                          grad_out, return_lse, base)


def _cross_entropy(logits: Any, target: Any, weight: Any, ignore_index: Any,
                   label_smoothing: Any, sample_weight: Any, z_loss: Any, reduction: Any,
                   axis: Any, n_threads: Any, return_grad: Any, grad_out: Any,
                   return_lse: Any, base: Any, total_dtype: np.dtype | None = None,
                   focal_gamma: float = 0.0) -> Any:
    """cross_entropy's general path, its arguments in order; a reduced loss in
    ``total_dtype`` (None: the logits' dtype); with ``focal_gamma`` (validated, class
    targets) the focal loss of that exponent."""
    logits = as_floating(logits, "logits")
    axis = class_axis(logits, axis, "logits")
    reduction = check_reduction(reduction)
    n_classes = logits.shape[axis]
    return_lse = check_flag(return_lse, "return_lse")
    batch_shape = logits.shape[:axis] + logits.shape[axis + 1:]

    if isinstance(ignore_index, bool):
        raise TypeError("ignore_index must be an int")
    ignore_index = operator.index(ignore_index)
    if not _INTP.min <= ignore_index <= _INTP.max:
        raise ValueError(f"ignore_index must be within {_INTP.dtype}'s range [{_INTP.min}, "
                         f"{_INTP.max}], got {ignore_index}")
    given_target = np.asarray(target)
    soft = given_target.dtype.kind == "f"
    if soft:
        _check_soft_target(given_target, logits, ignore_index, n_threads)
        classes = _NO_CLASSES
    elif given_target.dtype.kind in "iu":
        classes = _class_indices(given_target, batch_shape, axis)
    else:
        raise TypeError(
            "target must be an array of integer class indices or of floating-point class "
            f"probabilities, got dtype {given_target.dtype}"
        )
    class_weight = None if weight is None else check_weights(weight, "weight", (n_classes,))
    label_smoothing = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    row_weight = (None if sample_weight is None
                  else check_weights(sample_weight, "sample_weight", batch_shape))
    z_loss = check_real(z_loss, "z_loss", 0.0)
    unit = log_base(base)
    with_grad = gradient_requested(return_grad, grad_out, logits,
                                   no_overlap=(("target", given_target),))

    view = class_view(logits, axis)
    n_rows = view.shape[0] * view.shape[2]
    if reduction == "mean":
        class_weight, row_weight, z_loss = _rescale_for_mean(class_weight, row_weight, z_loss,
                                                             soft)
    if soft:
        denominator = float(np.sum(row_weight)) if row_weight is not None else float(n_rows)
    else:
        denominator = _check_class_range(classes, batch_shape, n_classes, ignore_index,
                                         class_weight, row_weight, n_threads)
    if reduction != "mean":
        denominator = 1.0
    row_losses, grad, lse = fused_rows(
        view, logits, axis, TARGET_PROBS if soft else TARGET_CLASSES,
        given_target if soft else None, classes, class_weight=class_weight,
        row_weight=row_weight, label_smoothing=label_smoothing, z_loss=z_loss,
        ignore_index=ignore_index, denominator=denominator, unit=unit,
        with_grad=with_grad, grad_out=grad_out, return_lse=return_lse,
        per_row=reduction == "none", n_threads=n_threads, focal_gamma=focal_gamma,
    )
    results = [reduce_rows(row_losses, reduction, denominator, batch_shape, logits.dtype,
                           total_dtype)]
    if with_grad:
        results.append(grad)
    if return_lse:
        results.append(lse)
    return results[0] if len(results) == 1 else tuple(results)

