"""Where a second thread starts to pay: fused cross-entropy on 1 vs 2 threads by size.

    PYTHONPATH=src python benchmarks/threshold.py

Calls the kernel that runs on this CPU directly (bypassing the serial cut-off in
fastloss._threads) and prints, for each N x C, the interleaved median time of loss and
gradient on 1 and 2 threads and their ratio. The smallest size where 2 threads win
clearly is the PARALLEL_MIN_ELEMENTS of _threads.py.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from fastloss._dispatch import kernels as fastloss_kernels

SIZES = [(32, 10), (64, 10), (128, 10), (256, 10), (1024, 10), (512, 64), (4096, 10),
         (1024, 100), (4096, 32), (8192, 32), (4096, 100), (16384, 32), (32, 1000),
         (64, 1000), (16, 32000)]
ROUNDS = 400


def main() -> None:
    rng = np.random.default_rng(0)
    kernels = fastloss_kernels()
    print(f"{'N x C':>12} {'elements':>9} {'1 thread us':>12} {'2 threads us':>13} {'t1/t2':>6}")
    for n, c in SIZES:
        logits = rng.standard_normal((n, c)).astype(np.float32)
        target = rng.integers(0, c, n).astype(np.intp)
        grad = np.empty_like(logits)
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(ROUNDS):
            for threads in (1, 2):
                start = time.perf_counter()
                kernels.cross_entropy_classes(logits, target, grad, True, -100, threads)
                times[threads].append(time.perf_counter() - start)
        t1, t2 = (statistics.median(times[k]) * 1e6 for k in (1, 2))
        print(f"{n:>6} x {c:<4} {n * c:>9} {t1:>12.1f} {t2:>13.1f} {t1 / t2:>6.2f}")


if __name__ == "__main__":
    main()
