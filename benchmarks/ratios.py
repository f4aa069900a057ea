"""Print fastloss's cross-entropy speed as ratios: to a plain copy, to NumPy, to PyTorch.

    PYTHONPATH=src python benchmarks/ratios.py                  # time here, interleaved
    PYTHONPATH=src python benchmarks/ratios.py --json-in FILE   # from --benchmark-json

Why interleaved: on a shared, noisy machine the speed available drifts over seconds, so
peers timed one after the other (as pytest-benchmark does) can see different machines.
Here every round runs each peer once, in a rotating order, and each peer's median over the
rounds is taken, so drift hits all peers alike and largely cancels in the ratios.

Columns: the fused loss+gradient time with a preallocated ``grad_out``; the time of
``np.copyto`` of the logits (the N*C read + N*C write the kernel must do at least); the
kernel's bandwidth 2*nbytes/time; copy_time/fastloss_time (1.0 would be copy speed);
and numpy_time/fastloss_time, torch_time/fastloss_time (above 1: fastloss is faster).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bench_common import (
    CE_SHAPES,
    DTYPES,
    OPTION_DTYPE,
    OPTION_SHAPE,
    OPTION_VARIANTS,
    THREADS,
    TORCH_VARIANTS,
    Callback,
    cross_entropy_peer,
    group_name,
    load_torch,
    make_inputs,
    make_option_inputs,
    moved_bytes,
    option_peer,
    torch_threads,
)

# Rounds per case in the interleaved run, and how often the NumPy reference joins a round:
# on 1024x32000 one reference call takes seconds (several N x C float64 temporaries), so
# it runs in every 4th round only, which keeps the whole script well under two minutes.
ROUNDS = {"small": 30, "large": 12}
NUMPY_EVERY = {"small": 2, "large": 4}
PEERS = ("fastloss", "copy", "numpy", "torch")


@dataclass
class Row:
    """One case's medians in seconds (None: peer not timed) and the bytes it must move."""

    case: str
    nbytes: int
    times: dict[str, float | None]


def interleaved_medians(peers: dict[str, tuple[Callback, int]], rounds: int) -> dict[str, float]:
    """Median time of each peer, the peers run round-robin with a rotating start.

    ``peers`` maps a name to (callable, every): the peer runs in rounds r with
    r % every == 0. One untimed call of each peer (but a 1-in-N one) comes first.
    """
    names = list(peers)
    for fn, every in peers.values():
        if every == 1:
            fn()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        start = r % len(names)
        for name in names[start:] + names[:start]:
            fn, every = peers[name]
            if r % every:
                continue
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in samples.items() if ts}


def measure(scale: float) -> list[Row]:
    """Time every cross-entropy case of the suite here, interleaving its peers."""
    have_torch = load_torch() is not None
    rows = []
    for dtype in DTYPES:
        for shape in CE_SHAPES:
            size = "large" if shape[0] * shape[1] > 10_000_000 else "small"
            inputs = make_inputs(dtype, *shape)
            for n_threads in THREADS:
                peers = {
                    p: (cross_entropy_peer(p, inputs, n_threads),
                        NUMPY_EVERY[size] if p == "numpy" else 1)
                    for p in PEERS if p != "torch" or have_torch
                }
                gc.collect()
                with torch_threads(n_threads):
                    medians = interleaved_medians(peers, max(1, round(ROUNDS[size] * scale)))
                case = group_name("cross_entropy", dtype, shape, n_threads)
                rows.append(Row(case, moved_bytes("cross_entropy", inputs),
                                {p: medians.get(p) for p in PEERS}))
                print(f"  timed {case}", file=sys.stderr, flush=True)
            del inputs, peers
    return rows


def from_json(path: Path) -> list[Row]:
    """Rows from a pytest-benchmark JSON: one per group, medians of its peers.

    The peer and the bytes come from ``extra_info``, written by test_bench_*.py.
    """
    data = json.loads(path.read_text())
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        if "peer" in info:
            groups[bench["group"]][info["peer"]] = bench
    rows = []
    for case, by_peer in sorted(groups.items()):
        if "fastloss" not in by_peer:
            continue
        nbytes = int(by_peer["fastloss"]["extra_info"]["bytes"])
        times = {p: by_peer[p]["stats"]["median"] if p in by_peer else None for p in PEERS}
        rows.append(Row(case, nbytes, times))
    return rows


def _fmt(value: float | None, spec: str) -> str:
    """value formatted by spec, or "-" right-aligned to the same width when missing."""
    if value is None or math.isnan(value):
        return "-".rjust(int(spec.split(".")[0]))
    return format(value, spec)


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None else num / den


def print_table(rows: list[Row]) -> None:
    """The ratio table, times in ms, bandwidth in GB/s (1e9 bytes)."""
    header = (f"{'case':<36} {'fastloss ms':>11} {'copy ms':>9} {'GB/s':>7} "
              f"{'vs copy':>8} {'vs numpy':>9} {'vs torch':>9}")
    print(header)
    print("-" * len(header))
    for row in rows:
        fl = row.times["fastloss"]
        copy = row.times["copy"]
        ms = {p: None if t is None else t * 1e3 for p, t in row.times.items()}
        gbs = None if fl is None else row.nbytes / fl / 1e9
        print(f"{row.case:<36} {_fmt(ms['fastloss'], '11.2f')} {_fmt(ms['copy'], '9.2f')} "
              f"{_fmt(gbs, '7.2f')} {_fmt(_ratio(copy, fl), '8.3f')} "
              f"{_fmt(_ratio(row.times['numpy'], fl), '9.2f')} "
              f"{_fmt(_ratio(row.times['torch'], fl), '9.2f')}")


def measure_options(scale: float) -> None:
    """Print what each option variant costs relative to the plain kernel, all variants and
    their NumPy and PyTorch peers interleaved in the same rounds."""
    have_torch = load_torch() is not None
    plain = make_inputs(OPTION_DTYPE, *OPTION_SHAPE)
    inputs = make_option_inputs(OPTION_DTYPE, *OPTION_SHAPE)
    print(f"\ncross_entropy options, {OPTION_DTYPE} {OPTION_SHAPE[0]}x{OPTION_SHAPE[1]}: "
          "time vs the plain kernel (cost of the options), speed-up vs NumPy and PyTorch")
    header = (f"{'variant':<20} {'threads':>7} {'fastloss ms':>11} {'vs plain':>9} "
              f"{'vs numpy':>9} {'vs torch':>9}")
    print(header)
    print("-" * len(header))
    for n_threads in THREADS:
        peers: dict[str, tuple[Callback, int]] = {}
        for variant in OPTION_VARIANTS:
            peers[f"{variant}/fastloss"] = (
                option_peer(variant, "fastloss", inputs, plain.target, n_threads), 1)
            peers[f"{variant}/numpy"] = (
                option_peer(variant, "numpy", inputs, plain.target, n_threads),
                NUMPY_EVERY["small"] * 2)
            if have_torch and variant in TORCH_VARIANTS:
                peers[f"{variant}/torch"] = (
                    option_peer(variant, "torch", inputs, plain.target, n_threads), 1)
        with torch_threads(n_threads):
            medians = interleaved_medians(peers, max(1, round(ROUNDS["small"] * scale)))
        base = medians["plain/fastloss"]
        for variant in OPTION_VARIANTS:
            fl = medians[f"{variant}/fastloss"]
            print(f"{variant:<20} {n_threads:>7} {fl * 1e3:>11.2f} {fl / base:>9.2f} "
                  f"{_fmt(_ratio(medians.get(f'{variant}/numpy'), fl), '9.2f')} "
                  f"{_fmt(_ratio(medians.get(f'{variant}/torch'), fl), '9.2f')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-in", type=Path, metavar="FILE",
                        help="read a pytest-benchmark JSON instead of timing here")
    parser.add_argument("--rounds-scale", type=float, default=1.0, metavar="X",
                        help="multiply the interleaved rounds per case (default 1)")
    args = parser.parse_args(argv)
    if args.json_in is not None:
        rows = from_json(args.json_in)
        print(f"From {args.json_in} (pytest-benchmark medians, peers timed one after "
              "another, not interleaved)")
    else:
        torch = load_torch()
        print(f"Interleaved medians; CPUs available: {len(os.sched_getaffinity(0))}; "
              f"torch: {torch.__version__ if torch else 'not installed'}", flush=True)
        rows = measure(args.rounds_scale)
    print_table(rows)
    if args.json_in is None:
        measure_options(args.rounds_scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
