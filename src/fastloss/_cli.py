"""The ``fastloss`` command line (also ``python -m fastloss``).

A subcommand is one entry of ``SUBCOMMANDS``: a function that adds its parser to the
subparsers and sets its ``run`` default, a function of the parsed arguments that returns
the exit code.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

import fastloss
from fastloss import _dispatch
from fastloss._eval import (
    LOSSES,
    REDUCTIONS,
    TEACHER_KINDS,
    EvalError,
    EvalResult,
    evaluate_files,
)
from fastloss._kernels import _kernels
from fastloss._threads import PARALLEL_MIN_ELEMENTS, effective_n_threads, usable_cpus

__all__ = ["SUBCOMMANDS", "build_parser", "info", "main"]


# --- info -------------------------------------------------------------------------------

def info() -> str:
    """A human-readable report of this build and what it would run with (a bad
    ``FASTLOSS_SIMD`` is reported on its line)."""
    build = fastloss.build_info()
    threads = effective_n_threads(None, PARALLEL_MIN_ELEMENTS)
    if _dispatch.error() is None:
        simd = f"{_dispatch.isa()} kernels run"
    else:
        simd = f"error: {_dispatch.error()}"
    if _kernels.forked_after_team():
        threads_note = ("a fork of a process that ran threads: every call runs on 1, as "
                        "GNU libgomp's threads do not survive fork()")
    else:
        threads_note = (f"n_threads=None; OMP_NUM_THREADS and threadpoolctl apply, capped at "
                        f"the {usable_cpus()} CPUs; inputs under {PARALLEL_MIN_ELEMENTS} "
                        "elements run on 1")
    lines = [
        f"fastloss {fastloss.__version__}",
        f"python   {platform.python_version()} ({sys.executable})",
        f"numpy    {np.__version__}",
        f"platform {platform.platform()} ({platform.machine()})",
        "openmp   " + (f"enabled (version {build['openmp_version']})" if build["openmp"]
                       else "disabled: serial build, every kernel runs on one thread"),
        f"threads  {threads} ({threads_note})",
        f"simd     {simd} (this CPU runs "
        f"{', '.join(_dispatch.isas())}; FASTLOSS_SIMD forces one); "
        f"compiled baseline: {build['simd']}",
        f"compiler {build['compiler']}",
        f"cflags   {build['cflags']}",
    ]
    return "\n".join(lines)


def _register_info(sub: Any) -> None:
    parser = sub.add_parser("info", help="version, OpenMP, threads and build flags",
                            description="Version, OpenMP, threads and build flags.")

    def run(args: argparse.Namespace) -> int:
        print(info())
        if _dispatch.error() is not None:
            sys.stderr.write(f"{parser.prog}: error: {_dispatch.error()}\n")
            return 2
        return 0

    parser.set_defaults(run=run)


# --- eval -------------------------------------------------------------------------------

EVAL_DESCRIPTION = """\
Compute a loss over .npy files of any size: the files are read in chunks of rows into
one reused buffer, so memory stays bounded by the chunk. Prints the reduced loss and,
for cross_entropy and bce, the accuracy and the perplexity (exp of the mean loss in nats).

  cross_entropy  logits (N, C), classes along the last axis, against integer class
                 indices (N,) or class probabilities (N, C)
  bce            binary cross-entropy with logits (with --probabilities: of
                 probabilities) against targets in [0, 1] of the same shape
  kl             distillation KL(teacher || softmax(student / T)) * T**2: student logits
                 (N, C) in --logits, the teacher (N, C) in --targets

Bad files or values give a one-line error and exit code 2."""


def positive_int(text: str) -> int:
    """argparse ``type=`` for a count of at least 1 (``--chunk-rows``, bench's
    ``--rounds``); the error quotes the text given."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


class _ProgressBar:
    """tqdm's bar on ``stream`` when tqdm is installed; otherwise one line that is
    rewritten in place."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.began = time.perf_counter()
        self._bar: Any = None
        self._drawn = False
        try:
            from tqdm import tqdm
        except ImportError:
            self._tqdm = None
        else:
            self._tqdm = tqdm

    def __call__(self, done: int, total: int) -> None:
        if self._tqdm is not None:
            if self._bar is None:
                self._bar = self._tqdm(total=total, unit="rows", unit_scale=True,
                                       desc="fastloss eval", file=self.stream)
            self._bar.update(done - self._bar.n)
            return
        percent = 100 * done // total if total else 100
        rate = done / max(time.perf_counter() - self.began, 1e-9)
        self.stream.write(f"\rfastloss eval: {percent:3d}% {done}/{total} rows "
                          f"({rate:,.0f} rows/s)")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _unit(base: float | None) -> str:
    return "nats" if base is None else "bits" if base == 2 else f"log base {base:g}"


def _report(result: EvalResult) -> str:
    what = {"cross_entropy": "rows", "bce": "elements", "kl": "rows"}[result.loss_name]
    lines = [f"loss        {result.loss:.8g} ({result.loss_name}, {result.reduction} over "
             f"{result.n} {what}, {_unit(result.base)})"]
    if result.accuracy is not None:
        lines += [f"accuracy    {result.accuracy:.6f}",
                  f"perplexity  {result.perplexity:.8g}"]
    rows = f"rows        {result.rows}"
    if result.ignored:
        rows += f" ({result.ignored} ignored)"
    lines.append(rows)
    if result.classes is not None:
        lines.append(f"classes     {result.classes}")
    lines.append(f"dtype       {result.dtype}")
    seconds = max(result.seconds, 1e-9)
    lines.append(f"time        {result.seconds:.3f} s ({result.bytes_read / seconds / 1e6:,.0f} "
                 f"MB/s, {result.rows / seconds:,.0f} rows/s)")
    return "\n".join(lines)


def _json_number(value: Any) -> Any:
    """Non-finite floats as null: JSON (RFC 8259) has no NaN or infinity."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _register_eval(sub: Any) -> None:
    parser = sub.add_parser(
        "eval", help="a loss over .npy files larger than memory, in chunks",
        description=EVAL_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logits", required=True, metavar="FILE.npy",
                        help="logits (probabilities with --probabilities), C-ordered")
    parser.add_argument("--targets", required=True, metavar="FILE.npy",
                        help="targets (the teacher for kl)")
    parser.add_argument("--loss", choices=LOSSES, default="cross_entropy",
                        help="default: cross_entropy")
    parser.add_argument("--reduction", choices=REDUCTIONS, default="mean",
                        help="mean: over the rows not ignored (cross_entropy), the rows (kl, "
                             "PyTorch's batchmean) or the elements (bce); default: mean")
    parser.add_argument("--ignore-index", type=int, metavar="INT",
                        help="cross_entropy: class index of rows to leave out (default -100)")
    parser.add_argument("--label-smoothing", type=float, metavar="EPS",
                        help="cross_entropy, bce with logits: in [0, 1] (default 0)")
    parser.add_argument("--probabilities", action="store_true",
                        help="bce: the --logits file holds probabilities")
    parser.add_argument("--teacher", choices=TEACHER_KINDS,
                        help="kl: what the --targets file holds (default probs)")
    parser.add_argument("--temperature", type=float, metavar="T",
                        help="kl: the softmax temperature (default 1)")
    parser.add_argument("--base", type=float,
                        help="unit of the loss: 2 for bits (default: nats)")
    parser.add_argument("--chunk-rows", type=positive_int, metavar="ROWS",
                        help="rows per chunk (default: about 64 MiB of the two files)")
    parser.add_argument("--n-threads", type=int, metavar="N",
                        help="OpenMP threads (default: OMP_NUM_THREADS; -1: all CPUs)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of text")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none unless stderr is a terminal)")

    def run(args: argparse.Namespace) -> int:
        bar = (_ProgressBar(sys.stderr) if not args.no_progress and _stderr_is_terminal()
               else None)
        try:
            result = evaluate_files(
                args.logits, args.targets, loss=args.loss, reduction=args.reduction,
                ignore_index=args.ignore_index, label_smoothing=args.label_smoothing,
                probabilities=args.probabilities, teacher=args.teacher,
                temperature=args.temperature, base=args.base, chunk_rows=args.chunk_rows,
                n_threads=args.n_threads, progress=bar,
            )
        except EvalError as exc:
            sys.stderr.write(f"{parser.prog}: error: {exc}\n")
            return 2
        finally:
            if bar is not None:
                bar.close()
        if args.json:
            print(json.dumps({key: _json_number(value)
                              for key, value in result.as_dict().items()}))
        else:
            print(_report(result))
        return 0

    parser.set_defaults(run=run)


# --- the command ------------------------------------------------------------------------

#: One registration per subcommand: ``register(subparsers)`` adds its parser and sets
#: ``run``.
def _register_bench(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench", help="speed as ratios to a copy, NumPy and PyTorch (--quick: < 1 min)")
    # Imported here: the benchmark module is not needed by the other commands.
    from fastloss import _bench

    _bench.configure_parser(parser)
    parser.set_defaults(run=_bench.run)


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (_register_info, _register_eval,
                                                   _register_bench)


def build_parser() -> argparse.ArgumentParser:
    """The ``fastloss`` command's parser, every subcommand registered."""
    parser = argparse.ArgumentParser(prog="fastloss", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``fastloss`` command with ``argv`` (default: ``sys.argv[1:]``); return the
    exit code (2 for a usage error or a bad file)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:           # --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)
