"""Benchmarks of the distillation loss kl_div_with_logits (loss and gradient) against
the NumPy reference and PyTorch's idiom F.kl_div(log_softmax(s / T), p) * T**2."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from bench_common import group_name, load_torch, make_inputs, rounds_for, warmup_rounds_for
from pytest_benchmark.fixture import BenchmarkFixture

import fastloss
from fastloss import reference

SHAPE = (4096, 1000)
TEMPERATURE = 2.0
KINDS = ("probs", "logits")
_NO_TORCH = pytest.mark.skipif(load_torch() is None, reason="torch is not installed")


def distill_peer(peer: str, kind: str, student: np.ndarray, teacher_logits: np.ndarray,
                 grad: np.ndarray, n_threads: int) -> Callable[[], object]:
    """Loss and gradient of KL(teacher || softmax(student / T)) * T**2, batchmean."""
    teacher = (teacher_logits if kind == "logits"
               else reference.softmax(teacher_logits / TEMPERATURE).astype(student.dtype))
    if peer == "fastloss":
        return lambda: fastloss.kl_div_with_logits(
            student, teacher, teacher_kind=kind, temperature=TEMPERATURE, grad_out=grad,
            n_threads=n_threads)
    if peer == "numpy":
        return lambda: reference.kl_div_with_logits(
            student, teacher, teacher_kind=kind, temperature=TEMPERATURE, return_grad=True)
    torch = load_torch()
    if torch is None:
        raise RuntimeError("torch is not installed")
    functional = torch.nn.functional
    x = torch.from_numpy(student).requires_grad_(True)
    t = torch.from_numpy(teacher)

    def run() -> None:
        x.grad = None
        p = functional.softmax(t / TEMPERATURE, 1) if kind == "logits" else t
        loss = functional.kl_div(functional.log_softmax(x / TEMPERATURE, 1), p,
                                 reduction="batchmean") * TEMPERATURE**2
        loss.backward()

    return run


@pytest.mark.parametrize("peer", ["fastloss", "numpy",
                                  pytest.param("torch", marks=_NO_TORCH)])
@pytest.mark.parametrize("kind", KINDS)
def test_kl_div_with_logits(benchmark: BenchmarkFixture, kind: str, n_threads: int,
                            peer: str) -> None:
    inputs = make_inputs("float32", *SHAPE)
    teacher_logits = make_inputs("float32", SHAPE[0] + 1, SHAPE[1]).logits[1:]
    fn = distill_peer(peer, kind, inputs.logits, np.ascontiguousarray(teacher_logits),
                      inputs.scratch, n_threads)
    benchmark.group = group_name(f"kl_div_with_logits[{kind}]", "float32", SHAPE, n_threads)
    benchmark.extra_info.update(peer=peer, bytes=3 * inputs.logits.nbytes)
    benchmark.pedantic(fn, rounds=rounds_for(peer, SHAPE), iterations=1,
                       warmup_rounds=warmup_rounds_for(peer, SHAPE))
