"""one_hot: class indices to one-hot rows."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["one_hot"]


def one_hot(labels: Any, num_classes: int, *, dtype: DTypeLike = np.float32) -> np.ndarray:
    """One-hot encoding of integer class labels.

    ``labels`` of shape S gives an array of shape ``(*S, num_classes)`` with a 1 at each
    label's class and 0 elsewhere (``torch.nn.functional.one_hot``, which however needs
    ``num_classes`` only optionally and returns integers).

    Parameters
    ----------
    labels : array_like of int
        Class indices in ``[0, num_classes)``; ``IndexError`` otherwise.
    num_classes : int >= 1
    dtype : dtype, default float32

    Examples
    --------
    >>> import numpy as np, fastloss
    >>> fastloss.one_hot(np.array([1, 0]), 3)          # dog, cat of (cat, dog, monkey)
    array([[0., 1., 0.],
           [1., 0., 0.]], dtype=float32)
    """
    given = np.asarray(labels)
    if given.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {given.dtype}")
    try:
        if isinstance(num_classes, bool):
            raise TypeError
        num_classes = operator.index(num_classes)
    except TypeError:
        raise TypeError(f"num_classes must be an int, got {num_classes!r}") from None
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if given.size and (given.min() < 0 or given.max() >= num_classes):
        bad = given[(given < 0) | (given >= num_classes)].reshape(-1)[0]
        raise IndexError(f"labels must be in [0, {num_classes}), got {bad}")
    out = np.zeros((*given.shape, num_classes), dtype=dtype)
    np.put_along_axis(out, given[..., None].astype(np.intp), 1, axis=-1)
    return out
