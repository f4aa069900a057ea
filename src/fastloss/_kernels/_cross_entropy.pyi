import numpy as np
from numpy.typing import NDArray

_Float = np.float32 | np.float64

def cross_entropy_rows(
    logits: NDArray[_Float],
    target: NDArray[np.intp],
    loss_out: NDArray[np.float64],
    n_threads: int,
) -> None: ...
def cross_entropy_grad_rows(
    logits: NDArray[_Float],
    target: NDArray[np.intp],
    loss_out: NDArray[np.float64],
    grad_out: NDArray[_Float],
    grad_scale: float,
    n_threads: int,
) -> None: ...
