"""How many OpenMP threads a call runs with: the one thread policy of every kernel.

``n_threads`` is resolved as scikit-learn resolves it (None: OpenMP's maximum, which
follows ``OMP_NUM_THREADS`` and threadpoolctl; n > 0: n; n < 0: all the CPUs but
``-n - 1``), then

- capped at the CPUs the process may run on (its affinity mask): threads beyond them only
  take turns on the same cores, and an absurd count (``OMP_NUM_THREADS=100000``) would
  have the OpenMP runtime fail to create them. PyTorch caps ``OMP_NUM_THREADS`` the same
  way;
- 1 for inputs under :data:`PARALLEL_MIN_ELEMENTS`, where waking a second thread costs
  more than it saves;
- 1 in a process forked after fastloss ran a team of threads: GNU libgomp's workers do not
  survive ``fork()``, and a parallel region in the child would wait for them forever. Such
  a child (a ``multiprocessing`` fork pool's worker, say) computes serially, and so do its
  own children; processes started by "spawn" or "forkserver" keep their threads.

A reduced loss is the same bits for any thread count, so none of this changes a result.
"""

from __future__ import annotations

import numpy as np

from fastloss._kernels import _kernels

__all__ = ["MAX_REQUEST", "PARALLEL_MIN_ELEMENTS", "effective_n_threads", "usable_cpus"]

#: Below this many scores (N x C) a call runs on one thread. benchmarks/threshold.py on
#: the 2-core project machine: two threads lose below ~1k elements and win from ~1.3k;
#: the margin covers waking a worker that went to sleep (tens of microseconds to
#: milliseconds, by machine).
PARALLEL_MIN_ELEMENTS = 1 << 14

#: The largest ``abs(n_threads)`` accepted: a C int. A larger count is a mistake, not a
#: request to cap.
MAX_REQUEST = 2**31 - 1


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return _kernels.num_procs() if _kernels.openmp_enabled() else 1


def check_n_threads(n_threads: object) -> int | None:
    """``n_threads`` as an int (or None), or the ``TypeError`` / ``ValueError`` that names
    the argument."""
    if n_threads is None:
        return None
    if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, (int, np.integer)):
        raise TypeError(f"n_threads must be an int or None, got {type(n_threads).__name__}")
    count = int(n_threads)
    if count == 0:
        raise ValueError("n_threads must be a non-zero int (None: OpenMP's default; "
                         "-1: all CPUs), got 0")
    if not -MAX_REQUEST <= count <= MAX_REQUEST:
        raise ValueError(f"n_threads must be within [-{MAX_REQUEST}, {MAX_REQUEST}] "
                         f"(counts above the CPUs are capped at them), got {count}")
    return count


def effective_n_threads(n_threads: object, work: int) -> int:
    """The threads a call over ``work`` elements runs with (see the module's docstring)."""
    count = check_n_threads(n_threads)
    if work < PARALLEL_MIN_ELEMENTS:
        return 1
    return _kernels.resolve_threads(
        _kernels.max_threads() if count is None else count)
