"""The registry of row losses (a loss per row of C classes, over softmax of the row): each
entry names the fastloss function, its NumPy reference, how to make its second argument,
its options and its reductions. tests/test_row_losses.py runs the properties every row
loss must have over the registry, in the manner of scikit-learn's
sklearn/_loss/tests/test_loss.py: a new row loss is covered by adding an entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import fastloss
from fastloss import reference


def _classes(rng, x, axis):
    batch = x.shape[:axis % x.ndim] + x.shape[axis % x.ndim + 1:]
    return rng.integers(0, x.shape[axis], batch)


def _probabilities(rng, x, axis):
    return np.asarray(reference.softmax(rng.standard_normal(x.shape) * 2, axis), x.dtype)


def _teacher_logits(rng, x, axis):
    return (x + rng.standard_normal(x.shape)).astype(x.dtype)


def _no_target(rng, x, axis):
    return None


@dataclass(frozen=True)
class RowLoss:
    """One registered row loss: ``function(logits, target, **options)`` and
    ``reference_function(logits, target, **options)`` (without the target where
    ``make_target`` gives None)."""

    name: str
    function: Callable[..., Any]
    reference_function: Callable[..., Any]
    make_target: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)
    reductions: tuple[str, ...] = ("none", "sum", "mean")

    def __call__(self, x, target, **kwargs):
        args = (x,) if target is None else (x, target)
        return self.function(*args, **self.options, **kwargs)

    def reference(self, x, target, **kwargs):
        args = (x,) if target is None else (x, target)
        return self.reference_function(*args, **self.options, **kwargs)


ROW_LOSSES = [
    RowLoss("cross_entropy", fastloss.cross_entropy, reference.cross_entropy, _classes),
    RowLoss("cross_entropy-options", fastloss.cross_entropy, reference.cross_entropy,
            _classes, {"label_smoothing": 0.1, "z_loss": 1e-3}),
    RowLoss("cross_entropy-probs", fastloss.cross_entropy, reference.cross_entropy,
            _probabilities),
    RowLoss("kl_div_with_logits", fastloss.kl_div_with_logits, reference.kl_div_with_logits,
            _teacher_logits, {"teacher_kind": "logits", "temperature": 2.0},
            ("none", "sum", "mean", "batchmean")),
    RowLoss("kl_div_with_logits-probs", fastloss.kl_div_with_logits,
            reference.kl_div_with_logits, _probabilities, {},
            ("none", "sum", "mean", "batchmean")),
    RowLoss("entropy_from_logits", fastloss.entropy_from_logits,
            reference.entropy_from_logits, _no_target, {}, ("none", "sum", "mean")),
    RowLoss("focal_loss", fastloss.focal_loss, reference.focal_loss, _classes),
    RowLoss("focal_loss-gamma", fastloss.focal_loss, reference.focal_loss, _classes,
            {"gamma": 0.7}),
]
ROW_LOSS_IDS = [loss.name for loss in ROW_LOSSES]


def make_rows(rng, loss, shape, dtype, axis=-1, scale=3.0):
    """Logits of ``shape`` (rows with a -inf mask here and there where C > 2) and the
    loss's second argument."""
    x = rng.standard_normal(shape) * scale
    if x.ndim == 2 and x.shape[1] > 2:
        x[::5, 1] = -np.inf
    x = x.astype(dtype)
    return x, loss.make_target(rng, x, axis)
