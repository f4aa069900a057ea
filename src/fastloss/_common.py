"""Layer 3 plumbing shared by every public function: argument checks and
the mapping between any array layout and the (N, C) C-contiguous rows the kernels read.

Every check raises a ``TypeError``, ``ValueError`` or ``IndexError`` whose message names
the argument and what was expected; the kernels trust what passes through here.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from fastloss._dispatch import kernels
from fastloss._kernels import _kernels
from fastloss._threads import effective_n_threads

#: The dtypes the kernels are compiled for.
KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str, choices: tuple[str, ...] = REDUCTIONS) -> str:
    if not isinstance(reduction, str) or reduction not in choices:
        raise ValueError(f"reduction must be one of {choices}, got {reduction!r}")
    return reduction


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The kernel dtype for a floating dtype: float16 is computed in float32, and
    long double (or any other float) in float64."""
    if dtype in KERNEL_DTYPES:
        return dtype
    return np.dtype(np.float32) if dtype.itemsize < 4 else np.dtype(np.float64)


def kernel_array(x: Any, dtype: np.dtype) -> np.ndarray:
    """``x`` as the kernels read it: C-contiguous, aligned, of ``dtype``; a view where it
    already is, else a copy. NumPy arrays may be unaligned (a view at an odd byte offset),
    and the kernels' C loads of a typed element are defined only at its alignment."""
    return np.require(x, dtype=dtype, requirements=["C", "A"])


def as_floating(x: Any, name: str) -> np.ndarray:
    """``x`` as an ndarray of a real floating dtype, without copying an ndarray."""
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name} must be an array of real floating-point numbers (float32 or float64), "
            f"got dtype {arr.dtype}; convert it first, e.g. {name}.astype(np.float32)"
        )
    return arr


def normalize_axis(axis: Any, ndim: int, name: str) -> int:
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an int, got {type(axis).__name__}") from None
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis), "
                         "got a 0-d array")
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim, f"axis of {name}")
    return cast(int, axis % ndim)


def class_axis(x: np.ndarray, axis: Any, name: str) -> int:
    """The class axis of ``x``, non-negative, after checking that it holds a class.

    One rule for every function with a class axis: a distribution over no classes does
    not exist, so an empty class axis is a ``ValueError`` (whatever the number of rows),
    where PyTorch and SciPy give ``logsumexp`` -inf and ``softmax`` an empty array."""
    index = normalize_axis(axis, x.ndim, name)
    if x.shape[index] == 0:
        raise ValueError(f"{name} must have at least one class along axis {index}, got 0")
    return index


def check_flag(value: Any, name: str) -> bool:
    """A bool (``np.bool_`` too): ``return_grad="no"`` is a mistake, not a true value."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


@dataclass(frozen=True)
class Rows:
    """An array seen as (N, C) rows over its class axis, as the kernels want it."""

    rows: np.ndarray            # (N, C), C-contiguous, float32/float64
    direct: bool                # rows is a view of the caller's array, not a copy
    shape: tuple[int, ...]      # the caller's shape
    axis: int                   # the class axis, non-negative
    dtype: np.dtype             # dtype of full-shape results (the caller's)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.shape[: self.axis] + self.shape[self.axis + 1:]

    def restore(self, rows: np.ndarray) -> np.ndarray:
        """(N, C) results back to the caller's shape (a view when the axis was moved)."""
        moved = (*self.batch_shape, self.shape[self.axis])
        return np.moveaxis(rows.reshape(moved), -1, self.axis)


def to_rows(x: np.ndarray, axis: int) -> Rows:
    """View ``x`` as rows when it is C-contiguous float32/float64 with the class axis last
    (the fast path); otherwise make one contiguous copy in the kernel dtype."""
    n_classes = x.shape[axis]
    n_rows = math.prod(x.shape[:axis] + x.shape[axis + 1:])
    kdtype = compute_dtype(x.dtype)
    direct = (axis == x.ndim - 1 and x.dtype == kdtype and x.flags.c_contiguous
              and x.flags.aligned)
    if direct:
        rows = x.reshape(n_rows, n_classes)
    else:
        rows = kernel_array(np.moveaxis(x, axis, -1), kdtype).reshape(n_rows, n_classes)
    return Rows(rows=rows, direct=direct, shape=x.shape, axis=axis, dtype=x.dtype)


def check_out(
    out: Any,
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    may_alias: np.ndarray | None,
    no_overlap: tuple[tuple[str, Any], ...] = (),
    require_c_contiguous: bool = False,
) -> np.ndarray:
    """Validate a caller-provided output buffer.

    It may be exactly ``may_alias`` (in place) but may not partly overlap it, nor touch
    any array in ``no_overlap`` (pairs of argument name and value).
    """
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if require_c_contiguous and not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    if may_alias is not None and np.may_share_memory(out, may_alias):
        same = (
            out.__array_interface__["data"][0] == may_alias.__array_interface__["data"][0]
            and out.strides == may_alias.strides
            and out.shape == may_alias.shape
        )
        if not same:
            raise ValueError(
                f"{name} overlaps the input only partly; pass the very same array for an "
                "in-place result, or a separate buffer"
            )
    for other_name, other in no_overlap:
        if isinstance(other, np.ndarray) and np.may_share_memory(out, other):
            raise ValueError(f"{name} must not share memory with {other_name}")
    return out


def full_output(
    layout: Rows, out: np.ndarray | None
) -> tuple[np.ndarray, Callable[[], np.ndarray]]:
    """A (N, C) buffer for the kernel to write, and a function that returns the result.

    Writes go straight into ``out`` (or a fresh array) on the fast path; otherwise into a
    scratch buffer in the kernel's layout that ``finish`` copies into place.
    """
    rows = layout.rows
    if layout.direct and (out is None or (out.flags.c_contiguous and out.flags.aligned)):
        buf = np.empty_like(rows) if out is None else out.reshape(rows.shape)
        result = buf.reshape(layout.shape) if out is None else out
        return buf, lambda: result
    buf = np.empty_like(rows)

    def finish() -> np.ndarray:
        restored = layout.restore(buf)
        if out is None:
            return restored if restored.dtype == layout.dtype else restored.astype(layout.dtype)
        out[...] = restored
        return out

    return buf, finish


def class_view(x: np.ndarray, axis: int) -> np.ndarray:
    """``x`` as (outer, C, inner), C-contiguous in the kernel dtype: a view of ``x`` when
    it already is C-contiguous float32/float64, else one copy (documented)."""
    contiguous = kernel_array(x, compute_dtype(x.dtype))
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1:])
    return contiguous.reshape(outer, x.shape[axis], inner)


def check_weights(weights: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Finite, non-negative real weights of the given shape, as a flat float64 copy: the
    copy (N or C numbers) keeps a grad_out that overlaps the caller's weights from
    changing them while the kernel reads them."""
    arr = np.asarray(weights)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    arr = np.array(arr, dtype=np.float64).reshape(-1)
    check_non_negative(arr, name)
    return arr


def check_real(value: Any, name: str, low: float, high: float = math.inf, *,
               above_low: bool = False) -> float:
    """A finite real number in [low, high] (in (low, high] with ``above_low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    inside = (low < value if above_low else low <= value) and value <= high
    if not (inside and math.isfinite(value)):
        if math.isfinite(high):
            bounds = f"in {'(' if above_low else '['}{low:g}, {high:g}]"
        else:
            bounds = f"{'>' if above_low else '>='} {low:g}"
        raise ValueError(f"{name} must be a finite number {bounds}, got {value}")
    return cast(float, value)


def log_base(base: Any) -> float:
    """ln(base), the divisor that turns nats into units of ``base`` (1 for None: nats).

    ``base`` must be a positive real number other than 1 (2 gives bits).
    """
    if base is None:
        return 1.0
    if isinstance(base, bool) or not isinstance(base, (int, float, np.integer, np.floating)):
        raise TypeError(f"base must be a positive real number or None, got "
                        f"{type(base).__name__}")
    base = float(base)
    if not (base > 0 and base != 1 and math.isfinite(base)):
        raise ValueError(f"base must be a finite positive number other than 1, got {base}")
    return math.log(base)


def check_non_negative(arr: np.ndarray, name: str, *, nan_ok: bool = False,
                       n_threads: int | None = None) -> None:
    """Raise unless every entry is finite and non-negative (probabilities: rows need not
    sum to 1; weights).

    One parallel pass and no temporary (:func:`value_extremes`). With ``nan_ok`` NaN
    entries pass (and propagate to the result) and only the others count.
    """
    if not arr.size:
        return
    low, high, has_nan = value_extremes(arr, n_threads)
    if has_nan and not nan_ok:
        raise ValueError(f"{name} must be finite")
    if low > high:                        # nothing but NaN
        return
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} must be finite" + (" (or NaN)" if nan_ok else ""))
    if low < 0:
        raise ValueError(f"{name} must be non-negative, got {low}")


def value_extremes(arr: np.ndarray, n_threads: int | None = None) -> tuple[float, float, bool]:
    """The NaN-ignoring min and max of a non-empty array (+inf and -inf if it is all NaN)
    and whether it has a NaN: one parallel pass of the kernels over a C-contiguous
    float32/float64 array (NumPy's min and max took two serial ones: a sixth of a
    soft-target cross-entropy's time), NumPy's reductions for any other."""
    if arr.dtype in (np.float32, np.float64) and arr.flags.c_contiguous and arr.flags.aligned:
        flat = arr.reshape(-1)
        n_blocks = -(-flat.size // _kernels.BLOCK_SIZE)
        lows, highs, nans = np.empty(n_blocks), np.empty(n_blocks), np.empty(n_blocks)
        kernels().value_range(flat, lows, highs, nans,
                              effective_n_threads(n_threads, flat.size))
        return float(lows.min()), float(highs.max()), bool(nans.any())
    has_nan = bool(np.isnan(np.max(arr)))   # NaN propagates through max
    return (float(np.fmin.reduce(arr, axis=None)), float(np.fmax.reduce(arr, axis=None)),
            has_nan)


def gradient_requested(return_grad: bool, grad_out: Any, x: np.ndarray,
                       no_overlap: tuple[tuple[str, Any], ...] = ()) -> bool:
    """Whether a gradient is wanted (``grad_out`` implies it), after validating
    ``grad_out``: C-contiguous, ``x``'s shape and dtype, ``x`` itself or no overlap with
    it, and no overlap with the other inputs."""
    requested = check_flag(return_grad, "return_grad")
    if grad_out is None:
        return requested
    check_out(grad_out, "grad_out", x.shape, x.dtype, may_alias=x, no_overlap=no_overlap,
              require_c_contiguous=True)
    return True
# --- elementwise losses: targets, broadcast weights, the reduction --------------------


def elementwise_target(target: Any, x: np.ndarray, x_name: str) -> np.ndarray:
    """``target`` as a flat C-contiguous array in the kernel dtype of ``x``, whose shape it
    must have. Integer and boolean targets are converted; other non-real dtypes raise."""
    arr = np.asarray(target)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"target must be an array of real numbers, got dtype {arr.dtype}")
    if arr.shape != x.shape:
        raise ValueError(f"target must have the shape of {x_name}, {x.shape}, got {arr.shape}")
    return kernel_array(arr, compute_dtype(x.dtype)).reshape(-1)


def check_range(flat: np.ndarray, name: str, low: float, high: float = math.inf,
                what: str = "", n_threads: int = 1) -> None:
    """Every value of a flat float32/float64 array in [low, high], NaN allowed (it
    propagates into the loss).

    The NaN-ignoring min and max come from one parallel pass of the kernels (per-block
    extremes), without a temporary of the array's size."""
    if flat.size == 0:
        return
    lowest, highest, _ = value_extremes(flat, n_threads)
    raise_outside(name, low, high, lowest, highest, what)


def raise_outside(name: str, low: float, high: float, lowest: float, highest: float,
                  what: str = "") -> None:
    """The ValueError of :func:`check_range` when [lowest, highest] (the NaN-ignoring
    extremes of the values) is not within [low, high]."""
    if lowest < low or highest > high:
        bounds = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
        raise ValueError(f"{name} must be {bounds}{what}, got values from {lowest} to "
                         f"{highest}")


def periodic_weights(weights: Any, name: str, shape: tuple[int, ...], dtype: np.dtype,
                     against: str) -> np.ndarray:
    """See :func:`periodic_weights_and_ones`: the period alone."""
    return periodic_weights_and_ones(weights, name, shape, dtype, against)[0]


def periodic_weights_and_ones(weights: Any, name: str, shape: tuple[int, ...],
                              dtype: np.dtype, against: str) -> tuple[np.ndarray, bool]:
    """Finite, non-negative real weights that broadcast to ``shape``, as the kernels take
    them: one period of their values over the flat index, in ``dtype``, tiled to at least
    the kernels' block size (None: ones).

    After left-padding with 1s, weights that are 1 over the leading axes and equal to
    ``shape`` over the others (a scalar, (C,), (D, C) or the full shape) repeat with
    period prod(trailing axes) and are passed as they are (a view when they are
    C-contiguous in ``dtype``). Any other broadcast, such as (N, 1), is materialised to the
    full shape (one copy).

    Also returns whether every weight is 1 (None included), so that the kernels need not
    read them: a product by 1 is exact, so the results are the same bits.
    """
    block = _kernels.BLOCK_SIZE
    if weights is None:
        return _ones(dtype, block), True
    arr = np.asarray(weights)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}")
    padded = (1,) * (len(shape) - arr.ndim) + arr.shape
    if arr.ndim > len(shape) or any(w not in (1, s) for w, s in zip(padded, shape, strict=True)):
        raise ValueError(f"{name} of shape {arr.shape} does not broadcast to the shape of "
                         f"{against}, {shape}")
    ones = True
    if arr.size:
        low, high = np.min(arr), np.max(arr)
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"{name} must be finite")
        if low < 0:
            raise ValueError(f"{name} must be non-negative, got {low}")
        ones = bool(low == high == 1)
    lead = len(shape)                      # the trailing axes [lead:] match shape
    while lead > 0 and padded[lead - 1] == shape[lead - 1]:
        lead -= 1
    if all(w == 1 for w in padded[:lead]):
        period = kernel_array(arr.reshape(padded[lead:]), dtype).reshape(-1)
    else:
        period = kernel_array(np.broadcast_to(arr, shape), dtype).reshape(-1)
    if 0 < period.size < block:
        period = np.tile(period, -(-block // period.size))
    return period, ones


@functools.cache
def _ones(dtype: np.dtype, n: int) -> np.ndarray:
    ones = np.ones(n, dtype=dtype)
    ones.flags.writeable = False
    return ones


@dataclass(frozen=True)
class ElementwiseSpec:
    """What distinguishes one elementwise loss in :func:`run_elementwise`."""

    kind: int                                   # the kernel's loss constant
    x_name: str                                 # the first argument's name
    x_bounds: tuple[float, float] | None = None         # allowed values of x (NaN too)
    target_bounds: tuple[float, float] | None = None    # allowed values of the target
    bounds_hint: str = ""                       # appended to a range error's bounds
    reductions: tuple[str, ...] = REDUCTIONS


def run_elementwise(spec: ElementwiseSpec, x_given: Any, target: Any, *, weight: Any = None,
                    pos_weight: Any = None, label_smoothing: float = 0.0,
                    reduction: str, base: Any, n_threads: int | None, return_grad: bool,
                    grad_out: np.ndarray | None, total_dtype: np.dtype | None = None,
                    focal: tuple[float, float] = (-1.0, 0.0)) -> Any:
    """Validate the arguments of an elementwise loss, run its kernel, form the results.

    The first argument and the target are read flat and C-contiguous in the kernel dtype
    (views when they already are); weights as :func:`periodic_weights` passes them. The
    reduced loss is the fixed-order sum of the kernel's block sums, over the reduction's
    denominator (NaN when it is 0) and ln(base); the gradient is that of the reduced loss
    (of the sum for "none"), in the shape and dtype of the first argument. A reduced loss
    comes in ``total_dtype`` (None: the first argument's dtype). ``focal``: the sigmoid
    focal loss's alpha and gamma.
    """
    given = as_floating(x_given, spec.x_name)
    reduction = check_reduction(reduction, spec.reductions)
    ln_base = log_base(base)
    threads = effective_n_threads(n_threads, given.size)
    x = kernel_array(given, compute_dtype(given.dtype)).reshape(-1)
    y = elementwise_target(target, given, spec.x_name)
    weights, unweighted = periodic_weights_and_ones(weight, "weight", given.shape, x.dtype,
                                                    spec.x_name)
    pos_weights, no_pos_weight = periodic_weights_and_ones(pos_weight, "pos_weight",
                                                           given.shape, x.dtype, "target")
    with_grad = gradient_requested(
        return_grad, grad_out, given,
        no_overlap=(("target", target), ("weight", weight), ("pos_weight", pos_weight)),
    )
    n = x.size
    n_blocks = -(-n // _kernels.BLOCK_SIZE)
    # The values' ranges: checked in the kernel's own pass (one read of the arrays), and
    # the error raised after it, unless the gradient overwrites the input (in place),
    # which must stay as it was when the values are rejected: then in a pass before.
    bounds = [(values, name, limits, column) for values, name, limits, column in
              ((x, spec.x_name, spec.x_bounds, 0), (y, "target", spec.target_bounds, 2))
              if limits is not None]
    in_place = grad_out is not None and np.may_share_memory(grad_out, given)
    ranges = None
    if bounds and in_place:
        for values, name, limits, _ in bounds:
            check_range(values, name, *limits, what=spec.bounds_hint, n_threads=threads)
    elif bounds and n:
        ranges = np.empty((n_blocks, 4))

    partials = np.empty(n_blocks, dtype=np.float64)
    loss_out = np.empty(n if reduction == "none" else 0, dtype=x.dtype)
    direct = grad_out is not None and grad_out.dtype == x.dtype and grad_out.flags.aligned
    if not with_grad:
        grad = np.empty(0, dtype=x.dtype)
    else:
        grad = cast(np.ndarray, grad_out).reshape(-1) if direct else np.empty(n, dtype=x.dtype)
    denominator = mean_denominator(reduction, given.shape)
    scale = 1.0 / (denominator * ln_base) if denominator > 0 else 0.0
    kernels().elementwise(
        spec.kind, x, y, weights, pos_weights, partials, loss_out, grad, label_smoothing,
        1.0 / ln_base, scale, threads, not unweighted, not no_pos_weight, ranges, *focal,
    )
    if ranges is not None:
        for _, name, (low, high), column in bounds:
            raise_outside(name, low, high, ranges[:, column].min(),
                          ranges[:, column + 1].max(), spec.bounds_hint)
    # Results of a float16 input round to its range: 1e12 becomes inf, without a warning.
    with np.errstate(over="ignore"):
        if reduction == "none":
            loss = loss_out.reshape(given.shape).astype(given.dtype, copy=False)
        else:
            total = float(np.sum(partials))
            loss = (total_dtype or given.dtype).type(
                total / denominator / ln_base if denominator > 0 else math.nan)
        if not with_grad:
            return loss
        if grad_out is None:
            return loss, grad.reshape(given.shape).astype(given.dtype, copy=False)
        if not direct:          # float16 / long double: computed in a kernel dtype
            grad_out[...] = grad.reshape(given.shape)
    return loss, grad_out


def mean_denominator(reduction: str, shape: tuple[int, ...]) -> float:
    """What a reduction divides the sum of an elementwise loss by: the number of elements
    for "mean", the first dimension for "batchmean" (none for a 0-d input), else 1."""
    if reduction == "mean":
        return float(math.prod(shape))
    if reduction == "batchmean":
        return float(shape[0]) if shape else 1.0
    return 1.0
