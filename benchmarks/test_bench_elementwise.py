"""Benchmarks of the elementwise losses against their peers, one pytest-benchmark group
per case: binary_cross_entropy_with_logits on 16384x1024 float32 (16M elements), loss and
gradient with the mean reduction, on 1 and 2 threads.

Run with ``PYTHONPATH=src pytest benchmarks/test_bench_elementwise.py --benchmark-only``;
``benchmarks/ratios_elementwise.py`` times the same callables interleaved.
"""

from __future__ import annotations

import pytest
from bench_common import (
    ELEMENTWISE_DTYPE,
    ELEMENTWISE_PEERS,
    ELEMENTWISE_SHAPE,
    ElementwiseInputs,
    bce_with_logits_peer,
    group_name,
    load_torch,
    make_elementwise_inputs,
    rounds_for,
    warmup_rounds_for,
)
from pytest_benchmark.fixture import BenchmarkFixture

_NO_TORCH = pytest.mark.skipif(load_torch() is None, reason="torch is not installed")
FUNC = "binary_cross_entropy_with_logits"


@pytest.fixture(scope="module")
def elementwise_inputs() -> ElementwiseInputs:
    """The 16M-element case, built once for every peer and thread count."""
    return make_elementwise_inputs(ELEMENTWISE_DTYPE, *ELEMENTWISE_SHAPE)


@pytest.mark.parametrize("peer", [pytest.param(p, id=p, marks=_NO_TORCH if p == "torch"
                                               else ()) for p in ELEMENTWISE_PEERS])
def test_bce_with_logits(benchmark: BenchmarkFixture, elementwise_inputs: ElementwiseInputs,
                         n_threads: int, peer: str) -> None:
    """Loss and gradient (mean) of binary cross-entropy from logits with 0/1 labels."""
    inputs = elementwise_inputs
    shape = inputs.shape
    benchmark.group = group_name(FUNC, ELEMENTWISE_DTYPE, shape, n_threads)
    benchmark.extra_info.update(
        func=FUNC, peer=peer, dtype=ELEMENTWISE_DTYPE, shape=list(shape),
        n_threads=n_threads, bytes=inputs.moved_bytes,
    )
    benchmark.pedantic(bce_with_logits_peer(peer, inputs, n_threads),
                       rounds=rounds_for(peer, shape), iterations=1,
                       warmup_rounds=warmup_rounds_for(peer, shape))
