"""kl_div_with_logits: fused distillation loss on the cross-entropy row kernels."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastloss._common import (
    as_floating,
    check_flag,
    check_non_negative,
    check_real,
    check_reduction,
    class_axis,
    class_view,
    gradient_requested,
    log_base,
    value_extremes,
)
from fastloss._cross_entropy import (
    _NO_CLASSES,
    KL_LOG_PROBS,
    KL_LOGITS,
    KL_PROBS,
    fused_rows,
    reduce_rows,
)

__all__ = ["kl_div_with_logits"]

TEACHER_KINDS = {"probs": KL_PROBS, "log_probs": KL_LOG_PROBS, "logits": KL_LOGITS}
REDUCTIONS = ("batchmean", "mean", "sum", "none")
MAX_TEMPERATURE = 1e100    # T**2 stays within float64, and so does a KL of order 1/T**2


def kl_div_with_logits(
    student_logits: Any,
    teacher: Any,
    *,
    teacher_kind: str = "probs",
    temperature: float = 1.0,
    scale_by_temperature: bool = True,
    reduction: str = "batchmean",
    axis: int = -1,
    base: float | None = None,
    n_threads: int | None = None,
    return_grad: bool = False,
    grad_out: np.ndarray | None = None,
) -> Any:
    r"""Distillation loss KL(teacher || softmax(student / T)), fused with its gradient
    with respect to the student's logits.

    With :math:`q = \mathrm{softmax}(s / T)` the student's distribution at temperature
    :math:`T` and :math:`p` the teacher's, each row's loss is

    .. math::

        T^2\,\mathrm{KL}(p \,\|\, q) = T^2 \sum_j p_j (\log p_j - \log q_j),
        \qquad \frac{\partial}{\partial s_j} = T\,\Big(q_j \sum_k p_k - p_j\Big)

    (so :math:`T (q - p)` for a normalised teacher). The factor :math:`T^2` keeps the
    gradient's scale independent of the temperature, as in Hinton et al. (2015);
    ``scale_by_temperature=False`` drops it (the loss is then the plain KL and the
    gradient :math:`(q \sum p - p) / T`). Terms with :math:`p_j = 0` count 0, even where
    the student's logit is ``-inf``.

    The teacher is given as

    - ``"probs"``: probabilities :math:`p`, used as given (finite, non-negative; rows
      are not renormalised), at whatever temperature the caller made them;
    - ``"log_probs"``: :math:`\log p`, used as given (``-inf`` for probability 0);
    - ``"logits"``: logits :math:`t`, with :math:`p = \mathrm{softmax}(t / T)`: divided by
      the same temperature as the student's.

    It equals ``F.kl_div(F.log_softmax(s / T, 1), p, reduction=...) * T**2`` in PyTorch,
    computed in one pass over each row without materialising either distribution.

    Accuracy: the row formula is a difference of terms of the size of :math:`\log C`,
    which cancel where the teacher is close to the student, and at high temperatures,
    where the KL falls as :math:`1/T^2`. Where they cancel to below :math:`2^{-16}` of
    their size, the row is computed again in a form without cancellation, so a row's
    loss keeps its relative accuracy at any temperature (float64: within about 1e-15 at
    :math:`T = 10^{12}`, where PyTorch's float64 formula has had no correct digit since
    about :math:`T = 10^8`). Above that, a row's relative error is at most :math:`2^{16}`
    times its terms' rounding: about 1e-11 in float64, and 1e-4 for float32 rows of more
    than 16 classes, whose exponentials are float. The rows computed again take about 15
    times as long (docs/performance.md).

    Parameters
    ----------
    student_logits : array_like of float32 or float64
        The student's logits, C classes along ``axis``; other float dtypes as in
        :func:`fastloss.cross_entropy`.
    teacher : array_like of float
        The teacher's probabilities, log-probabilities or logits (``teacher_kind``), with
        the shape of ``student_logits``.
    teacher_kind : {"probs", "log_probs", "logits"}, default "probs"
    temperature : float in (0, 1e100], default 1
        Beyond 1e100, :math:`T^2` and the KL's :math:`1/T^2` leave float64's range.
    scale_by_temperature : bool, default True
        Multiply the loss by :math:`T^2` (and the gradient accordingly).
    reduction : {"batchmean", "mean", "sum", "none"}, default "batchmean"
        "batchmean": the sum divided by the size of the first axis (PyTorch's meaning,
        the batch size for (N, C) inputs); "mean": divided by the number of elements of
        ``student_logits`` (PyTorch's, rarely what is wanted); "sum"; "none": the loss of
        each row (PyTorch's kl_div returns elementwise terms instead).
    axis : int, default -1
        The class axis; as in :func:`fastloss.cross_entropy`, any axis of a C-contiguous
        array is read in place.
    base : float, optional
        Unit of the loss: None for nats, 2 for bits.
    n_threads : int, optional
        OpenMP threads (None: OpenMP's default, -1: all CPUs).
    return_grad : bool, default False
        Also return the gradient with respect to ``student_logits``.
    grad_out : ndarray, optional
        C-contiguous buffer of the student's shape and dtype for the gradient; may be
        ``student_logits`` itself (in place).

    Returns
    -------
    loss : scalar or ndarray of the student's dtype
    grad : ndarray, with ``return_grad`` or ``grad_out``

    Examples
    --------
    >>> import numpy as np, fastloss
    >>> student = np.array([[2.0, 0.5, -1.0]])
    >>> teacher = np.array([[0.8, 0.1, 0.1]])
    >>> loss, grad = fastloss.kl_div_with_logits(student, teacher, return_grad=True)
    >>> round(float(loss), 6)
    0.052279
    >>> grad.round(4)                          # softmax(student) - teacher
    array([[-0.0144,  0.0753, -0.0609]])
    """
    return _kl_div_with_logits(student_logits, teacher, teacher_kind, temperature,
                               scale_by_temperature, reduction, axis, base, n_threads,
                               return_grad, grad_out)


def _kl_div_with_logits(student_logits: Any, teacher: Any, teacher_kind: Any,
                        temperature: Any, scale_by_temperature: Any, reduction: Any,
                        axis: Any, base: Any, n_threads: Any, return_grad: Any,
                        grad_out: Any, total_dtype: np.dtype | None = None) -> Any:
    """kl_div_with_logits, its arguments in order; a reduced loss in ``total_dtype``
    (None: the student's dtype)."""
    logits = as_floating(student_logits, "student_logits")
    axis = class_axis(logits, axis, "student_logits")
    reduction = check_reduction(reduction, REDUCTIONS)
    scale_by_temperature = check_flag(scale_by_temperature, "scale_by_temperature")
    if teacher_kind not in TEACHER_KINDS:
        raise ValueError(f"teacher_kind must be one of {tuple(TEACHER_KINDS)}, "
                         f"got {teacher_kind!r}")
    target = as_floating(teacher, "teacher")
    if target.shape != logits.shape:
        raise ValueError(f"teacher must have the shape of student_logits, {logits.shape}, "
                         f"got {target.shape}")
    if teacher_kind == "probs":
        check_non_negative(target, "teacher probabilities", n_threads=n_threads)
    elif teacher_kind == "log_probs" and target.size:
        _, highest, has_nan = value_extremes(target, n_threads)
        if has_nan or highest == np.inf:
            raise ValueError("teacher log-probabilities must not be NaN or +inf")
    temperature = check_real(temperature, "temperature", 0.0, MAX_TEMPERATURE,
                             above_low=True)
    unit = log_base(base)
    with_grad = gradient_requested(return_grad, grad_out, logits,
                                   no_overlap=(("teacher", target),))

    view = class_view(logits, axis)
    if reduction == "batchmean":
        denominator = float(logits.shape[0])
    elif reduction == "mean":
        denominator = float(logits.size)
    else:
        denominator = 1.0
    row_losses, grad, _ = fused_rows(
        view, logits, axis, TEACHER_KINDS[teacher_kind], target, _NO_CLASSES,
        denominator=denominator, unit=unit, temperature=temperature,
        loss_factor=temperature**2 if scale_by_temperature else 1.0,
        with_grad=with_grad, grad_out=grad_out, per_row=reduction == "none",
        n_threads=n_threads,
    )
    batch_shape = logits.shape[:axis] + logits.shape[axis + 1:]
    loss = reduce_rows(row_losses, "none" if reduction == "none" else
                       "sum" if reduction == "sum" else "mean",
                       denominator, batch_shape, logits.dtype, total_dtype)
    return (loss, grad) if with_grad else loss
