"""fastloss's threads follow threadpoolctl and OMP_NUM_THREADS, and threadpoolctl sees the
OpenMP runtime that the kernels link.

The thread count checked is fastloss's own resolution of ``n_threads=None``
(``_threads.effective_n_threads`` for a parallel-sized input, and the ``threads`` line of
``fastloss info``), which is capped at the CPUs the process may use. A serial build always
runs one thread, so those checks are skipped.
"""

from __future__ import annotations

import ctypes
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastloss
from fastloss import _cli
from fastloss._kernels import _kernels as _openmp_helpers
from fastloss._threads import PARALLEL_MIN_ELEMENTS, effective_n_threads, usable_cpus

threadpoolctl = pytest.importorskip("threadpoolctl")

needs_openmp = pytest.mark.skipif(not fastloss.openmp_enabled(),
                                  reason="serial build: fastloss always runs one thread")


def resolved_threads() -> int:
    """What fastloss runs a parallel-sized call with for ``n_threads=None``."""
    return effective_n_threads(None, PARALLEL_MIN_ELEMENTS)


def info_threads() -> int:
    """The thread count that ``fastloss info`` reports."""
    line = next(line for line in _cli.info().splitlines() if line.startswith("threads "))
    return int(line.split()[1])


def openmp_runtimes() -> list[dict]:
    return [m for m in threadpoolctl.threadpool_info() if m["user_api"] == "openmp"]


def child_env(**variables: str) -> dict[str, str]:
    """The environment for a child Python that imports this very fastloss."""
    here = str(Path(fastloss.__file__).resolve().parents[1])
    return dict(os.environ, **variables, PYTHONPATH=os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p))


@needs_openmp
@pytest.mark.parametrize("limit", [1, 3], ids=["limit1", "limit3"])
@pytest.mark.parametrize("user_api", [None, "openmp"], ids=["all", "openmp"])
def test_threadpool_limits_limit_fastloss(limit, user_api):
    before = resolved_threads()
    with threadpoolctl.threadpool_limits(limits=limit, user_api=user_api):
        assert _openmp_helpers.max_threads() == limit
        assert resolved_threads() == info_threads() == min(limit, usable_cpus())
        # An explicit count still wins over the limit, as in scikit-learn.
        assert effective_n_threads(2, PARALLEL_MIN_ELEMENTS) == min(2, usable_cpus())
    assert resolved_threads() == before


@needs_openmp
def test_threadpool_limits_apply_to_a_call():
    # A call inside the limit gives the same bits as an explicit n_threads=1.
    logits = np.random.default_rng(0).standard_normal((512, 300)).astype(np.float32)
    target = np.arange(512) % 300
    with threadpoolctl.threadpool_limits(limits=1):
        limited = fastloss.cross_entropy(logits, target, return_grad=True)
    serial = fastloss.cross_entropy(logits, target, return_grad=True, n_threads=1)
    assert limited[0] == serial[0]
    np.testing.assert_array_equal(limited[1], serial[1])


CHILD = """
import json, threadpoolctl
from fastloss import _cli
from fastloss._threads import PARALLEL_MIN_ELEMENTS, effective_n_threads, usable_cpus
line = next(l for l in _cli.info().splitlines() if l.startswith("threads "))
print(json.dumps({
    "resolved": effective_n_threads(None, PARALLEL_MIN_ELEMENTS),
    "cpus": usable_cpus(),
    "info": int(line.split()[1]),
    "openmp": [m["num_threads"] for m in threadpoolctl.threadpool_info()
               if m["user_api"] == "openmp"],
}))
"""


@needs_openmp
@pytest.mark.parametrize("value", ["1", "3"])
def test_omp_num_threads_limits_fastloss(value):
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True, env=child_env(OMP_NUM_THREADS=value)).stdout
    seen = json.loads(out)
    assert seen["resolved"] == seen["info"] == min(int(value), seen["cpus"])
    assert seen["openmp"] and set(seen["openmp"]) == {int(value)}


@needs_openmp
def test_threadpool_info_lists_an_openmp_runtime():
    runtimes = openmp_runtimes()
    assert runtimes, threadpoolctl.threadpool_info()
    assert all(m["num_threads"] >= 1 for m in runtimes)


# --- which OpenMP runtime (Linux: dladdr, ldd and /proc) ---------------------------

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="dladdr, ldd and /proc/self/maps: Linux only")

OPENMP_NAMES = ("libgomp", "libomp", "libiomp")


def runtime_of(extension: str) -> str:
    """Real path of the library that serves the extension's ``omp_get_max_threads`` in
    this process: the one it linked, or another of the same soname loaded before it (as
    PyTorch's bundled libgomp, when torch was imported first)."""

    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]

    # The extension is already loaded; dlsym searches it and then its dependencies.
    lib = ctypes.CDLL(extension, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    address = ctypes.cast(lib.omp_get_max_threads, ctypes.c_void_p)
    info = DlInfo()
    assert ctypes.CDLL(None).dladdr(address, ctypes.byref(info)), extension
    return os.path.realpath(info.dli_fname.decode())


def mapped_files() -> set[str]:
    """Real paths of the files mapped into this process."""
    with open("/proc/self/maps") as maps:
        fields = (line.split(None, 5) for line in maps)
        return {os.path.realpath(f[5].strip()) for f in fields if len(f) == 6}


def ldd_openmp(extension: str) -> set[str]:
    """Real paths of the OpenMP runtimes that ``ldd`` resolves for the extension (it
    follows the RPATH that auditwheel sets)."""
    out = subprocess.run(["ldd", extension], capture_output=True, text=True,
                         check=True).stdout
    found = set()
    for line in out.splitlines():
        name, _, where = line.strip().partition(" => ")
        path = where.split(" (")[0].strip()
        if name.startswith(OPENMP_NAMES) and os.path.isabs(path):
            found.add(os.path.realpath(path))
    return found


@needs_openmp
@linux_only
def test_threadpool_info_lists_the_runtime_fastloss_uses():
    # In this process (where PyTorch, if imported first, may have brought its own libgomp
    # of the same soname, which the loader then shares).
    runtime = runtime_of(_openmp_helpers.__file__)
    assert os.path.basename(runtime).startswith(OPENMP_NAMES), runtime
    assert runtime in mapped_files()
    listed = {os.path.realpath(m["filepath"]) for m in openmp_runtimes()}
    assert runtime in listed, (runtime, listed)


CHILD_RUNTIME = f"""
import ctypes, json, os, sys
import threadpoolctl
from fastloss._kernels import _kernels as _openmp_helpers
{inspect.getsource(runtime_of)}
print(json.dumps({{
    "extension": _openmp_helpers.__file__,
    "runtime": runtime_of(_openmp_helpers.__file__),
    "listed": [os.path.realpath(m["filepath"]) for m in threadpoolctl.threadpool_info()
               if m["user_api"] == "openmp"],
    "torch": "torch" in sys.modules,
}}))
"""


@needs_openmp
@linux_only
@pytest.mark.skipif(shutil.which("ldd") is None, reason="no ldd")
def test_threadpool_info_lists_the_libgomp_fastloss_links():
    # In a fresh process that imports nothing but fastloss, threadpoolctl lists exactly the
    # runtime that ldd resolves for the extension: the system's libgomp for a build in
    # place, the copy in fastloss.libs/ for a wheel that auditwheel repaired.
    out = subprocess.run([sys.executable, "-c", CHILD_RUNTIME], capture_output=True,
                         text=True, check=True, env=child_env()).stdout
    seen = json.loads(out)
    assert not seen["torch"]
    linked = ldd_openmp(seen["extension"])
    assert linked == {seen["runtime"]}, (linked, seen)
    assert seen["listed"] == [seen["runtime"]], seen
