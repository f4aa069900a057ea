"""Which instruction set's kernels run: resolved once, at import.

The kernels are built for each instruction set of ``_kernels/instruction_sets.py`` that
the compiler and platform allow (one extension module holds every build); the widest one
this CPU runs is chosen, unless the environment variable ``FASTLOSS_SIMD`` names another
(``baseline``, ``avx2``, ``avx512``, in any case). A name the CPU does not run is not an
import error: every kernel call raises its ``ValueError``, and ``fastloss info`` reports
it. Tests switch builds with :func:`use`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType

from fastloss._kernels import _kernels

__all__ = ["error", "isa", "isas", "kernels", "use"]


def isas() -> list[str]:
    """The builds this CPU runs, widest first (the last is the baseline)."""
    return list(_kernels.isas_this_cpu_runs())


def _from_environment() -> str | None:
    """Choose the build FASTLOSS_SIMD names (or the widest); the error message if it names
    none that this CPU runs."""
    given = os.environ.get("FASTLOSS_SIMD", "")
    forced = given.strip().lower()
    runs = isas()
    if forced and forced not in runs:
        return (f"FASTLOSS_SIMD={given!r} names no build of the kernels that this machine "
                f"runs; it runs {', '.join(runs)}")
    _kernels.use_isa(forced or runs[0])
    return None


_error = _from_environment()


def error() -> str | None:
    """Why no build runs (a bad ``FASTLOSS_SIMD``), or None."""
    return _error


def kernels() -> ModuleType:
    """The compiled kernels, set to the chosen build."""
    if _error is not None:
        raise ValueError(_error)
    return _kernels


def isa() -> str:
    """The instruction set whose kernels run (``ValueError`` where none does)."""
    return str(kernels().current_isa())


@contextlib.contextmanager
def use(name: str) -> Iterator[None]:
    """Run the kernels of build ``name`` inside the block (tests); ``ValueError`` unless
    this CPU runs it."""
    global _error
    previous, previous_error = _kernels.current_isa(), _error
    _kernels.use_isa(name)
    _error = None
    try:
        yield
    finally:
        if previous is not None:
            _kernels.use_isa(previous)
        _error = previous_error
