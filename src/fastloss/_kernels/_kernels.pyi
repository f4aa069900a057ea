# Stubs of the compiled seam (_kernels.pyx): the kernels take arrays that the Python layer
# has validated; see the docstrings there.
from typing import Any

import numpy as np
from numpy.typing import NDArray

_Float = np.float32 | np.float64
_Array = NDArray[Any]

BLOCK_SIZE: int
BCE: int
BCE_WITH_LOGITS: int
KL_DIV: int
KL_DIV_LOG_TARGET: int
SIGMOID_FOCAL: int
TARGET_CLASSES: int
TARGET_PROBS: int
TEACHER_PROBS: int
TEACHER_LOG_PROBS: int
TEACHER_LOGITS: int

def isa_names() -> list[str]: ...
def isas_this_cpu_runs() -> list[str]: ...
def use_isa(name: str) -> None: ...
def current_isa() -> str | None: ...
def rows_per_sum(n_rows: int, n_classes: int) -> int: ...
def _set_stream_min_bytes(n: int) -> int: ...
def rows(op: int, x: NDArray[_Float], out: NDArray[_Float], n_threads: int) -> None: ...
def entropy(p: NDArray[_Float], out: NDArray[np.float64], unit: float, n_threads: int) -> None: ...
def entropy_from_logits(
    x: NDArray[_Float],
    out: NDArray[np.float64],
    grad: NDArray[_Float] | None,
    grad_scale: float,
    unit: float,
    n_threads: int,
) -> None: ...
def row_loss(
    logits: NDArray[_Float],
    target: NDArray[np.intp] | None,
    target_rows: NDArray[_Float] | None,
    class_weight: NDArray[np.float64] | None,
    sample_weight: NDArray[np.float64] | None,
    kind: int,
    label_smoothing: float,
    z_loss: float,
    ignore_index: int,
    grad_scale: float,
    temperature: float,
    loss_factor: float,
    loss_out: NDArray[np.float64],
    rows_per_sum: int,
    grad: NDArray[_Float] | None,
    lse: NDArray[np.float64] | None,
    n_threads: int,
    focal_gamma: float = 0.0,
) -> float | None: ...
def class_targets(
    target: NDArray[np.intp],
    n_classes: int,
    ignore_index: int,
    class_weight: NDArray[np.float64] | None,
    sample_weight: NDArray[np.float64] | None,
    n_threads: int,
) -> tuple[int, float]: ...
def cross_entropy_classes(
    logits: NDArray[_Float],
    target: NDArray[np.intp],
    grad_out: NDArray[_Float] | None,
    mean: bool,
    ignore_index: int,
    n_threads: int,
) -> float | None: ...
def elementwise(
    kind: int,
    x: _Array,
    target: _Array,
    weight: _Array,
    pos_weight: _Array,
    partials: NDArray[np.float64],
    loss_out: _Array,
    grad_out: _Array,
    label_smoothing: float,
    loss_scale: float,
    grad_scale: float,
    n_threads: int,
    has_weight: bool = True,
    has_pos_weight: bool = True,
    ranges: NDArray[np.float64] | None = None,
    focal_alpha: float = -1.0,
    focal_gamma: float = 0.0,
) -> None: ...
def value_range(
    v: _Array,
    lows: NDArray[np.float64],
    highs: NDArray[np.float64],
    nans: NDArray[np.float64],
    n_threads: int,
) -> None: ...
def openmp_enabled() -> bool: ...
def max_threads() -> int: ...
def num_procs() -> int: ...
def resolve_threads(requested: int) -> int: ...
def forked_after_team() -> bool: ...
def _set_cpu_limit(limit: int) -> int: ...
def build_info() -> dict[str, Any]: ...
