"""Benchmarks of fastloss against its peers, one pytest-benchmark group per case.

Run with ``PYTHONPATH=src pytest benchmarks/ --benchmark-only``. Each group holds every
peer of one (function, dtype, shape, threads) case, so pytest-benchmark's table compares
like with like; ``extra_info["bytes"]`` lets a bandwidth be computed from the JSON
(``benchmarks/ratios.py --json-in``).
"""

from __future__ import annotations

import pytest
from bench_common import (
    CE_PEERS,
    CE_SHAPES,
    DTYPES,
    OPTION_DTYPE,
    OPTION_SHAPE,
    OPTION_VARIANTS,
    SOFTMAX_DTYPE,
    SOFTMAX_FUNCS,
    SOFTMAX_PEERS,
    SOFTMAX_SHAPE,
    TORCH_VARIANTS,
    Callback,
    Inputs,
    InputsGetter,
    OptionInputs,
    cross_entropy_peer,
    group_name,
    load_torch,
    make_option_inputs,
    moved_bytes,
    option_peer,
    rounds_for,
    softmax_peer,
    warmup_rounds_for,
)
from pytest_benchmark.fixture import BenchmarkFixture

_NO_TORCH = pytest.mark.skipif(load_torch() is None, reason="torch is not installed")


def _peer_params(peers: tuple[str, ...]) -> list[object]:
    """Peers as pytest params, the PyTorch one skipped when torch is absent."""
    return [pytest.param(p, id=p, marks=_NO_TORCH if p == "torch" else ()) for p in peers]


def _run(benchmark: BenchmarkFixture, fn: Callback, func: str, peer: str, inputs: Inputs,
         n_threads: int) -> None:
    """Time fn in its case's group, recording what ratios.py needs to read the JSON."""
    shape = inputs.shape
    dtype = str(inputs.logits.dtype)
    benchmark.group = group_name(func, dtype, shape, n_threads)
    benchmark.extra_info.update(
        func=func, peer=peer, dtype=dtype, shape=list(shape), n_threads=n_threads,
        bytes=moved_bytes(func, inputs),
    )
    benchmark.pedantic(fn, rounds=rounds_for(peer, shape), iterations=1,
                       warmup_rounds=warmup_rounds_for(peer, shape))


@pytest.mark.parametrize("peer", _peer_params(CE_PEERS))
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy(benchmark: BenchmarkFixture, bench_inputs: InputsGetter, dtype: str,
                       shape: tuple[int, int], n_threads: int, peer: str) -> None:
    """Loss and gradient (mean reduction) of softmax cross-entropy with integer targets."""
    inputs = bench_inputs(dtype, shape)
    _run(benchmark, cross_entropy_peer(peer, inputs, n_threads), "cross_entropy", peer,
         inputs, n_threads)


@pytest.mark.parametrize("peer", _peer_params(SOFTMAX_PEERS))
@pytest.mark.parametrize("func", SOFTMAX_FUNCS)
def test_softmax_family(benchmark: BenchmarkFixture, bench_inputs: InputsGetter, func: str,
                        n_threads: int, peer: str) -> None:
    """softmax, log_softmax and logsumexp along the last axis, forward only."""
    inputs = bench_inputs(SOFTMAX_DTYPE, SOFTMAX_SHAPE)
    _run(benchmark, softmax_peer(func, peer, inputs, n_threads), func, peer, inputs,
         n_threads)


@pytest.fixture(scope="session")
def option_inputs(bench_inputs: InputsGetter) -> tuple[OptionInputs, Inputs]:
    """The option variants' inputs, and the plain case's (whose classes have no ignored
    rows) on the same logits."""
    return (make_option_inputs(OPTION_DTYPE, *OPTION_SHAPE),
            bench_inputs(OPTION_DTYPE, OPTION_SHAPE))


@pytest.mark.parametrize("peer", _peer_params(("fastloss", "numpy", "torch")))
@pytest.mark.parametrize("variant", OPTION_VARIANTS)
def test_cross_entropy_options(benchmark: BenchmarkFixture,
                               option_inputs: tuple[OptionInputs, Inputs], variant: str,
                               n_threads: int, peer: str) -> None:
    """Loss and gradient with options on; group per variant, so that the "plain" group
    is the yardstick for the cost of the options (same inputs, same peers)."""
    if peer == "torch" and variant not in TORCH_VARIANTS:
        pytest.skip("PyTorch has no sample_weight or z_loss")
    inputs, plain = option_inputs
    fn = option_peer(variant, peer, inputs, plain.target, n_threads)
    _run(benchmark, fn, f"cross_entropy[{variant}]", peer, plain, n_threads)
