"""Fixtures for the benchmarks: one case's inputs at a time, PyTorch's threads per test.

The cases and peers are defined once, in ``fastloss._bench`` (shared with ``python -m
fastloss bench``). Large cases (``-m large``: 1024x32000, 256x128256, 1M x 10, 4M x 2)
take hundreds of MB per array in float64, so only the inputs of the case being timed are
kept; the tests are ordered so that consecutive ones share them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from fastloss import _bench

ArraysGetter = Callable[[_bench.Case], _bench.Arrays]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"large: a case of at least {_bench.LARGE_ELEMENTS:,} elements "
                   "(deselect with -m 'not large' for a quick smoke run)")


@pytest.fixture(scope="session")
def bench_arrays() -> Iterator[ArraysGetter]:
    """A getter Case -> Arrays that keeps the inputs of the latest case only."""
    cache: dict[tuple[str, str, tuple[int, int]], _bench.Arrays] = {}

    def get(case: _bench.Case) -> _bench.Arrays:
        key = (_bench.KERNELS[case.kernel].inputs, case.dtype, case.shape)
        if key not in cache:
            cache.clear()   # free the previous case's arrays before making these
            cache[key] = _bench.make_arrays(*key)
        return cache[key]

    yield get
    cache.clear()
