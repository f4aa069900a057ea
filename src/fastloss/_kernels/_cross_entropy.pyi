import numpy as np
from numpy.typing import NDArray

_Float = np.float32 | np.float64

def cross_entropy_kernel(
    logits: NDArray[_Float],
    target: NDArray[np.intp],
    soft_target: NDArray[_Float],
    class_weight: NDArray[np.float64],
    sample_weight: NDArray[np.float64],
    loss_out: NDArray[np.float64],
    grad_out: NDArray[_Float],
    lse_out: NDArray[np.float64],
    target_kind: int,
    label_smoothing: float,
    z_loss: float,
    ignore_index: int,
    grad_scale: float,
    temperature: float,
    loss_factor: float,
    rows_per_sum: int,
    n_threads: int,
) -> float | None: ...

def check_class_targets(
    target: NDArray[np.intp],
    n_classes: int,
    ignore_index: int,
    class_weight: NDArray[np.float64],
    sample_weight: NDArray[np.float64],
    n_threads: int,
) -> tuple[int, float]: ...

def rows_per_sum(n_rows: int, n_classes: int) -> int: ...
def cross_entropy_classes(
    logits: NDArray[_Float],
    target: NDArray[np.intp],
    grad_out: NDArray[_Float] | None,
    mean: bool,
    ignore_index: int,
    n_threads: int,
) -> float | None: ...

def _set_stream_min_bytes(n: int) -> int: ...
