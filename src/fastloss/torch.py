"""PyTorch autograd integration: fastloss's fused losses as drop-in replacements for
``torch.nn.functional``'s and ``torch.nn``'s.

Importable only where PyTorch is installed (``pip install "fastloss[torch]"``); the rest
of fastloss never needs it.

Each loss is a ``torch.autograd.Function`` whose forward pass runs the fastloss kernel on
the tensor's memory (``tensor.numpy()``: no copy for a contiguous CPU tensor) and writes
the gradient of the loss into a new tensor in the same pass; the backward pass multiplies
that saved gradient by ``grad_output``. So a training step reads the logits once for the
loss and its gradient, and allocates one gradient-sized tensor and nothing else of that
size.

When fastloss computes a call (the *fast path*): ``input`` is a CPU tensor of float32 or
float64 with the strided layout, every other tensor argument is a CPU tensor, and no
target or weight requires a gradient (fastloss differentiates with respect to the input
only). Anything else is handed to PyTorch's own function, which gives the same result:
CUDA and other devices, float16 and bfloat16, targets that require gradients, tensor
subclasses that override ``__torch_function__``. A non-contiguous input is read through one
contiguous copy.

Differences from PyTorch on the fast path:

- Second derivatives: the saved gradient is a constant to autograd. A backward pass with
  ``create_graph=True`` gives the right first derivatives, but a backward pass through
  them raises ``RuntimeError`` ("fastloss.torch losses have no second derivative ...")
  rather than giving wrong second derivatives (a gradient penalty, MAML): use PyTorch's
  loss there. ``torch.compile``, ``torch.jit`` and ``torch.func``
  transforms (vmap, grad) are not supported.
- fastloss's validation and semantics apply, as documented in its NumPy functions:
  errors are fastloss's ``ValueError``/``IndexError``/``TypeError`` (out-of-range class
  indices, probabilities or targets outside [0, 1], negative or non-finite weights);
  integer class targets of any integer dtype and targets of another float dtype are
  accepted and converted; reduced float32 losses are summed in double (PyTorch sums in
  float32, so the two differ by up to ~1e-6 relative).
- fastloss runs on ``torch.get_num_threads()`` OpenMP threads, so
  ``torch.set_num_threads`` sets the threads of both.

Examples
--------
>>> import torch
>>> import fastloss.torch as flt
>>> logits = torch.tensor([[2.3, -1.2]], requires_grad=True)
>>> loss = flt.cross_entropy(logits, torch.tensor([1]))
>>> loss.backward()
>>> round(loss.item(), 5), logits.grad
(3.52975, tensor([[ 0.9707, -0.9707]]))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import torch
except ImportError as exc:     # the package itself never requires PyTorch
    raise ImportError(
        "fastloss.torch needs PyTorch, which fastloss does not install by itself; install "
        "it with the `torch` extra: pip install 'fastloss[torch]' (or pip install torch)"
    ) from exc

import torch.nn.functional as F
from torch import Tensor

import fastloss
from fastloss._common import check_real, log_base
from fastloss._distill import MAX_TEMPERATURE, TEACHER_KINDS
from fastloss._distill import REDUCTIONS as DISTILL_REDUCTIONS

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "BinaryCrossEntropyFunction",
    "BinaryCrossEntropyWithLogitsFunction",
    "CrossEntropyFunction",
    "CrossEntropyLoss",
    "FocalLoss",
    "FocalLossFunction",
    "KLDivFunction",
    "KLDivLoss",
    "KLDivWithLogitsFunction",
    "SigmoidFocalLoss",
    "SigmoidFocalLossFunction",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "focal_loss",
    "kl_div",
    "kl_div_with_logits",
    "sigmoid_focal_loss",
]

_KERNEL_DTYPES = (torch.float32, torch.float64)


# --- when fastloss runs, and how ---------------------------------------------------------

def _plain_cpu(t: Tensor) -> bool:
    return t.device.type == "cpu" and t.layout == torch.strided


def _on_fast_path(input: Any, *others: Any) -> bool:
    """Whether fastloss computes this call (see the module's docstring); else PyTorch.
    ``others``: the other tensor arguments, or None; anything else is left to PyTorch's
    error."""
    if not (isinstance(input, Tensor) and input.dtype in _KERNEL_DTYPES
            and _plain_cpu(input)):
        return False
    tensors = [t for t in others if t is not None]
    if not all(isinstance(t, Tensor) for t in tensors):
        return False
    if torch.overrides.has_torch_function((input, *tensors)):
        return False
    grad_enabled = torch.is_grad_enabled()
    return all(_plain_cpu(t) and not (grad_enabled and t.requires_grad) for t in tensors)


def _numpy(t: Tensor | None) -> np.ndarray | None:
    """A tensor's memory as an ndarray (a view for a CPU tensor)."""
    return None if t is None else t.detach().numpy()


def _legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    """PyTorch's deprecated ``size_average``/``reduce`` pair as a ``reduction``, with
    PyTorch's warning: either left None counts as True."""
    reduce = True if reduce is None else reduce
    size_average = True if size_average is None else size_average
    reduction = ("mean" if size_average else "sum") if reduce else "none"
    warnings.warn(f"size_average and reduce are deprecated (as in PyTorch); use "
                  f"reduction={reduction!r} instead", UserWarning, stacklevel=3)
    return reduction


@dataclass(frozen=True)
class _Call:
    """One fastloss call on the NumPy view of a tensor."""

    function: Callable[..., Any]
    target: np.ndarray
    options: dict[str, Any]
    row_axis: int | None = None     # "none" losses per row: the class axis they lack

    def run(self, input: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        """The loss and, with ``with_grad``, its gradient with respect to ``input``
        (for "none": of the sum of the losses), written by the kernel into a new tensor."""
        grad = torch.empty(input.shape, dtype=input.dtype) if with_grad else None
        result = self.function(
            _numpy(input), self.target, **self.options, n_threads=torch.get_num_threads(),
            grad_out=_numpy(grad),
        )
        loss = result[0] if with_grad else result
        return torch.from_numpy(np.asarray(loss)), grad


SECOND_DERIVATIVE_ERROR = (
    "fastloss.torch losses have no second derivative: the gradient their forward pass "
    "computes is a constant to autograd. For double backward (create_graph=True followed "
    "by a backward pass through the gradient, as in gradient penalties or MAML) use "
    "torch.nn.functional's loss"
)


class _NoSecondDerivative(torch.autograd.Function):
    """Passes a first derivative through and raises if it is differentiated."""

    @staticmethod
    def forward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.view_as(grad)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        raise RuntimeError(SECOND_DERIVATIVE_ERROR)


class _FusedLossFunction(torch.autograd.Function):
    """The backward pass shared by the losses: the gradient saved by the forward pass
    times ``grad_output``. Subclasses' forward passes call :func:`_forward`."""

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        nones = (None,) * (ctx.n_inputs - 1)
        if grad is None:        # .apply on an input that does not require grad
            return (None, *nones)
        with torch.no_grad():
            if ctx.row_axis is not None:        # one loss per row: scale each row
                grad = grad * grad_output.unsqueeze(ctx.row_axis)
            elif grad_output.dim() != 0 or grad_output.item() != 1.0:
                grad = grad * grad_output
            # else: loss.backward() of a reduced loss; the saved gradient is the answer,
            # and autograd copies it rather than modify it while the graph holds it.
        if torch.is_grad_enabled():
            # create_graph=True. once_differentiable would only catch a grad_output that
            # requires grad; the gradient's own dependence on the input would be lost
            # silently (a gradient penalty through a model: wrong, not an error).
            grad = _NoSecondDerivative.apply(grad.detach().requires_grad_())
        return (grad, *nones)


def _forward(ctx: Any, input: Tensor, call: _Call, n_inputs: int) -> Tensor:
    loss, grad = call.run(input, with_grad=ctx.needs_input_grad[0])
    ctx.save_for_backward(grad)
    ctx.row_axis = call.row_axis
    ctx.n_inputs = n_inputs
    return loss


def _apply(function: type[_FusedLossFunction], plan: Callable[..., _Call], input: Tensor,
           *args: Any) -> Tensor:
    """Through autograd where a gradient is wanted; else the loss alone, without it.
    ``plan(input, *args)`` is the fastloss call of ``function``'s forward pass."""
    if torch.is_grad_enabled() and input.requires_grad:
        return function.apply(input, *args)
    return plan(input, *args).run(input, with_grad=False)[0]


# --- cross-entropy -----------------------------------------------------------------------

def _cross_entropy_call(input: Tensor, target: Tensor, weight: Tensor | None,
                        ignore_index: int, reduction: str, label_smoothing: float) -> _Call:
    axis = 1 if input.dim() > 1 else 0      # PyTorch's (C,), (N, C) or (N, C, d1, ...)
    return _Call(fastloss.cross_entropy, _numpy(target),
                 dict(weight=_numpy(weight), ignore_index=ignore_index, reduction=reduction,
                      label_smoothing=label_smoothing, axis=axis),
                 row_axis=axis if reduction == "none" else None)


class CrossEntropyFunction(_FusedLossFunction):
    """``cross_entropy`` as a ``torch.autograd.Function``:
    ``CrossEntropyFunction.apply(input, target, weight, ignore_index, reduction,
    label_smoothing)`` on the fast path (see :func:`cross_entropy`)."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, target: Tensor, weight: Tensor | None,
                ignore_index: int, reduction: str, label_smoothing: float) -> Tensor:
        call = _cross_entropy_call(input, target, weight, ignore_index, reduction,
                                   label_smoothing)
        return _forward(ctx, input, call, 6)


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""``torch.nn.functional.cross_entropy``, computed by :func:`fastloss.cross_entropy`
    fused with its gradient.

    Arguments, shapes and results as in PyTorch: ``input`` of shape (C,), (N, C) or
    (N, C, d1, ..., dk), the class axis 1 (0 for a single row); ``target`` holds class
    indices of the shape without the class axis, or class probabilities of the shape of
    ``input``; ``weight`` of shape (C,); "mean" over class indices divides by the summed
    weight of the counted targets. The deprecated ``size_average`` and ``reduce`` are
    turned into a ``reduction`` with a warning, as in PyTorch.

    Computed by fastloss on the fast path (CPU float32/float64 ``input``, no target or
    weight requiring a gradient; see :mod:`fastloss.torch`), else by
    ``torch.nn.functional.cross_entropy``. On the fast path class indices may be of any
    integer dtype, and fastloss's validation applies (out-of-range indices raise
    ``IndexError``, negative weights ``ValueError``).

    Parameters
    ----------
    input : Tensor
        Logits.
    target : Tensor
        Class indices (integers in [0, C), or ``ignore_index``) or probabilities.
    weight : Tensor of shape (C,), optional
        Class weights (non-negative on the fast path).
    size_average, reduce : bool, optional
        Deprecated; use ``reduction``.
    ignore_index : int, default -100
        Class-index targets equal to it count for nothing.
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float in [0, 1], default 0

    Returns
    -------
    Tensor
        0-d for "mean" and "sum", else the shape of ``target`` (of ``input`` without the
        class axis, for probabilities), in the dtype of ``input``.

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(4, 5, 3, dtype=torch.float64, requires_grad=True)
    >>> y = torch.randint(0, 5, (4, 3))
    >>> loss = flt.cross_entropy(x, y, label_smoothing=0.1)
    >>> torch.allclose(loss, torch.nn.functional.cross_entropy(x, y, label_smoothing=0.1))
    True
    >>> loss.backward()
    >>> x.grad.shape
    torch.Size([4, 5, 3])
    """
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    if not _on_fast_path(input, target, weight):
        return F.cross_entropy(input, target, weight, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=label_smoothing)
    args = (target, weight, ignore_index, reduction, label_smoothing)
    return _apply(CrossEntropyFunction, _cross_entropy_call, input, *args)


# --- binary cross-entropy ----------------------------------------------------------------

def _bce_call(input: Tensor, target: Tensor, weight: Tensor | None,
              reduction: str) -> _Call:
    return _Call(fastloss.binary_cross_entropy, _numpy(target),
                 dict(weight=_numpy(weight), reduction=reduction))


class BinaryCrossEntropyFunction(_FusedLossFunction):
    """``binary_cross_entropy`` as a ``torch.autograd.Function``:
    ``BinaryCrossEntropyFunction.apply(input, target, weight, reduction)``."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, target: Tensor, weight: Tensor | None,
                reduction: str) -> Tensor:
        return _forward(ctx, input, _bce_call(input, target, weight, reduction), 4)


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""``torch.nn.functional.binary_cross_entropy``, computed by
    :func:`fastloss.binary_cross_entropy` fused with its gradient.

    :math:`-w\,[y \log p + (1 - y) \log(1 - p)]` elementwise, each log floored at -100,
    with PyTorch's gradient :math:`w (p - y) / \max(p (1 - p), 10^{-12})`. Fast path and
    fallback as in :func:`cross_entropy`; on the fast path probabilities and targets
    outside [0, 1] raise ``ValueError`` (PyTorch raises ``RuntimeError``) and NaN
    propagates into the loss rather than raising.

    Parameters
    ----------
    input : Tensor
        Probabilities in [0, 1], any shape.
    target : Tensor
        Labels or soft labels in [0, 1], the shape of ``input``.
    weight : Tensor, optional
        Non-negative weights that broadcast to the shape of ``input``.
    size_average, reduce : bool, optional
        Deprecated; use ``reduction``.
    reduction : {"mean", "sum", "none"}, default "mean"

    Returns
    -------
    Tensor
        0-d for "mean" and "sum", else the shape of ``input``.

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> p = torch.tensor([0.6, 0.9, 0.3], dtype=torch.float64, requires_grad=True)
    >>> loss = flt.binary_cross_entropy(p, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    >>> loss.backward()
    >>> round(loss.item(), 5), p.grad          # (p - y) / (p (1 - p)) / 3
    (1.33913, tensor([-0.5556,  3.3333, -1.1111], dtype=torch.float64))
    """
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    if not _on_fast_path(input, target, weight):
        return F.binary_cross_entropy(input, target, weight, reduction=reduction)
    args = (target, weight, reduction)
    return _apply(BinaryCrossEntropyFunction, _bce_call, input, *args)


def _bce_with_logits_call(input: Tensor, target: Tensor, weight: Tensor | None,
                          reduction: str, pos_weight: Tensor | None) -> _Call:
    return _Call(fastloss.binary_cross_entropy_with_logits, _numpy(target),
                 dict(weight=_numpy(weight), pos_weight=_numpy(pos_weight),
                      reduction=reduction))


class BinaryCrossEntropyWithLogitsFunction(_FusedLossFunction):
    """``binary_cross_entropy_with_logits`` as a ``torch.autograd.Function``:
    ``BinaryCrossEntropyWithLogitsFunction.apply(input, target, weight, reduction,
    pos_weight)``."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, target: Tensor, weight: Tensor | None,
                reduction: str, pos_weight: Tensor | None) -> Tensor:
        call = _bce_with_logits_call(input, target, weight, reduction, pos_weight)
        return _forward(ctx, input, call, 5)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    r"""``torch.nn.functional.binary_cross_entropy_with_logits``, computed by
    :func:`fastloss.binary_cross_entropy_with_logits` fused with its gradient.

    :math:`-w\,[v\,y \log\sigma(x) + (1 - y) \log(1 - \sigma(x))]` elementwise, stable for
    logits of any size, with the gradient :math:`w\,((1 + (v - 1) y)\,\sigma(x) - v\,y)`.
    Fast path and fallback as in :func:`cross_entropy`; on the fast path targets outside
    [0, 1] and negative or non-finite weights raise ``ValueError``.

    Parameters
    ----------
    input : Tensor
        Logits, any shape.
    target : Tensor
        Labels or soft labels in [0, 1], the shape of ``input``.
    weight : Tensor, optional
        Non-negative weights that broadcast to the shape of ``input``.
    size_average, reduce : bool, optional
        Deprecated; use ``reduction``.
    reduction : {"mean", "sum", "none"}, default "mean"
    pos_weight : Tensor, optional
        Weights of the positive class that broadcast to the shape of ``target``,
        typically (C,) for C labels along the last axis.

    Returns
    -------
    Tensor
        0-d for "mean" and "sum", else the shape of ``input``.

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> x = torch.tensor([[1e4, -1e4]], requires_grad=True)
    >>> loss = flt.binary_cross_entropy_with_logits(
    ...     x, torch.ones(1, 2), pos_weight=torch.tensor([1.0, 3.0]), reduction="sum")
    >>> loss.backward()
    >>> loss.item(), x.grad                     # 3 * softplus(1e4)
    (30000.0, tensor([[ 0., -3.]]))
    """
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    if not _on_fast_path(input, target, weight, pos_weight):
        return F.binary_cross_entropy_with_logits(input, target, weight, reduction=reduction,
                                                  pos_weight=pos_weight)
    args = (target, weight, reduction, pos_weight)
    return _apply(BinaryCrossEntropyWithLogitsFunction, _bce_with_logits_call, input,
                  *args)


# --- Kullback-Leibler divergence ---------------------------------------------------------

def _kl_div_call(input: Tensor, target: Tensor, reduction: str, log_target: bool) -> _Call:
    return _Call(fastloss.kl_div, _numpy(target),
                 dict(reduction=reduction, log_target=log_target))


class KLDivFunction(_FusedLossFunction):
    """``kl_div`` as a ``torch.autograd.Function``:
    ``KLDivFunction.apply(input, target, reduction, log_target)``."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, target: Tensor, reduction: str,
                log_target: bool) -> Tensor:
        return _forward(ctx, input, _kl_div_call(input, target, reduction, log_target), 4)


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    r"""``torch.nn.functional.kl_div``, computed by :func:`fastloss.kl_div` fused with its
    gradient.

    :math:`p\,(\log p - \mathrm{input})` elementwise, with ``input`` log-probabilities
    and ``target`` the probabilities :math:`p` (or :math:`\log p` with ``log_target``);
    the gradient with respect to ``input`` is :math:`-p`. ``"mean"`` divides by the number
    of elements and warns, as in PyTorch, that ``"batchmean"`` (divide by the batch size)
    is the KL divergence. Fast path and fallback as in :func:`cross_entropy`; on the fast
    path a term with target probability 0 is 0 (PyTorch: NaN against an input of -inf),
    negative target probabilities raise ``ValueError`` and target and input must have the
    same shape.

    Parameters
    ----------
    input : Tensor
        Log-probabilities, any shape.
    target : Tensor
        Probabilities, or log-probabilities with ``log_target``; the shape of ``input``.
    size_average, reduce : bool, optional
        Deprecated; use ``reduction``.
    reduction : {"mean", "batchmean", "sum", "none"}, default "mean"
    log_target : bool, default False

    Returns
    -------
    Tensor
        0-d, or the shape of ``input`` for "none".

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> log_q = torch.tensor([[0.2, 0.2, 0.6]], dtype=torch.float64).log().requires_grad_()
    >>> p = torch.tensor([[0.8, 0.1, 0.1]], dtype=torch.float64)
    >>> loss = flt.kl_div(log_q, p, reduction="batchmean")
    >>> loss.backward()
    >>> round(loss.item(), 6), log_q.grad       # -p
    (0.860545, tensor([[-0.8000, -0.1000, -0.1000]], dtype=torch.float64))
    """
    if size_average is not None or reduce is not None:
        reduction = _legacy_reduction(size_average, reduce)
    if not _on_fast_path(input, target):
        return F.kl_div(input, target, reduction=reduction, log_target=log_target)
    if reduction == "mean":
        warnings.warn("kl_div: reduction='mean' divides the total loss by the number of "
                      "elements, batch size times support size; reduction='batchmean' "
                      "divides by the batch size, which is the KL divergence (as PyTorch "
                      "warns)", UserWarning, stacklevel=2)
    args = (target, reduction, log_target)
    return _apply(KLDivFunction, _kl_div_call, input, *args)


def _kl_div_with_logits_call(student_logits: Tensor, teacher: Tensor, teacher_kind: str,
                             temperature: float, scale_by_temperature: bool, reduction: str,
                             axis: int, base: float | None) -> _Call:
    return _Call(fastloss.kl_div_with_logits, _numpy(teacher),
                 dict(teacher_kind=teacher_kind, temperature=temperature,
                      scale_by_temperature=scale_by_temperature, reduction=reduction,
                      axis=axis, base=base),
                 row_axis=axis if reduction == "none" else None)


class KLDivWithLogitsFunction(_FusedLossFunction):
    """``kl_div_with_logits`` as a ``torch.autograd.Function``:
    ``KLDivWithLogitsFunction.apply(student_logits, teacher, teacher_kind, temperature,
    scale_by_temperature, reduction, axis, base)``."""

    @staticmethod
    def forward(ctx: Any, student_logits: Tensor, teacher: Tensor, teacher_kind: str,
                temperature: float, scale_by_temperature: bool, reduction: str, axis: int,
                base: float | None) -> Tensor:
        call = _kl_div_with_logits_call(student_logits, teacher, teacher_kind, temperature,
                                        scale_by_temperature, reduction, axis, base)
        return _forward(ctx, student_logits, call, 8)


def _kl_div_with_logits_torch(student: Tensor, teacher: Tensor, teacher_kind: str,
                              temperature: float, scale_by_temperature: bool,
                              reduction: str, axis: int, base: float | None) -> Tensor:
    """The distillation loss from PyTorch's functions, for what the fast path leaves."""
    if teacher_kind not in TEACHER_KINDS:
        raise ValueError(f"teacher_kind must be one of {tuple(TEACHER_KINDS)}, "
                         f"got {teacher_kind!r}")
    if reduction not in DISTILL_REDUCTIONS:
        raise ValueError(f"reduction must be one of {DISTILL_REDUCTIONS}, got {reduction!r}")
    temperature = check_real(temperature, "temperature", 0.0, MAX_TEMPERATURE, above_low=True)
    log_q = F.log_softmax(student / temperature, dim=axis)
    if teacher_kind == "logits":
        teacher = F.log_softmax(teacher / temperature, dim=axis)
    terms = F.kl_div(log_q, teacher, reduction="none", log_target=teacher_kind != "probs")
    factor = (temperature**2 if scale_by_temperature else 1.0) / log_base(base)
    rows = terms.sum(dim=axis) * factor
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "batchmean":
        return total / student.shape[0]
    return total / student.numel() if reduction == "mean" else total


def kl_div_with_logits(
    student_logits: Tensor,
    teacher: Tensor,
    *,
    teacher_kind: str = "probs",
    temperature: float = 1.0,
    scale_by_temperature: bool = True,
    reduction: str = "batchmean",
    axis: int = 1,
    base: float | None = None,
) -> Tensor:
    r"""The distillation loss :math:`T^2\,\mathrm{KL}(p \,\|\, \mathrm{softmax}(s / T))`,
    computed by :func:`fastloss.kl_div_with_logits` fused with its gradient with respect
    to the student's logits :math:`s`.

    fastloss's own function (PyTorch has none): the arguments are those of
    :func:`fastloss.kl_div_with_logits`, with the class axis 1 by default (PyTorch's
    layout). It equals ``F.kl_div(F.log_softmax(s / T, 1), p, reduction=...) * T**2``,
    except that ``"none"`` gives one loss per row (the shape without the class axis),
    and the teacher is given as probabilities, log-probabilities or logits (divided by
    T too). The teacher gets no gradient. Fast path as in :func:`cross_entropy`; the
    fallback composes PyTorch's ``log_softmax`` and ``kl_div``.

    Parameters
    ----------
    student_logits : Tensor
        The student's logits, C classes along ``axis``.
    teacher : Tensor
        The teacher's probabilities, log-probabilities or logits (``teacher_kind``), the
        shape of ``student_logits``.
    teacher_kind : {"probs", "log_probs", "logits"}, default "probs"
    temperature : float > 0, default 1
    scale_by_temperature : bool, default True
        Multiply the loss by :math:`T^2`.
    reduction : {"batchmean", "mean", "sum", "none"}, default "batchmean"
        "batchmean" divides the sum by the size of the first axis, "mean" by the number
        of elements; "none" gives each row's loss.
    axis : int, default 1
        The class axis.
    base : float, optional
        Unit of the loss: None for nats, 2 for bits.

    Returns
    -------
    Tensor
        0-d, or the shape of ``student_logits`` without ``axis`` for "none".

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> student = torch.tensor([[2.0, 0.5, -1.0]], dtype=torch.float64, requires_grad=True)
    >>> teacher = torch.tensor([[0.8, 0.1, 0.1]], dtype=torch.float64)
    >>> loss = flt.kl_div_with_logits(student, teacher)
    >>> loss.backward()
    >>> round(loss.item(), 6), student.grad     # softmax(student) - teacher
    (0.052279, tensor([[-0.0144,  0.0753, -0.0609]], dtype=torch.float64))
    """
    args = (teacher, teacher_kind, temperature, scale_by_temperature, reduction, axis, base)
    if not _on_fast_path(student_logits, teacher):
        return _kl_div_with_logits_torch(student_logits, *args)
    return _apply(KLDivWithLogitsFunction, _kl_div_with_logits_call, student_logits,
                  *args)


# --- focal losses ------------------------------------------------------------------------

def _sigmoid_focal_call(input: Tensor, target: Tensor, alpha: float, gamma: float,
                        reduction: str) -> _Call:
    return _Call(fastloss.sigmoid_focal_loss, _numpy(target),
                 dict(alpha=alpha, gamma=gamma, reduction=reduction))


class SigmoidFocalLossFunction(_FusedLossFunction):
    """``sigmoid_focal_loss`` as a ``torch.autograd.Function``:
    ``SigmoidFocalLossFunction.apply(input, target, alpha, gamma, reduction)``."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, target: Tensor, alpha: float, gamma: float,
                reduction: str) -> Tensor:
        return _forward(ctx, input, _sigmoid_focal_call(input, target, alpha, gamma,
                                                        reduction), 5)


def _sigmoid_focal_loss_torch(inputs: Tensor, targets: Tensor, alpha: float, gamma: float,
                              reduction: str) -> Tensor:
    """torchvision's formula in PyTorch: the fallback off the fast path."""
    p = torch.sigmoid(inputs)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction != "none":
        raise ValueError(f"Invalid Value for arg 'reduction': '{reduction}'. Supported "
                         "reduction modes: 'none', 'mean', 'sum'")
    return loss


def sigmoid_focal_loss(inputs: Tensor, targets: Tensor, alpha: float = 0.25,
                       gamma: float = 2, reduction: str = "none") -> Tensor:
    r"""``torchvision.ops.sigmoid_focal_loss``, computed by
    :func:`fastloss.sigmoid_focal_loss` fused with its gradient.

    :math:`\alpha_t\,(1 - p_t)^\gamma\,\mathrm{BCE}(x, t)` elementwise, with
    :math:`p = \sigma(x)`, :math:`p_t = p\,t + (1 - p)(1 - t)` and
    :math:`\alpha_t = \alpha\,t + (1 - \alpha)(1 - t)` (1 where ``alpha`` < 0).
    torchvision's argument names and defaults; fast path and fallback as in
    :func:`cross_entropy` (the fallback is torchvision's formula written in PyTorch, so
    torchvision is not needed).

    Parameters
    ----------
    inputs : Tensor
        Logits, any shape.
    targets : Tensor
        Labels or soft labels in [0, 1], the shape of ``inputs``.
    alpha : float, default 0.25
    gamma : float, default 2
    reduction : {"none", "mean", "sum"}, default "none"

    Returns
    -------
    Tensor
        The shape of ``inputs`` for "none", else 0-d.

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> x = torch.tensor([3.0, -2.0, 0.5], requires_grad=True)
    >>> loss = flt.sigmoid_focal_loss(x, torch.tensor([1.0, 0.0, 1.0]), reduction="sum")
    >>> loss.backward()
    >>> round(loss.item(), 6), x.grad.shape
    (0.018273, torch.Size([3]))
    """
    if not _on_fast_path(inputs, targets):
        return _sigmoid_focal_loss_torch(inputs, targets, alpha, gamma, reduction)
    return _apply(SigmoidFocalLossFunction, _sigmoid_focal_call, inputs, targets,
                  float(alpha), float(gamma), reduction)


def _focal_call(input: Tensor, target: Tensor, weight: Tensor | None, gamma: float,
                ignore_index: int, reduction: str) -> _Call:
    axis = 1 if input.dim() > 1 else 0
    return _Call(fastloss.focal_loss, _numpy(target),
                 dict(weight=_numpy(weight), gamma=gamma, ignore_index=ignore_index,
                      reduction=reduction, axis=axis),
                 row_axis=axis if reduction == "none" else None)


class FocalLossFunction(_FusedLossFunction):
    """``focal_loss`` as a ``torch.autograd.Function``:
    ``FocalLossFunction.apply(input, target, weight, gamma, ignore_index, reduction)``."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, target: Tensor, weight: Tensor | None,
                gamma: float, ignore_index: int, reduction: str) -> Tensor:
        return _forward(ctx, input, _focal_call(input, target, weight, gamma, ignore_index,
                                                reduction), 6)


def _focal_loss_torch(input: Tensor, target: Tensor, weight: Tensor | None, gamma: float,
                      ignore_index: int, reduction: str) -> Tensor:
    """The multi-class focal loss in PyTorch: the fallback off the fast path."""
    ce = F.cross_entropy(input, target, ignore_index=ignore_index, reduction="none")
    loss = (-torch.expm1(-ce)) ** gamma * ce
    counted = target != ignore_index
    w = counted.to(ce.dtype)
    if weight is not None:
        w = w * weight[torch.where(counted, target, 0)]
    loss = w * loss
    if reduction == "mean":
        return loss.sum() / w.sum()
    if reduction == "sum":
        return loss.sum()
    return loss


def focal_loss(input: Tensor, target: Tensor, weight: Tensor | None = None,
               gamma: float = 2.0, ignore_index: int = -100,
               reduction: str = "mean") -> Tensor:
    r"""The multi-class focal loss :math:`-w_y\,(1 - p_y)^\gamma \log p_y` over
    softmax(input), computed by :func:`fastloss.focal_loss` fused with its gradient.

    Shapes and arguments as ``torch.nn.functional.cross_entropy`` with class indices:
    ``input`` of shape (C,), (N, C) or (N, C, d1, ...), the class axis 1 (0 for a single
    row); "mean" divides by the summed weights of the counted targets. PyTorch has no
    focal loss: off the fast path the same formula is computed with PyTorch's functions.
    At ``gamma`` = 0 it is :func:`cross_entropy`.

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> x = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]], requires_grad=True)
    >>> loss = flt.focal_loss(x, torch.tensor([0, 1]))
    >>> loss.backward()
    >>> round(loss.item(), 6), x.grad.shape
    (0.002461, torch.Size([2, 3]))
    """
    if not _on_fast_path(input, target, weight):
        return _focal_loss_torch(input, target, weight, gamma, ignore_index, reduction)
    return _apply(FocalLossFunction, _focal_call, input, target, weight, float(gamma),
                  ignore_index, reduction)


# --- modules -----------------------------------------------------------------------------
# Subclasses of PyTorch's own modules: the same constructor, buffers (weight, pos_weight:
# .to() and state_dict behave alike), repr and isinstance; only forward differs.

class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` computed by :func:`fastloss.torch.cross_entropy`.

    Constructor as PyTorch's: ``CrossEntropyLoss(weight=None, size_average=None,
    ignore_index=-100, reduce=None, reduction="mean", label_smoothing=0.0)``.

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> loss_fn = flt.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0]))
    >>> round(loss_fn(torch.tensor([[2.3, -1.2]]), torch.tensor([1])).item(), 5)
    3.52975
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing)


class BCELoss(torch.nn.BCELoss):
    """``torch.nn.BCELoss`` computed by :func:`fastloss.torch.binary_cross_entropy`.

    Constructor as PyTorch's: ``BCELoss(weight=None, size_average=None, reduce=None,
    reduction="mean")``.

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> round(flt.BCELoss()(torch.tensor([0.6, 0.9]), torch.tensor([1.0, 1.0])).item(), 5)
    0.30809
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(input, target, weight=self.weight,
                                    reduction=self.reduction)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """``torch.nn.BCEWithLogitsLoss`` computed by
    :func:`fastloss.torch.binary_cross_entropy_with_logits`.

    Constructor as PyTorch's: ``BCEWithLogitsLoss(weight=None, size_average=None,
    reduce=None, reduction="mean", pos_weight=None)``.

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> loss_fn = flt.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))
    >>> round(loss_fn(torch.tensor([0.0]), torch.tensor([1.0])).item(), 5)   # 2 log 2
    1.38629
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(input, target, weight=self.weight,
                                                reduction=self.reduction,
                                                pos_weight=self.pos_weight)


class KLDivLoss(torch.nn.KLDivLoss):
    """``torch.nn.KLDivLoss`` computed by :func:`fastloss.torch.kl_div`.

    Constructor as PyTorch's: ``KLDivLoss(size_average=None, reduce=None,
    reduction="mean", log_target=False)``.

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> loss_fn = flt.KLDivLoss(reduction="batchmean")
    >>> log_q = torch.tensor([[0.2, 0.2, 0.6]]).log()
    >>> round(loss_fn(log_q, torch.tensor([[0.8, 0.1, 0.1]])).item(), 5)
    0.86054
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class SigmoidFocalLoss(torch.nn.Module):
    """:func:`fastloss.torch.sigmoid_focal_loss` as a module:
    ``SigmoidFocalLoss(alpha=0.25, gamma=2.0, reduction="none")``.

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> loss_fn = flt.SigmoidFocalLoss(reduction="sum")
    >>> round(loss_fn(torch.tensor([0.0]), torch.tensor([1.0])).item(), 5)  # .25 .25 log 2
    0.04332
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0,
                 reduction: str = "none") -> None:
        super().__init__()
        self.alpha, self.gamma, self.reduction = alpha, gamma, reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return sigmoid_focal_loss(input, target, alpha=self.alpha, gamma=self.gamma,
                                  reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"


class FocalLoss(torch.nn.Module):
    """:func:`fastloss.torch.focal_loss` as a module: ``FocalLoss(weight=None, gamma=2.0,
    ignore_index=-100, reduction="mean")``; ``weight`` is a buffer, as in
    ``torch.nn.CrossEntropyLoss``.

    Examples
    --------
    >>> import torch, fastloss.torch as flt
    >>> loss_fn = flt.FocalLoss(gamma=0.0)          # gamma 0: the cross-entropy
    >>> round(loss_fn(torch.tensor([[2.3, -1.2]]), torch.tensor([1])).item(), 5)
    3.52975
    """

    weight: Tensor | None

    def __init__(self, weight: Tensor | None = None, gamma: float = 2.0,
                 ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.gamma, self.ignore_index, self.reduction = gamma, ignore_index, reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return focal_loss(input, target, weight=self.weight, gamma=self.gamma,
                          ignore_index=self.ignore_index, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"
