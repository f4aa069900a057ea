"""Every public kernel against its peers, one pytest-benchmark group per case.

    python -m pytest benchmarks --benchmark-only                  # all (tens of minutes)
    python -m pytest benchmarks --benchmark-only -m "not large"   # 32x10 and 4096x1000
    python -m pytest benchmarks --benchmark-only -k "cross_entropy-float32"

Groups are ``{kernel}-{dtype}-{N}x{C}-t{threads}``; each holds fastloss and its peers
(a copy of the bytes the kernel must move, the NumPy reference, PyTorch forward+backward
when installed), all defined in ``fastloss._bench``, which ``python -m fastloss bench``
times interleaved. ``extra_info`` records the kernel, peer and bytes, so bandwidths can be
computed from a saved JSON. The timer is pytest-benchmark's default, ``time.perf_counter``
(wall clock: CPU time would add up across threads).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from fastloss import _bench

TORCH = _bench.load_torch()
ArraysGetter = Callable[[_bench.Case], _bench.Arrays]   # the bench_arrays fixture


def _params() -> list[object]:
    """(case, peer) for every case of the suite and each of its peers, in the order that
    lets consecutive tests share their inputs."""
    params = []
    for case in _bench.suite_cases():
        for peer in (_bench.FASTLOSS, *_bench.peer_names(case, TORCH is not None)):
            params.append(pytest.param(case, peer, id=f"{case.key}-{peer}",
                                       marks=[pytest.mark.large] if case.large else []))
    return params


def _rounds(case: _bench.Case, peer: str) -> tuple[int, int, int]:
    """(rounds, iterations, warm-up rounds): few rounds of the NumPy reference on large
    cases (seconds a call), and calls of 32x10 repeated within a round so that the timer's
    resolution does not matter."""
    iterations = max(1, math.ceil(20_000 / case.elements))
    if peer == "numpy":
        return (3, 1, 0) if case.large else (10, iterations, 1)
    return (10 if case.large else 30), iterations, 1


@pytest.mark.parametrize(("case", "peer"), _params())
def test_kernel(benchmark: BenchmarkFixture, bench_arrays: ArraysGetter, case: _bench.Case,
                peer: str) -> None:
    fn = _bench.make_peer(case, peer, bench_arrays(case), TORCH)
    benchmark.group = case.key
    benchmark.extra_info.update(kernel=case.kernel, peer=peer, dtype=case.dtype,
                                shape=list(case.shape), threads=case.threads,
                                bytes=_bench.traffic_bytes(case))
    rounds, iterations, warmup = _rounds(case, peer)
    with _bench.torch_threads(TORCH, case.threads):
        benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=warmup)
