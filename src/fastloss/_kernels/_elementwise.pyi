import numpy as np
from numpy.typing import NDArray

_Float = np.float32 | np.float64

BCE: int
BCE_WITH_LOGITS: int
KL_DIV: int
KL_DIV_LOG_TARGET: int
BLOCK_SIZE: int

def elementwise_loss(
    loss: int,
    x: NDArray[_Float],
    target: NDArray[_Float],
    weight: NDArray[_Float],
    pos_weight: NDArray[_Float],
    partials: NDArray[np.float64],
    loss_out: NDArray[_Float],
    grad_out: NDArray[_Float],
    label_smoothing: float,
    loss_scale: float,
    grad_scale: float,
    n_threads: int,
    has_weight: bool = ...,
    has_pos_weight: bool = ...,
    ranges: NDArray[np.float64] | None = ...,
) -> None: ...
def value_range(v: NDArray[_Float], lows: NDArray[np.float64], highs: NDArray[np.float64],
                nans: NDArray[np.float64], n_threads: int) -> None: ...
def cpu_builds() -> list[str]: ...
