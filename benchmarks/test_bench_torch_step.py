"""One training step of a small classifier with fastloss.torch's loss and with PyTorch's,
one pytest-benchmark group per (loss, dtype, shape, threads).

A step is what a training loop runs: zero the gradients, the model's forward pass, the
loss, the backward pass, an SGD update. The model is an MLP (D -> H -> C, ReLU) whose
last layer has C outputs, so the loss over N x C logits is a large part of the step, as
in a classifier with many classes; the two peers share everything but the loss.

Run with ``PYTHONPATH=src pytest benchmarks/test_bench_torch_step.py --benchmark-only``.
Skipped where PyTorch is not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from fastloss._bench import SEED

torch = pytest.importorskip("torch")

import fastloss.torch as flt  # noqa: E402

F = torch.nn.functional

N, D, H, C = 1024, 32, 32, 4096
TEMPERATURE = 2.0
LOSSES = ("cross_entropy", "binary_cross_entropy_with_logits", "kl_div_with_logits")
PEERS = ("fastloss", "torch")
DTYPES = ("float32", "float64")
ROUNDS, WARMUP_ROUNDS = 20, 2


def _distill_torch(student: Any, teacher_logits: Any) -> Any:
    """PyTorch's idiom for kl_div_with_logits(teacher_kind="logits")."""
    p = F.softmax(teacher_logits / TEMPERATURE, 1)
    return F.kl_div(F.log_softmax(student / TEMPERATURE, 1), p,
                    reduction="batchmean") * TEMPERATURE**2


def _distill_fastloss(student: Any, teacher_logits: Any) -> Any:
    return flt.kl_div_with_logits(student, teacher_logits, teacher_kind="logits",
                                  temperature=TEMPERATURE)


# loss -> peer -> the loss function of (logits, target)
LOSS_FUNCTIONS: dict[str, dict[str, Callable[[Any, Any], Any]]] = {
    "cross_entropy": {"fastloss": flt.CrossEntropyLoss(), "torch": torch.nn.CrossEntropyLoss()},
    "binary_cross_entropy_with_logits": {"fastloss": flt.BCEWithLogitsLoss(),
                                         "torch": torch.nn.BCEWithLogitsLoss()},
    "kl_div_with_logits": {"fastloss": _distill_fastloss, "torch": _distill_torch},
}


def _targets(loss: str, generator: Any, dtype: Any) -> Any:
    """Class indices, 0/1 labels per class, or a teacher's logits, from a fixed seed."""
    if loss == "cross_entropy":
        return torch.randint(0, C, (N,), generator=generator)
    if loss == "binary_cross_entropy_with_logits":
        return (torch.rand(N, C, generator=generator) < 0.05).to(dtype)
    return (torch.randn(N, C, generator=generator) * 3).to(dtype)


def make_step(loss: str, peer: str, dtype_name: str) -> Callable[[], None]:
    """A training step on fixed data; the model and the data depend on the seed only, so
    both peers start from the same weights."""
    dtype = getattr(torch, dtype_name)
    generator = torch.Generator().manual_seed(SEED)
    inputs = torch.randn(N, D, generator=generator).to(dtype)
    targets = _targets(loss, generator, dtype)
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.ReLU(),
                                torch.nn.Linear(H, C)).to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = LOSS_FUNCTIONS[loss][peer]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(inputs), targets).backward()
        optimizer.step()

    return step


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n_threads", (1, 2))
def test_train_step(benchmark: BenchmarkFixture, loss: str, dtype: str, n_threads: int,
                    peer: str) -> None:
    """One SGD step of the MLP with the loss of ``peer``, on n_threads threads (PyTorch's
    and, through torch.get_num_threads(), fastloss's)."""
    benchmark.group = f"train-step-{loss}-{dtype}-{N}x{C}-t{n_threads}"
    benchmark.extra_info.update(loss=loss, peer=peer, dtype=dtype, shape=[N, C],
                                hidden=[D, H], n_threads=n_threads)
    benchmark.pedantic(make_step(loss, peer, dtype), rounds=ROUNDS, iterations=1,
                       warmup_rounds=WARMUP_ROUNDS)
