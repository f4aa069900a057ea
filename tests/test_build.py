"""The build itself: OpenMP, the info command, and that kernels release the GIL."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import fastloss
from fastloss._threads import usable_cpus


def _set(name: str) -> bool:
    return os.environ.get(name, "0").strip() not in ("", "0")


@pytest.mark.skipif(not _set("FASTLOSS_REQUIRE_OPENMP"),
                    reason="CI-only: FASTLOSS_REQUIRE_OPENMP=1 (CI's setting) says a serial "
                           "build is a failure")
def test_openmp_required_when_ci_says_so():
    assert fastloss.openmp_enabled()
    assert fastloss.build_info()["openmp_version"] > 0


@pytest.mark.skipif(not _set("FASTLOSS_TEST_INSTALLED"),
                    reason="CI-only: FASTLOSS_TEST_INSTALLED=1 (CI's wheel step) says "
                           "fastloss must come from an installed wheel")
def test_installed_package_when_ci_says_so():
    # CI's wheel step runs these tests against the wheel installed in a fresh virtual
    # environment, from a folder outside the checkout: fastloss must come from there.
    here = Path(fastloss.__file__).resolve()
    paths = sysconfig.get_paths()
    site = {Path(paths[key]).resolve() for key in ("purelib", "platlib")}
    assert any(folder in here.parents for folder in site), (here, site)
    assert Path(__file__).resolve().parents[1] not in here.parents, here


def test_build_info_is_consistent():
    info = fastloss.build_info()
    assert info["openmp"] is fastloss.openmp_enabled()
    assert ("-fopenmp" in info["cflags"]) is info["openmp"] or sys.platform != "linux"
    assert "-ffast-math" not in info["cflags"]
    assert "-march=native" not in info["cflags"]
    assert info["simd"]


def test_info_command():
    result = subprocess.run([sys.executable, "-m", "fastloss", "info"], capture_output=True,
                            text=True, check=True)
    out = result.stdout
    assert f"fastloss {fastloss.__version__}" in out
    assert "openmp" in out and "threads" in out and "simd" in out and "cflags" in out


def test_info_thread_count_follows_omp_num_threads():
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-m", "fastloss", "info"], capture_output=True,
                         text=True, check=True, env=env).stdout
    # OMP_NUM_THREADS, capped at the CPUs this process may use.
    expected = min(3, usable_cpus()) if fastloss.openmp_enabled() else 1
    assert f"threads  {expected} " in out


def test_kernels_release_the_gil():
    # A Python thread keeps counting while a long kernel runs in the main thread.
    logits = np.random.default_rng(0).standard_normal((2000, 4000)).astype(np.float32)
    target = np.zeros(2000, dtype=np.intp)
    ticks = 0
    stop = threading.Event()

    def count():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.0005)

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(0.01)
    before = ticks
    start = time.perf_counter()
    for _ in range(5):
        fastloss.cross_entropy(logits, target, return_grad=True, n_threads=1)
    elapsed = time.perf_counter() - start
    during = ticks - before
    stop.set()
    counter.join()
    # Holding the GIL would leave the counter at ~1 tick per switch interval (5 ms).
    assert during > elapsed / 0.005 * 2, (during, elapsed)


def test_info_reports_a_bad_simd_name_in_one_line():
    env = dict(os.environ, FASTLOSS_SIMD="sse9")
    done = subprocess.run([sys.executable, "-m", "fastloss", "info"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "FASTLOSS_SIMD='sse9' names no build" in done.stderr
    assert "simd     error: FASTLOSS_SIMD='sse9'" in done.stdout
    upper = subprocess.run([sys.executable, "-m", "fastloss", "info"], capture_output=True,
                           text=True, env=dict(os.environ, FASTLOSS_SIMD="BASELINE"))
    assert upper.returncode == 0 and "simd     baseline kernels run" in upper.stdout
