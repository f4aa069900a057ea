"""Fixtures for the benchmarks: inputs made once per session, PyTorch threads per test.

The 1024x32000 arrays take a noticeable fraction of a second to draw and hundreds of MB,
so they are cached for the whole session and released at its end rather than rebuilt for
each of the peers that share them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bench_common import Inputs, InputsGetter, make_inputs, torch_threads


@pytest.fixture(scope="session")
def bench_inputs() -> Iterator[InputsGetter]:
    """A getter (dtype, (N, C)) -> Inputs that builds each case once per session."""
    cache: dict[tuple[str, int, int], Inputs] = {}

    def get(dtype: str, shape: tuple[int, int]) -> Inputs:
        key = (dtype, *shape)
        if key not in cache:
            cache[key] = make_inputs(dtype, *shape)
        return cache[key]

    yield get
    cache.clear()


@pytest.fixture(params=[1, 2], ids=lambda n: f"t{n}")
def n_threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Threads for fastloss's ``n_threads`` and, for the duration of the test, PyTorch."""
    with torch_threads(request.param):
        yield request.param
