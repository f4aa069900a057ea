"""Print binary_cross_entropy_with_logits' speed as ratios: to NumPy, PyTorch and a copy.

    PYTHONPATH=src python benchmarks/ratios_elementwise.py [--rounds N]

The peers of test_bench_elementwise.py (16384x1024 float32, loss and gradient, mean),
timed interleaved in one process as in ratios.py: every round runs each peer once in a
rotating order, the NumPy reference (seconds a call) in every 4th round only, and each
peer's median is taken, so that drift of a noisy machine hits all peers alike. Columns as
in ratios.py; the bandwidth counts the 3 arrays the kernel must move (logits and targets
read, gradient written), the copy moves 2 of them.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

from bench_common import (
    ELEMENTWISE_DTYPE,
    ELEMENTWISE_PEERS,
    ELEMENTWISE_SHAPE,
    THREADS,
    Callback,
    bce_with_logits_peer,
    group_name,
    load_torch,
    make_elementwise_inputs,
    torch_threads,
)
from ratios import Row, interleaved_medians, print_table

NUMPY_EVERY = 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=24, help="rounds per thread count")
    args = parser.parse_args(argv)
    torch = load_torch()
    print(f"Interleaved medians over {args.rounds} rounds; CPUs available: "
          f"{len(os.sched_getaffinity(0))}; torch: "
          f"{torch.__version__ if torch else 'not installed'}", flush=True)
    inputs = make_elementwise_inputs(ELEMENTWISE_DTYPE, *ELEMENTWISE_SHAPE)
    rows = []
    for n_threads in THREADS:
        peers: dict[str, tuple[Callback, int]] = {
            p: (bce_with_logits_peer(p, inputs, n_threads), NUMPY_EVERY if p == "numpy" else 1)
            for p in ELEMENTWISE_PEERS if p != "torch" or torch is not None
        }
        gc.collect()
        with torch_threads(n_threads):
            medians = interleaved_medians(peers, args.rounds)
        case = group_name("bce_with_logits", ELEMENTWISE_DTYPE, ELEMENTWISE_SHAPE, n_threads)
        rows.append(Row(case, inputs.moved_bytes, {p: medians.get(p) for p in
                                                   ("fastloss", "copy", "numpy", "torch")}))
        print(f"  timed {case}", file=sys.stderr, flush=True)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
