"""What a demanding user or an adversary may do to fastloss: absurd thread counts, fork
after use, calls from many Python threads at once, arrays past 2**31 elements.

Anything that could hang runs in a child process with a time limit, so that a hang fails
the test instead of the test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import fastloss
from fastloss import _threads, reference

needs_openmp = pytest.mark.skipif(not fastloss.openmp_enabled(),
                                  reason="serial build: fastloss always runs one thread")
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this OS")

#: Seconds a child may take before it counts as hung (each does under a second of work).
HANG = 120


def child_env(**variables: str) -> dict[str, str]:
    """The environment of a child Python that imports this very fastloss."""
    here = str(Path(fastloss.__file__).resolve().parents[1])
    return dict(os.environ, **variables, PYTHONPATH=os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p))


def run_child(args: list[str], **variables: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                              timeout=HANG, env=child_env(**variables))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the child hung (no exit within {HANG} s): {args}\n{exc.stderr}")


# --- thread counts ----------------------------------------------------------------------

@pytest.mark.parametrize("n_threads", [3, 50_000, 100_000, 2**31 - 1, -(2**31 - 1)])
def test_thread_counts_beyond_the_cpus_are_capped(n_threads):
    x = np.random.default_rng(0).standard_normal((4096, 8))
    expected = fastloss.softmax(x, n_threads=1)
    np.testing.assert_array_equal(fastloss.softmax(x, n_threads=n_threads), expected)
    loss = fastloss.cross_entropy(x, np.arange(4096) % 8, n_threads=n_threads)
    assert loss == fastloss.cross_entropy(x, np.arange(4096) % 8, n_threads=1)
    assert 1 <= _threads.effective_n_threads(n_threads, 1 << 20) <= _threads.usable_cpus()


@pytest.mark.parametrize("bad", [2**31, -(2**31), 2**64, 10**100])
def test_absurd_thread_counts_are_value_errors(bad):
    x = np.zeros((4096, 8))
    for call in (lambda: fastloss.softmax(x, n_threads=bad),
                 lambda: fastloss.logsumexp(x[:2], n_threads=bad),         # small input too
                 lambda: fastloss.binary_cross_entropy_with_logits(x, x, n_threads=bad)):
        with pytest.raises(ValueError, match="n_threads must be within"):
            call()


CALL = """
import numpy as np, fastloss
x = np.random.default_rng(0).standard_normal((4096, 8))
print(float(fastloss.softmax(x).sum()), float(fastloss.cross_entropy(x, np.arange(4096) % 8)))
"""


@pytest.mark.parametrize("value", ["100000", "50000", "2147483647"])
def test_omp_num_threads_far_beyond_the_cpus(value):
    # OpenMP's default thread count (n_threads=None) follows OMP_NUM_THREADS, capped.
    result = run_child(["-c", CALL], OMP_NUM_THREADS=value)
    assert result.returncode == 0, result.stderr
    total, loss = map(float, result.stdout.split())
    assert total == pytest.approx(4096)
    x = np.random.default_rng(0).standard_normal((4096, 8))
    assert loss == float(fastloss.cross_entropy(x, np.arange(4096) % 8))


# --- fork after use ---------------------------------------------------------------------

FORK_SCRIPT = textwrap.dedent("""
    import concurrent.futures, multiprocessing, os, sys
    import numpy as np
    import fastloss
    from fastloss import _threads
    from fastloss._kernels import _kernels as _openmp_helpers

    def work(seed):
        # A parallel-sized call on two threads (where allowed), its bits, and the threads
        # this process would run it with.
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((4096, 64)).astype(np.float32)
        y = rng.integers(0, 64, 4096)
        loss, grad = fastloss.cross_entropy(x, y, return_grad=True, n_threads=2)
        sm = fastloss.softmax(x, n_threads=-1)
        return (loss.tobytes() + grad.tobytes() + sm.tobytes(),
                _threads.effective_n_threads(2, 1 << 20))

    def in_a_fork(seed):
        # work(seed) in a child forked from this process (a fork of a fork in a fork
        # pool's worker), reported through a pipe.
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            bits, threads = work(seed)
            os.write(write, bytes([threads]) + bits)
            os._exit(0)
        os.close(write)
        chunks = []
        while chunk := os.read(read, 1 << 20):
            chunks.append(chunk)
        os.waitpid(pid, 0)
        data = b"".join(chunks)
        return data[1:], data[0]

    if __name__ == "__main__":
        mode = sys.argv[1]
        # Two threads even on a one-CPU machine, so that the parent starts a team (fork
        # children inherit the override; spawned ones start without it).
        _openmp_helpers._set_cpu_limit(2)
        expected = [work(seed)[0] for seed in range(3)]
        if mode == "fork":
            results = [in_a_fork(1)]
            seeds = [1]
        elif mode == "grandchild":
            with multiprocessing.get_context("fork").Pool(1) as pool:
                results = pool.map(in_a_fork, [2])
            seeds = [2]
        elif mode == "executor":
            context = multiprocessing.get_context("fork")
            with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
                results = list(pool.map(work, range(3)))
            seeds = [0, 1, 2]
        else:                                   # a Pool of the named start method
            with multiprocessing.get_context(mode).Pool(2) as pool:
                results = pool.map(work, range(3))
            seeds = [0, 1, 2]
        for seed, (bits, threads) in zip(seeds, results):
            assert bits == expected[seed], f"seed {seed}: other bits than in the parent"
        print(" ".join(str(threads) for _, threads in results))
""")


@needs_fork
@needs_openmp
@pytest.mark.parametrize("mode", ["fork", "grandchild", "executor"])
def test_a_fork_after_threads_computes_serially(tmp_path, mode):
    # GNU libgomp's workers do not survive fork(): a child's parallel region would wait
    # for them forever. fastloss's children compute on one thread, with the same bits.
    script = tmp_path / "forks.py"
    script.write_text(FORK_SCRIPT)
    result = run_child([str(script), mode])
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"1"}, result.stdout


@needs_openmp
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawned_workers_keep_their_threads(tmp_path, method):
    if method not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"no {method} start method on this OS")
    script = tmp_path / "forks.py"
    script.write_text(FORK_SCRIPT)
    result = run_child([str(script), method])
    assert result.returncode == 0, result.stderr
    expected = str(min(2, _threads.usable_cpus()))
    assert set(result.stdout.split()) == {expected}, result.stdout


@needs_fork
@needs_openmp
def test_a_fork_before_any_team_keeps_its_threads(tmp_path):
    # A process that has run nothing on several threads forks children that may.
    script = tmp_path / "early_fork.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, numpy as np, fastloss
        from fastloss import _threads
        from fastloss._kernels import _kernels as _openmp_helpers

        def threads(_):
            _openmp_helpers._set_cpu_limit(2)
            x = np.ones((4096, 64))
            fastloss.softmax(x, n_threads=2)
            return _threads.effective_n_threads(2, 1 << 20)

        if __name__ == "__main__":
            fastloss.softmax(np.ones((4096, 64)), n_threads=1)      # one thread only
            with multiprocessing.get_context("fork").Pool(1) as pool:
                print(*pool.map(threads, [0]))
    """))
    result = run_child([str(script)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2"]


# --- many Python threads ----------------------------------------------------------------

def _calls(rng):
    """Calls of every kind of kernel on inputs that take each of its paths."""
    x32 = rng.standard_normal((512, 40)).astype(np.float32)
    x64 = rng.standard_normal((64, 3000))
    small = rng.standard_normal((2000, 5)).astype(np.float32)
    soft = reference.softmax(rng.standard_normal((512, 40))).astype(np.float32)
    y = rng.integers(0, 40, 512)
    probs = rng.random((300, 70))
    return [
        lambda t: fastloss.cross_entropy(x32, y, return_grad=True, n_threads=t),
        lambda t: fastloss.cross_entropy(x64, np.arange(64) * 7, label_smoothing=0.1,
                                         return_grad=True, return_lse=True, n_threads=t),
        lambda t: fastloss.cross_entropy(small, np.arange(2000) % 5, reduction="none",
                                         return_grad=True, n_threads=t),
        lambda t: fastloss.cross_entropy(x32, soft, weight=np.linspace(0.5, 2, 40),
                                         return_grad=True, n_threads=t),
        lambda t: fastloss.kl_div_with_logits(x32, x32[::-1].copy(), teacher_kind="logits",
                                              temperature=2.0, return_grad=True,
                                              n_threads=t),
        lambda t: fastloss.softmax(x64, n_threads=t),
        lambda t: fastloss.log_softmax(small, n_threads=t),
        lambda t: fastloss.logsumexp(x32, n_threads=t),
        lambda t: fastloss.entropy_from_logits(x32, reduction="sum", return_grad=True,
                                               n_threads=t),
        lambda t: fastloss.binary_cross_entropy(probs, probs[::-1].copy(), return_grad=True,
                                                n_threads=t),
        lambda t: fastloss.binary_cross_entropy_with_logits(x64, (x64 > 0) * 1.0,
                                                            return_grad=True, n_threads=t),
    ]


def _bits(result) -> bytes:
    parts = result if isinstance(result, tuple) else (result,)
    return b"".join(np.asarray(part).tobytes() for part in parts)


@pytest.mark.parametrize("n_threads", [1, 2], ids=["1thread", "2threads"])
def test_calls_from_eight_python_threads_give_the_serial_bits(n_threads):
    calls = _calls(np.random.default_rng(5))
    expected = [_bits(call(1)) for call in calls]
    failures: list[str] = []
    start = threading.Barrier(8)

    def hammer(worker: int) -> None:
        start.wait()
        for round_ in range(30):
            for k, call in enumerate(calls[worker % 3:] + calls[:worker % 3]):
                index = (k + worker % 3) % len(calls)
                if _bits(call(n_threads)) != expected[index]:
                    failures.append(f"worker {worker}, round {round_}, call {index}")

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HANG)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    assert not failures, failures[:5]


# --- arrays past 2**31 elements ---------------------------------------------------------

def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


LARGE_BYTES = 9 << 30     # the float32 array (8 GiB) and a margin


@pytest.mark.large_memory
def test_more_than_2_31_elements():
    # Row and element offsets past 2**31 (int32 overflow) in the row kernels, in place.
    if _available_bytes() < LARGE_BYTES:
        message = f"needs {LARGE_BYTES >> 30} GiB of free memory"
        if os.environ.get("FASTLOSS_TEST_LARGE", "0") not in ("", "0"):
            pytest.fail(message + " (FASTLOSS_TEST_LARGE is set)")
        pytest.skip(message)
    n_classes = 1024
    n_rows = (2**31 + n_classes - 1) // n_classes + 7        # > 2**31 elements
    base = np.linspace(-3.0, 3.0, n_classes, dtype=np.float32)
    x = np.empty((n_rows, n_classes), dtype=np.float32)
    x[:] = base
    # Each row's last logit by its index mod 7, so that a row read at a wrong offset
    # gives another value.
    bump = (np.arange(n_rows) % 7).astype(np.float32)
    x[:, -1] = bump
    distinct = np.repeat(base[None], 7, axis=0)
    distinct[:, -1] = np.arange(7)
    lse7 = reference.logsumexp(distinct.astype(np.float64))
    lse = fastloss.logsumexp(x)
    np.testing.assert_allclose(lse, lse7[np.arange(n_rows) % 7], rtol=1e-6)
    target = (np.arange(n_rows) * 13) % n_classes
    expected = np.mean(lse7[np.arange(n_rows) % 7]
                       - distinct[np.arange(n_rows) % 7, target].astype(np.float64))
    loss = fastloss.cross_entropy(x, target, grad_out=x)[0]    # the gradient over x
    assert loss == pytest.approx(expected, rel=1e-6)
    for row in (0, n_rows // 2, n_rows - 1):                    # rows past 2**31 / C
        k = row % 7
        want = reference.softmax(distinct[k].astype(np.float64)) / n_rows
        want[target[row]] -= 1.0 / n_rows
        np.testing.assert_allclose(x[row], want, rtol=1e-5, atol=1e-12)


# --- unaligned arrays -------------------------------------------------------------------

def unaligned(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``array`` at an odd byte offset (``flags.aligned`` False)."""
    buffer = np.zeros(array.nbytes + 1, dtype=np.uint8)
    view = buffer[1:].view(array.dtype).reshape(array.shape)
    view[...] = array
    assert not view.flags.aligned and view.flags.c_contiguous
    return view


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_classes", [3, 40, 3000])
def test_unaligned_arrays_give_the_aligned_results(dtype, n_classes):
    # NumPy copies unaligned operands before its loops; so does fastloss (its C loads of
    # a typed element are defined only at its alignment: UBSan's "misaligned load").
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, n_classes)).astype(dtype)
    y = rng.integers(0, n_classes, 64)
    p = reference.softmax(rng.standard_normal((64, n_classes))).astype(dtype)
    calls = {
        "cross_entropy": lambda x, y, p, out: fastloss.cross_entropy(x, y, grad_out=out),
        "cross_entropy_soft": lambda x, y, p, out: fastloss.cross_entropy(
            x, p, label_smoothing=0.1, grad_out=out),
        "kl_div_with_logits": lambda x, y, p, out: fastloss.kl_div_with_logits(
            x, p, grad_out=out),
        "entropy_from_logits": lambda x, y, p, out: fastloss.entropy_from_logits(
            x, grad_out=out),
        "softmax": lambda x, y, p, out: fastloss.softmax(x, out=out),
        "log_softmax": lambda x, y, p, out: fastloss.log_softmax(x, out=out),
        "logsumexp": lambda x, y, p, out: fastloss.logsumexp(x),
        "entropy": lambda x, y, p, out: fastloss.entropy(p),
        "bce_with_logits": lambda x, y, p, out: fastloss.binary_cross_entropy_with_logits(
            x, p, weight=p[0], grad_out=out),
        "bce": lambda x, y, p, out: fastloss.binary_cross_entropy(p, p[::-1].copy(),
                                                                  grad_out=out),
    }
    for name, call in calls.items():
        expected = _bits(call(x, y, p, np.empty_like(x)))
        got = call(unaligned(x), unaligned(y), unaligned(p), unaligned(np.empty_like(x)))
        assert _bits(got) == expected, name
