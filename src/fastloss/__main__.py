"""Command line: ``python -m fastloss info`` and ``python -m fastloss bench``."""

from __future__ import annotations

import argparse
import platform
import sys

import numpy as np

import fastloss
from fastloss import _bench, _common
from fastloss._common import PARALLEL_MIN_ELEMENTS, effective_n_threads


def info() -> str:
    """A human-readable report of this build and what it would run with."""
    build = fastloss.build_info()
    threads = effective_n_threads(None, PARALLEL_MIN_ELEMENTS)
    lines = [
        f"fastloss {fastloss.__version__}",
        f"python   {platform.python_version()} ({sys.executable})",
        f"numpy    {np.__version__}",
        f"platform {platform.platform()} ({platform.machine()})",
        "openmp   " + (f"enabled (version {build['openmp_version']})" if build["openmp"]
                       else "disabled: serial build, every kernel runs on one thread"),
        f"threads  {threads} (n_threads=None; OMP_NUM_THREADS and threadpoolctl apply; "
        f"inputs under {PARALLEL_MIN_ELEMENTS} elements run on 1)",
        f"simd     {build['simd']} (row kernels); elementwise kernels: "
        f"{_common.elementwise_kernels().__name__.rsplit('.', 1)[-1]} "
        f"(of {', '.join(_common.elementwise_builds())}; FASTLOSS_SIMD forces one)",
        f"compiler {build['compiler']}",
        f"cflags   {build['cflags']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastloss", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, OpenMP, threads and build flags")
    _bench.configure_parser(sub.add_parser(
        "bench", help="speed as ratios to a copy, NumPy and PyTorch (--quick: < 1 min)"))
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench.run(args)
    print(info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
