import numpy as np
from numpy.typing import NDArray

_Float = np.float32 | np.float64

def softmax_rows(x: NDArray[_Float], out: NDArray[_Float], n_threads: int) -> None: ...
def log_softmax_rows(x: NDArray[_Float], out: NDArray[_Float], n_threads: int) -> None: ...
def logsumexp_rows(x: NDArray[_Float], out: NDArray[_Float], n_threads: int) -> None: ...
def entropy_rows(
    p: NDArray[_Float], out: NDArray[np.float64], unit: float, n_threads: int
) -> None: ...
def entropy_from_logits_rows(
    x: NDArray[_Float],
    out: NDArray[np.float64],
    grad_out: NDArray[_Float],
    grad_scale: float,
    unit: float,
    n_threads: int,
) -> None: ...
