"""``python -m fastloss bench``: fastloss's speed as ratios to peers timed in the same run.

One place for the benchmark cases and their peers, shared by this command and by the
pytest-benchmark suite in ``benchmarks/``:

- a **case** is (kernel, dtype, N x C, threads), keyed ``{kernel}-{dtype}-{N}x{C}-t{threads}``
  (the suite's group name);
- its **peers** are the fastloss call (loss and gradient into a preallocated buffer, as in
  a training loop), ``copy`` (``np.copyto`` moving as many bytes as the kernel must, see
  :func:`traffic_bytes`), ``numpy`` (:mod:`fastloss.reference`), ``torch`` (forward and
  backward, when PyTorch is importable), ``torch_fwd`` (forward only, on the call-overhead
  case 32x10) and ``plain`` (cross-entropy without options, for the option variants).

Timing: the peers of one kernel, dtype and shape (all thread counts together) run
round-robin, each once per round in a rotating order, so that the drift of a shared,
noisy machine hits every peer alike. Each ratio is the median over the rounds of
``peer time / fastloss time`` within the same round: above 1, fastloss is faster; "vs
copy" is fastloss's bandwidth as a fraction of the copy's. Per-round ratios cancel drift
that a ratio of two medians would keep when the machine changes speed between rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import gc
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np

import fastloss
from fastloss import _dispatch, reference
from fastloss._cli import positive_int
from fastloss._threads import usable_cpus

__all__ = ["configure_parser", "main", "run"]

Callback = Callable[[], object]

SEED = 20240611
DTYPES: tuple[str, ...] = ("float32", "float64")
THREADS: tuple[int, ...] = (1, 2)
# (N, C): call overhead; a classifier; a language model's vocabulary (32k and Llama 3's
# 128256); many rows of few classes, where per-row costs and the targets dominate.
SHAPES: tuple[tuple[int, int], ...] = (
    (32, 10), (4096, 1000), (1024, 32000), (256, 128256), (1_000_000, 10), (4_000_000, 2),
)
#: Cases of at least this many elements are "large" (the suite's ``large`` marker).
LARGE_ELEMENTS = 5_000_000
#: Below this many elements a case measures call overhead; cross-entropy then also has
#: the ``torch_fwd`` peer (the target there: faster than PyTorch's forward alone).
TINY_ELEMENTS = 10_000
TEMPERATURE = 2.0   # kl_div_with_logits: a typical distillation temperature

FASTLOSS = "fastloss"
#: Peers reported as ratios, in table order; ``copy`` and ``numpy`` do not depend on the
#: thread count and are shared by a group's cases.
RATIO_PEERS: tuple[str, ...] = ("copy", "numpy", "torch", "torch_fwd", "plain")
THREADLESS = frozenset({"copy", "numpy"})
RATIO_TITLES = {"copy": "vs copy", "numpy": "vs numpy", "torch": "vs torch",
                "torch_fwd": "vs fwd", "plain": "vs plain"}
JSON_SCHEMA = 1


def load_torch() -> ModuleType | None:
    """PyTorch if importable: a peer, never a requirement."""
    try:
        import torch
    except ImportError:
        return None
    return cast(ModuleType, torch)


@contextlib.contextmanager
def torch_threads(torch: ModuleType | None, n_threads: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to n_threads for the block, then restored."""
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------
# Inputs


@dataclass
class Arrays:
    """One case's inputs and output buffers, every page touched before any timing.

    ``x`` is the kernel's first argument (logits, probabilities or log-probabilities),
    ``target`` its second (class indices, or an N x C array), ``out`` the N x C buffer for
    ``grad_out``/``out``, ``rows`` the (N,) buffer for ``logsumexp``; ``extra`` holds the
    option variants' weights and class indices without ignored rows.
    """

    x: np.ndarray
    target: np.ndarray | None
    out: np.ndarray
    rows: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    _copies: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def y(self) -> np.ndarray:
        """``target``, for the kernels that take one."""
        if self.target is None:
            raise ValueError("this case has no target")
        return self.target

    def copy_pair(self, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
        """(source, destination) whose copy moves ``nbytes`` (read + write).

        Views of ``x`` and ``out`` where they are large enough (no extra memory for the
        logits-in, gradient-out kernels), else two buffers of their own, touched.
        """
        if nbytes not in self._copies:
            count = nbytes // (2 * self.x.itemsize)
            if count <= self.x.size:
                pair = self.x.reshape(-1)[:count], self.out.reshape(-1)[:count]
            else:
                pair = np.ones(count, self.x.dtype), np.zeros(count, self.x.dtype)
            self._copies[nbytes] = pair
        return self._copies[nbytes]


def _logits(dtype: str, n: int, c: int, stream: int) -> np.ndarray:
    """3 * N(0, 1) from a seed of the shape only, so float32 and float64 see the same
    values; drawn in float64 by blocks of rows to bound the temporary."""
    rng = np.random.default_rng([SEED, n, c, stream])
    out = np.empty((n, c), dtype=dtype)
    step = max(1, 4_000_000 // c)
    for start in range(0, n, step):
        block = rng.standard_normal((min(step, n - start), c))
        block *= 3.0
        out[start:start + step] = block
    return out


def _labels(dtype: str, n: int, c: int) -> np.ndarray:
    """Fair 0/1 labels of the logits' shape, in their dtype."""
    rng = np.random.default_rng([SEED, n, c, 2])
    return (rng.random((n, c)) < 0.5).astype(dtype)


#: Input kinds: what ``x`` and ``target`` hold.
INPUT_KINDS = ("logits", "classes", "options", "soft", "teacher_logits", "probs",
               "log_probs", "binary_probs", "binary_logits")


def make_arrays(kind: str, dtype: str, shape: tuple[int, int]) -> Arrays:
    """Inputs of one kind (see :data:`INPUT_KINDS`) for an N x C case, pre-touched."""
    n, c = shape
    x = _logits(dtype, n, c, 0)
    target: np.ndarray | None = None
    extra: dict[str, np.ndarray] = {}
    if kind in ("classes", "options"):
        rng = np.random.default_rng([SEED, n, c, 1])
        target = rng.integers(0, c, size=n, dtype=np.intp)
        if kind == "options":
            extra["plain_target"] = target
            target = target.copy()
            target[rng.random(n) < 0.1] = -100     # 10% ignored rows
            extra["class_weight"] = (rng.random(c) + 0.5).astype(dtype)
            extra["sample_weight"] = (rng.random(n) * 2).astype(dtype)
    elif kind in ("soft", "log_probs"):
        teacher = _logits(dtype, n, c, 1)
        target = fastloss.softmax(teacher, out=teacher)
        if kind == "log_probs":
            x = fastloss.log_softmax(x, out=x)
    elif kind == "teacher_logits":
        target = _logits(dtype, n, c, 1)
    elif kind == "probs":
        x = fastloss.softmax(x, out=x)
    elif kind in ("binary_probs", "binary_logits"):
        target = _labels(dtype, n, c)
        if kind == "binary_probs":
            # sigmoid, strictly inside (0, 1) for logits of this size
            np.negative(x, out=x)
            np.exp(x, out=x)
            x += 1.0
            np.reciprocal(x, out=x)
    elif kind != "logits":
        raise ValueError(f"unknown input kind {kind!r}")
    out = np.zeros_like(x)
    rows = np.zeros(n, dtype=dtype)
    return Arrays(x=x, target=target, out=out, rows=rows, extra=extra)


# ---------------------------------------------------------------------------------------
# Kernels and their peers


@dataclass(frozen=True)
class Kernel:
    """A benchmarked fastloss function in one configuration.

    ``traffic``: how many N x C arrays the kernel must read plus write at least (the
    logits read and the gradient written: 2). Vectors of N (class indices, per-row
    results) and of C (class weights) are not counted.
    """

    name: str
    summary: str
    inputs: str
    traffic: int
    fastloss: Callable[[Arrays, int], Callback]
    numpy: Callable[[Arrays], Callback]
    torch: Callable[[Arrays, ModuleType], Callback] | None
    plain: bool = False


def _ce(a: Arrays, t: int) -> Callback:
    return lambda: fastloss.cross_entropy(a.x, a.target, grad_out=a.out, n_threads=t)


def _ce_options(a: Arrays, t: int, every: bool) -> Callback:
    kwargs: dict[str, Any] = {"weight": a.extra["class_weight"], "label_smoothing": 0.1}
    if every:
        kwargs.update(sample_weight=a.extra["sample_weight"], z_loss=1e-4)
    return lambda: fastloss.cross_entropy(a.x, a.target, grad_out=a.out, n_threads=t,
                                          **kwargs)


def _ce_options_numpy(a: Arrays, every: bool) -> Callback:
    kwargs: dict[str, Any] = {"weight": a.extra["class_weight"], "label_smoothing": 0.1}
    if every:
        kwargs.update(sample_weight=a.extra["sample_weight"], z_loss=1e-4)
    return lambda: reference.cross_entropy(a.x, a.y, return_grad=True, **kwargs)


def _leaf(torch: ModuleType, x: np.ndarray) -> Any:
    """A leaf tensor sharing x's memory, as a training step's logits."""
    return torch.from_numpy(x).requires_grad_(True)


def _backward(leaf: Any, loss: Callable[[], Any]) -> Callback:
    """Forward and backward, with ``.grad`` dropped first so that PyTorch allocates the
    gradient each call, as a training step does after ``zero_grad(set_to_none=True)``."""
    def step() -> None:
        leaf.grad = None
        loss().backward()
    return step


def _torch_ce(a: Arrays, torch: ModuleType) -> Callback:
    leaf, y = _leaf(torch, a.x), torch.from_numpy(a.target)
    ce = torch.nn.functional.cross_entropy
    return _backward(leaf, lambda: ce(leaf, y))


def _torch_ce_forward(a: Arrays, torch: ModuleType) -> Callback:
    x, y = torch.from_numpy(a.x), torch.from_numpy(a.target)
    ce = torch.nn.functional.cross_entropy
    return lambda: ce(x, y)


def _torch_ce_options(a: Arrays, torch: ModuleType) -> Callback:
    leaf, y = _leaf(torch, a.x), torch.from_numpy(a.target)
    w = torch.from_numpy(a.extra["class_weight"])
    ce = torch.nn.functional.cross_entropy
    return _backward(leaf, lambda: ce(leaf, y, weight=w, label_smoothing=0.1))


def _torch_ce_soft(a: Arrays, torch: ModuleType) -> Callback:
    leaf, p = _leaf(torch, a.x), torch.from_numpy(a.target)
    ce = torch.nn.functional.cross_entropy
    return _backward(leaf, lambda: ce(leaf, p))


def _torch_entropy(a: Arrays, torch: ModuleType) -> Callback:
    p, entr = torch.from_numpy(a.x), torch.special.entr
    return lambda: entr(p).sum(-1)


def _torch_entropy_from_logits(a: Arrays, torch: ModuleType) -> Callback:
    leaf, f = _leaf(torch, a.x), torch.nn.functional
    # Categorical(logits=x).entropy() computes the same, behind argument validation.
    return _backward(leaf, lambda: -(f.softmax(leaf, -1) * f.log_softmax(leaf, -1))
                     .sum(-1).mean())


def _torch_distill(a: Arrays, torch: ModuleType, teacher_logits: bool) -> Callback:
    leaf, t, f = _leaf(torch, a.x), torch.from_numpy(a.target), torch.nn.functional

    def loss() -> Any:
        p = f.softmax(t / TEMPERATURE, -1) if teacher_logits else t
        return f.kl_div(f.log_softmax(leaf / TEMPERATURE, -1), p,
                        reduction="batchmean") * TEMPERATURE**2

    return _backward(leaf, loss)


def _torch_elementwise(name: str, **kwargs: Any) -> Callable[[Arrays, ModuleType], Callback]:
    def build(a: Arrays, torch: ModuleType) -> Callback:
        leaf, y = _leaf(torch, a.x), torch.from_numpy(a.target)
        fn = getattr(torch.nn.functional, name)
        return _backward(leaf, lambda: fn(leaf, y, **kwargs))
    return build


def _torch_sigmoid_focal(a: Arrays, torch: ModuleType) -> Callback:
    leaf, y, f = _leaf(torch, a.x), torch.from_numpy(a.target), torch.nn.functional

    def loss() -> Any:                  # torchvision.ops.sigmoid_focal_loss, mean
        p = torch.sigmoid(leaf)
        ce = f.binary_cross_entropy_with_logits(leaf, y, reduction="none")
        p_t = p * y + (1 - p) * (1 - y)
        return ((0.25 * y + 0.75 * (1 - y)) * ce * (1 - p_t) ** 2).mean()

    return _backward(leaf, loss)


def _torch_focal(a: Arrays, torch: ModuleType) -> Callback:
    leaf, y, f = _leaf(torch, a.x), torch.from_numpy(a.target), torch.nn.functional

    def loss() -> Any:
        ce = f.cross_entropy(leaf, y, reduction="none")
        return ((-torch.expm1(-ce)) ** 2 * ce).mean()

    return _backward(leaf, loss)


def _softmax_family(name: str, out: str) -> Kernel:
    """softmax / log_softmax / logsumexp along the last axis, forward only (as fastloss
    offers them), into a preallocated ``out``."""
    def fast(a: Arrays, t: int) -> Callback:
        fn, buf = getattr(fastloss, name), getattr(a, out)
        return lambda: fn(a.x, out=buf, n_threads=t)

    def numpy(a: Arrays) -> Callback:
        fn = getattr(reference, name)
        return lambda: fn(a.x)

    def torch_peer(a: Arrays, torch: ModuleType) -> Callback:
        fn, x = getattr(torch, name), torch.from_numpy(a.x)
        return lambda: fn(x, -1)

    traffic = 1 if out == "rows" else 2
    return Kernel(name, f"{name} along the last axis (forward)", "logits", traffic, fast,
                  numpy, torch_peer)


KERNELS: dict[str, Kernel] = {k.name: k for k in (
    Kernel("cross_entropy", "class targets, loss (mean) and gradient into grad_out",
           "classes", 2, _ce,
           lambda a: lambda: reference.cross_entropy(a.x, a.y, return_grad=True),
           _torch_ce),
    Kernel("cross_entropy_options",
           "cross_entropy with class weights, 10% ignored rows, label smoothing 0.1",
           "options", 2, lambda a, t: _ce_options(a, t, False),
           lambda a: _ce_options_numpy(a, False), _torch_ce_options, plain=True),
    Kernel("cross_entropy_all_options",
           "cross_entropy_options plus sample weights and z-loss (PyTorch has neither)",
           "options", 2, lambda a, t: _ce_options(a, t, True),
           lambda a: _ce_options_numpy(a, True), None, plain=True),
    Kernel("cross_entropy_soft", "probability targets, loss (mean) and gradient",
           "soft", 3, _ce,
           lambda a: lambda: reference.cross_entropy(a.x, a.y, return_grad=True),
           _torch_ce_soft),
    _softmax_family("softmax", "out"),
    _softmax_family("log_softmax", "out"),
    _softmax_family("logsumexp", "rows"),
    Kernel("entropy", "entropy of probability rows (forward)", "probs", 1,
           lambda a, t: lambda: fastloss.entropy(a.x, n_threads=t),
           lambda a: lambda: reference.entropy(a.x),
           _torch_entropy),
    Kernel("entropy_from_logits", "entropy of softmax(logits), mean, and gradient",
           "logits", 2,
           lambda a, t: lambda: fastloss.entropy_from_logits(
               a.x, reduction="mean", grad_out=a.out, n_threads=t),
           lambda a: lambda: reference.entropy_from_logits(a.x, reduction="mean",
                                                           return_grad=True),
           _torch_entropy_from_logits),
    Kernel("kl_div_with_logits",
           f"distillation from teacher probabilities, T={TEMPERATURE:g}, batchmean, "
           "loss and gradient", "soft", 3,
           lambda a, t: lambda: fastloss.kl_div_with_logits(
               a.x, a.target, temperature=TEMPERATURE, grad_out=a.out, n_threads=t),
           lambda a: lambda: reference.kl_div_with_logits(
               a.x, a.y, temperature=TEMPERATURE, return_grad=True),
           lambda a, torch: _torch_distill(a, torch, False)),
    Kernel("kl_div_with_logits_teacher_logits",
           "kl_div_with_logits with the teacher's logits (teacher_kind='logits')",
           "teacher_logits", 3,
           lambda a, t: lambda: fastloss.kl_div_with_logits(
               a.x, a.target, teacher_kind="logits", temperature=TEMPERATURE,
               grad_out=a.out, n_threads=t),
           lambda a: lambda: reference.kl_div_with_logits(
               a.x, a.y, teacher_kind="logits", temperature=TEMPERATURE,
               return_grad=True),
           lambda a, torch: _torch_distill(a, torch, True)),
    Kernel("kl_div", "elementwise, log-probabilities against probabilities, sum, "
           "loss and gradient", "log_probs", 3,
           lambda a, t: lambda: fastloss.kl_div(a.x, a.target, reduction="sum",
                                                grad_out=a.out, n_threads=t),
           lambda a: lambda: reference.kl_div(a.x, a.y, reduction="sum",
                                              return_grad=True),
           _torch_elementwise("kl_div", reduction="sum")),
    Kernel("binary_cross_entropy", "probabilities and 0/1 labels, mean, loss and gradient",
           "binary_probs", 3,
           lambda a, t: lambda: fastloss.binary_cross_entropy(a.x, a.target,
                                                              grad_out=a.out, n_threads=t),
           lambda a: lambda: reference.binary_cross_entropy(a.x, a.y,
                                                            return_grad=True),
           _torch_elementwise("binary_cross_entropy")),
    Kernel("binary_cross_entropy_with_logits",
           "logits and 0/1 labels, mean, loss and gradient", "binary_logits", 3,
           lambda a, t: lambda: fastloss.binary_cross_entropy_with_logits(
               a.x, a.target, grad_out=a.out, n_threads=t),
           lambda a: lambda: reference.binary_cross_entropy_with_logits(
               a.x, a.y, return_grad=True),
           _torch_elementwise("binary_cross_entropy_with_logits")),
    Kernel("sigmoid_focal_loss", "logits and 0/1 labels, alpha 0.25, gamma 2, mean, loss and "
           "gradient", "binary_logits", 3,
           lambda a, t: lambda: fastloss.sigmoid_focal_loss(
               a.x, a.target, reduction="mean", grad_out=a.out, n_threads=t),
           lambda a: lambda: reference.sigmoid_focal_loss(a.x, a.y, reduction="mean",
                                                          return_grad=True),
           _torch_sigmoid_focal),
    Kernel("focal_loss", "class targets, gamma 2, mean, loss and gradient", "classes", 2,
           lambda a, t: lambda: fastloss.focal_loss(a.x, a.target, grad_out=a.out,
                                                    n_threads=t),
           lambda a: lambda: reference.focal_loss(a.x, a.y, return_grad=True),
           _torch_focal),
)}


@dataclass(frozen=True)
class Case:
    """One benchmark case: a kernel on one dtype, shape and thread count."""

    kernel: str
    dtype: str
    shape: tuple[int, int]
    threads: int

    @property
    def key(self) -> str:
        """``{kernel}-{dtype}-{N}x{C}-t{threads}``: the pytest-benchmark group too."""
        n, c = self.shape
        return f"{self.kernel}-{self.dtype}-{n}x{c}-t{self.threads}"

    @property
    def group(self) -> tuple[str, str, tuple[int, int]]:
        """What the cases timed together share: everything but the thread count."""
        return self.kernel, self.dtype, self.shape

    @property
    def elements(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def large(self) -> bool:
        return self.elements >= LARGE_ELEMENTS


def traffic_bytes(case: Case) -> int:
    """The bytes the kernel must move at least: its N x C arrays read plus written.

    The ``copy`` peer moves exactly these bytes (a copy of half of them), so "vs copy" is
    the ratio of bandwidths. Cross-entropy with class targets: the logits read and the
    gradient written, as the issue defines it (the N class indices are not counted: at
    4M x 2 in float32 they would add half as much again). logsumexp and entropy read
    N x C and write N: a copy of N x C / 2, whose reads and writes sum to N x C.
    """
    return KERNELS[case.kernel].traffic * case.elements * np.dtype(case.dtype).itemsize


def peer_names(case: Case, have_torch: bool) -> tuple[str, ...]:
    """The peers timed with ``fastloss`` on this case, in table order."""
    kernel = KERNELS[case.kernel]
    names = ["copy", "numpy"]
    if have_torch and kernel.torch is not None:
        names.append("torch")
        if case.kernel == "cross_entropy" and case.elements < TINY_ELEMENTS:
            names.append("torch_fwd")
    if kernel.plain:
        names.append("plain")
    return tuple(names)


def make_peer(case: Case, peer: str, arrays: Arrays, torch: ModuleType | None = None
              ) -> Callback:
    """The zero-argument callable timing ``peer`` on ``case`` (inputs in ``arrays``).

    PyTorch's thread count is process-wide: set it around the calls
    (:func:`torch_threads`).
    """
    kernel = KERNELS[case.kernel]
    if peer == FASTLOSS:
        return kernel.fastloss(arrays, case.threads)
    if peer == "copy":
        src, dst = arrays.copy_pair(traffic_bytes(case))
        return lambda: np.copyto(dst, src)
    if peer == "numpy":
        return kernel.numpy(arrays)
    if peer == "plain" and kernel.plain:
        return KERNELS["cross_entropy"].fastloss(
            Arrays(arrays.x, arrays.extra["plain_target"], arrays.out, arrays.rows),
            case.threads)
    if peer in ("torch", "torch_fwd") and kernel.torch is not None:
        if torch is None:
            raise RuntimeError("PyTorch is not installed")
        if peer == "torch":
            return kernel.torch(arrays, torch)
        if case.kernel == "cross_entropy":
            return _torch_ce_forward(arrays, torch)
    raise ValueError(f"no peer {peer!r} for {case.kernel}")


def suite_cases() -> list[Case]:
    """Every case of the pytest-benchmark suite: each kernel x dtype x shape x threads,
    ordered so that the cases sharing inputs are adjacent. The option variants are timed
    on 4096x1000 only, the teacher-logits variant also on 1M x 10 (a block kernel)."""
    variants = {"cross_entropy_options": ((4096, 1000),),
                "cross_entropy_all_options": ((4096, 1000),),
                "kl_div_with_logits_teacher_logits": ((4096, 1000), (1_000_000, 10))}
    return [Case(name, dtype, shape, t)
            for name in KERNELS for dtype in DTYPES
            for shape in variants.get(name, SHAPES)
            for t in THREADS]


QUICK_SHAPES = ((32, 10), (4096, 1000), (1_000_000, 10))
#: The headline kernels besides cross_entropy (issue: same fraction of copy bandwidth).
OTHER_HEADLINE = ("cross_entropy_soft", "softmax", "log_softmax", "logsumexp",
                  "binary_cross_entropy_with_logits", "kl_div_with_logits",
                  "entropy_from_logits")


def headline_cases(quick: bool, threads: Sequence[int] = THREADS) -> list[Case]:
    """The cases of ``fastloss bench``.

    Full: cross_entropy in float32 and float64 on every shape; the other headline kernels
    in float32 on 4096x1000 and 1M x 10; the option variants on 4096x1000. Quick:
    cross_entropy on 32x10, 4096x1000, 1024x32000 (float32) and 1M x 10; the others on
    4096x1000 float32.
    """
    groups: list[tuple[str, str, tuple[int, int]]] = [
        ("cross_entropy", dtype, shape) for dtype in DTYPES for shape in SHAPES
        if not quick or shape in QUICK_SHAPES or (shape, dtype) == ((1024, 32000), "float32")
    ]
    for name in OTHER_HEADLINE:
        for shape in (((4096, 1000),) if quick else ((4096, 1000), (1_000_000, 10))):
            groups.append((name, "float32", shape))
    if not quick:
        groups += [(name, "float32", (4096, 1000)) for name in
                   ("cross_entropy_options", "cross_entropy_all_options")]
    return [Case(k, d, s, t) for k, d, s in groups for t in threads]


# ---------------------------------------------------------------------------------------
# Interleaved timing

#: Seconds of timing per group (kernel, dtype, shape; all thread counts), split 60/40
#: between the fast peers' rounds and the NumPy reference, which is often 10-50 times
#: slower and so joins only every k-th round.
BUDGET_S = {"quick": 1.6, "full": 6.0}
MIN_ROUNDS = {"quick": 3, "full": 7}
MAX_ROUNDS = {"quick": 60, "full": 200}
MIN_NUMPY_SAMPLES = {"quick": 2, "full": 3}
#: A peer whose first call takes this long needs no warm-up (its lazy initialisation is
#: negligible beside it): that call is its sample of round 0, which saves a slow call.
SLOW_CALL_S = 0.1
#: A timed sample is at least this long: calls shorter than it are repeated within the
#: sample (32x10 takes microseconds; the timer and loop then cost nothing in comparison).
MIN_SAMPLE_S = 1e-3
#: Before each timed sample of a peer on more than one thread, untimed calls for at least
#: this long. Otherwise each such sample starts after the other peers' single-threaded
#: work, with the OpenMP team asleep and the second core idle, which on a 2-core VM made
#: the first calls of fastloss 4096 x 1000 on 2 threads up to 1.8x slower than steady
#: state, taking about four calls (3 ms) to recover. Training and evaluation loops call
#: the kernels back to back; PyTorch's threaded peer is warmed the same way.
WARM_S = 4e-3


@dataclass
class _Entry:
    """One callable in a group's rounds: a peer, for one thread count or for all."""

    peer: str
    threads: int | None
    fn: Callback
    inner: int = 1
    estimate: float = 0.0
    every: int = 1
    samples: dict[int, float] = field(default_factory=dict)


def _calibrate(entry: _Entry, torch: ModuleType | None) -> None:
    """Warm up (lazy initialisation: PyTorch's autograd, OpenMP teams) and estimate one
    call's time from a second call; a slow first call is kept as round 0's sample."""
    _set_torch_threads(entry, torch)
    start = time.perf_counter()
    entry.fn()
    first = time.perf_counter() - start
    if first >= SLOW_CALL_S:
        entry.samples[0] = first
    else:
        start = time.perf_counter()
        entry.fn()
        first = time.perf_counter() - start
    entry.estimate = max(first, 1e-8)
    entry.inner = max(1, min(10_000, math.ceil(MIN_SAMPLE_S / entry.estimate)))


def _set_torch_threads(entry: _Entry, torch: ModuleType | None) -> None:
    if torch is not None and entry.peer.startswith("torch") and entry.threads is not None:
        torch.set_num_threads(entry.threads)


def _plan(entries: list[_Entry], mode: str, rounds: int | None) -> int:
    """Rounds for the group, and how often the NumPy reference joins one."""
    numpy_entries = [e for e in entries if e.peer == "numpy"]
    fast = [e for e in entries if e.peer != "numpy"]
    budget = BUDGET_S[mode] * (0.6 if numpy_entries else 1.0)
    if rounds is None:
        per_round = sum(e.inner * e.estimate for e in fast)
        rounds = max(MIN_ROUNDS[mode], min(MAX_ROUNDS[mode], int(budget / per_round)))
    for e in numpy_entries:
        samples = int(BUDGET_S[mode] * 0.4 / (e.inner * e.estimate))
        samples = max(min(MIN_NUMPY_SAMPLES[mode], rounds), min(rounds, samples))
        e.every = max(1, rounds // samples)
    return rounds


def _time_rounds(entries: list[_Entry], rounds: int, torch: ModuleType | None) -> None:
    """Each round runs every entry (that is due) once, starting one further each round,
    a threaded one after WARM_S of untimed calls; the garbage collector is off so that
    its pauses land in no sample."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            start = r % len(entries)
            for entry in entries[start:] + entries[:start]:
                if r % entry.every or r in entry.samples:   # not due, or calibrated
                    continue
                _set_torch_threads(entry, torch)
                fn, inner = entry.fn, entry.inner
                if entry.threads is not None and entry.threads > 1:
                    _warm_up(fn)
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                entry.samples[r] = (time.perf_counter() - t0) / inner
    finally:
        if enabled:
            gc.enable()


def _warm_up(fn: Callback) -> None:
    """Call fn, untimed, for at least WARM_S."""
    stop = time.perf_counter() + WARM_S
    fn()
    while time.perf_counter() < stop:
        fn()


def _median_ratio(peer: _Entry, base: _Entry) -> float:
    """Median over the rounds both ran of peer time / base time."""
    return statistics.median(peer.samples[r] / base.samples[r]
                             for r in peer.samples if r in base.samples)


def time_group(cases: Sequence[Case], torch: ModuleType | None, mode: str = "quick",
               rounds: int | None = None) -> list[dict[str, Any]]:
    """Time the cases of one group (same kernel, dtype and shape; one per thread count)
    interleaved, and return one result per case: its key, the median milliseconds of
    each peer, fastloss's bandwidth and the per-round-median ratios."""
    first = cases[0]
    arrays = make_arrays(KERNELS[first.kernel].inputs, first.dtype, first.shape)
    entries: list[_Entry] = []
    shared: dict[str, _Entry] = {}
    for case in cases:
        entries.append(_Entry(FASTLOSS, case.threads, make_peer(case, FASTLOSS, arrays)))
        for peer in peer_names(case, torch is not None):
            if peer in THREADLESS:
                if peer not in shared:
                    shared[peer] = _Entry(peer, None, make_peer(case, peer, arrays))
                    entries.append(shared[peer])
            else:
                entries.append(_Entry(peer, case.threads,
                                      make_peer(case, peer, arrays, torch)))
    for entry in entries:
        _calibrate(entry, torch)
    n_rounds = _plan(entries, mode, rounds)
    _time_rounds(entries, n_rounds, torch)
    results = []
    for case in cases:
        mine = {e.peer: e for e in entries if e.threads in (case.threads, None)}
        base = mine.pop(FASTLOSS)
        seconds = statistics.median(base.samples.values())
        results.append({
            "key": case.key, "kernel": case.kernel, "dtype": case.dtype,
            "shape": list(case.shape), "threads": case.threads,
            "bytes": traffic_bytes(case), "rounds": n_rounds,
            "ms": {FASTLOSS: seconds * 1e3,
                   **{p: statistics.median(e.samples.values()) * 1e3
                      for p, e in mine.items()}},
            "gbps": traffic_bytes(case) / seconds / 1e9,
            "ratios": {p: _median_ratio(e, base) for p, e in mine.items()},
        })
    return results


# ---------------------------------------------------------------------------------------
# Report, JSON, comparison


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(torch: ModuleType | None) -> dict[str, Any]:
    """What the figures depend on: the machine, the build and the peers' versions."""
    build = dict(fastloss.build_info())
    build["compiled_simd"] = build.pop("simd")
    build["simd"] = _dispatch.isa()     # the build of the kernels that runs
    return {
        "machine": {"cpu": _cpu_model(), "cpus": usable_cpus(),
                    "platform": platform.platform(), "python": platform.python_version()},
        "build": build,
        "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
    }


class _Table:
    """The table, printed a row at a time as the cases finish."""

    def __init__(self, columns: Sequence[str], stream: Any) -> None:
        self.columns = list(columns)
        self.stream = stream
        head = (f"{'kernel':<34} {'dtype':<7} {'N x C':>14} {'thr':>3} {'ms':>9} "
                f"{'GB/s':>6}" + "".join(f" {RATIO_TITLES[c]:>8}" for c in self.columns))
        print(head, file=stream)
        print("-" * len(head), file=stream, flush=True)

    def row(self, result: dict[str, Any]) -> None:
        n, c = result["shape"]
        ratios = result["ratios"]
        cells = "".join(f" {ratios[col]:>8.3g}" if col in ratios else f" {'-':>8}"
                        for col in self.columns)
        print(f"{result['kernel']:<34} {result['dtype']:<7} {f'{n}x{c}':>14} "
              f"{result['threads']:>3} {result['ms'][FASTLOSS]:>9.3f} "
              f"{result['gbps']:>6.2f}{cells}", file=self.stream, flush=True)


def load_run(path: Path) -> dict[str, Any]:
    """A run saved with ``--json``; ``ValueError`` naming the file if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not all(
            isinstance(c, dict) and isinstance(c.get("key"), str)
            and isinstance(c.get("ratios"), dict) for c in cases):
        raise ValueError(f"{path} is not a saved 'fastloss bench --json' run "
                         "(no list of cases with 'key' and 'ratios')")
    return cast(dict[str, Any], data)


def compare(saved: dict[str, Any], now: Sequence[dict[str, Any]], tolerance: float
            ) -> tuple[list[str], bool]:
    """Lines reporting each ratio of ``saved`` against ``now``, and whether any fell by
    more than ``tolerance`` (a fraction: 0.15 fails a ratio below 85% of the saved one).

    Every ratio is "higher is better" (peer time / fastloss time). Cases or peers present
    on one side only are reported, not failures.
    """
    current = {r["key"]: r["ratios"] for r in now}
    lines: list[str] = []
    failed = False
    saved_keys = set()
    for case in saved["cases"]:
        key = case["key"]
        saved_keys.add(key)
        if key not in current:
            lines.append(f"missing now:   {key} (in the saved run, not measured now)")
            continue
        for peer, before in case["ratios"].items():
            after = current[key].get(peer)
            if after is None:
                lines.append(f"missing now:   {key} {RATIO_TITLES.get(peer, peer)}")
                continue
            change = after / before - 1.0 if before else 0.0
            worse = after < before * (1.0 - tolerance)
            failed |= worse
            label = "REGRESSION" if worse else "ok"
            lines.append(f"{label + ':':<14} {key} {RATIO_TITLES.get(peer, peer)}: "
                         f"{before:.3g} -> {after:.3g} ({change:+.1%})")
    lines += [f"not in saved:  {key}" for key in current if key not in saved_keys]
    return lines, failed


# ---------------------------------------------------------------------------------------
# Command line


def _thread_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive thread counts separated by commas, e.g. 1,2; got {text!r}")
    return values


def _tolerance(text: str) -> float:
    """0.15, or 15%: a fraction in [0, 1)."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a fraction in [0, 1) such as 0.15, or a percentage such as 15%; "
            f"got {text!r}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``bench`` options to ``parser`` (a subcommand's parser or a new one)."""
    parser.description = (
        "Time fastloss against a copy of the same bytes, the NumPy reference and PyTorch "
        "(forward+backward), interleaved in one process, and print the ratios.")
    parser.add_argument("--quick", action="store_true",
                        help="fewer cases and rounds: under a minute on two cores")
    parser.add_argument("--cases", metavar="PATTERNS",
                        help="only these cases: comma-separated keys "
                             "(kernel-dtype-NxC-tT), substrings or globs; a pattern "
                             "matching no headline case selects from the whole "
                             "pytest-benchmark suite")
    parser.add_argument("--threads", type=_thread_list, metavar="LIST",
                        help="thread counts, e.g. 1,2 (default: 1,2)")
    parser.add_argument("--rounds", type=positive_int, metavar="N",
                        help="rounds per case (default: as many as a time budget allows)")
    parser.add_argument("--no-torch", action="store_true",
                        help="leave PyTorch out even if it is installed")
    parser.add_argument("--json", type=Path, metavar="PATH", dest="json_path",
                        help="write the results as JSON (for a later --compare)")
    parser.add_argument("--compare", type=Path, metavar="PATH",
                        help="compare with a run saved by --json: exit 1 when a ratio "
                             "fell by more than the tolerance. Without --cases, "
                             "measures the saved run's cases")
    parser.add_argument("--tolerance", type=_tolerance, default=0.15, metavar="FRACTION",
                        help="allowed fall of a ratio for --compare (default 0.15; 15%% "
                             "also works)")
    parser.add_argument("--list", action="store_true",
                        help="print the selected case keys and exit")
    return parser


def _matches(case: Case, pattern: str) -> bool:
    """A glob (with * ? [) matches the whole key; anything else is a substring (an
    exact key, handled by the caller, selects that case only)."""
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(case.key, pattern)
    return pattern in case.key


def _select(args: argparse.Namespace, saved: dict[str, Any] | None) -> list[Case]:
    """The cases to time: the saved run's (``--compare`` without ``--cases``), else the
    headline cases, filtered by ``--cases``: an exact key selects its case; any other
    pattern selects among the headline cases, or among all the suite's cases when it
    matches no headline case."""
    threads = args.threads or THREADS
    headline = headline_cases(args.quick, threads)
    suite = [c for c in suite_cases() if c.threads in threads]
    known = {c.key: c for c in headline_cases(False, threads) + suite}
    if saved is not None and args.cases is None:
        keys = dict.fromkeys(c["key"] for c in saved["cases"])
        return [known[k] for k in keys if k in known]
    if not args.cases:
        return headline
    chosen: dict[str, Case] = {}
    for pattern in (p.strip() for p in args.cases.split(",")):
        if pattern:
            if pattern in known:      # an exact key: that case only
                hits = [known[pattern]]
            else:
                hits = ([c for c in headline if _matches(c, pattern)]
                        or [c for c in suite if _matches(c, pattern)])
            for case in hits:
                chosen.setdefault(case.key, case)
    # Keep the groups' cases adjacent, in headline-then-suite order.
    order = {key: i for i, key in enumerate(dict.fromkeys(
        [c.key for c in headline] + list(known)))}
    return sorted(chosen.values(), key=lambda c: order[c.key])


def run(args: argparse.Namespace) -> int:
    """Run ``fastloss bench`` with parsed arguments; the exit status (0 fine, 1 a ratio
    regressed beyond the tolerance, 2 a usage error)."""
    saved = None
    if args.compare is not None:
        try:
            saved = load_run(args.compare)
        except ValueError as exc:
            print(f"fastloss bench: error: --compare: {exc}", file=sys.stderr)
            return 2
    cases = _select(args, saved)
    if not cases:
        print("fastloss bench: error: no case matches "
              f"{args.cases or 'the saved run'!r}; see --list", file=sys.stderr)
        return 2
    if args.list:
        for case in cases:
            print(case.key)
        return 0
    torch = None if args.no_torch else load_torch()
    env = environment(torch)
    mode = "quick" if args.quick else "full"
    print(f"fastloss {fastloss.__version__}; simd {env['build'].get('simd')}"
          f"; openmp {'on' if env['build'].get('openmp') else 'off'}; "
          f"{env['machine']['cpu']} ({env['machine']['cpus']} CPUs); numpy {np.__version__}; "
          f"torch {env['torch'] or 'not used'}")
    print("ratios: median over rounds of peer time / fastloss time in the same round "
          "(above 1: fastloss faster); vs copy = fraction of the bandwidth of a copy of "
          "the same bytes; GB/s counts the N x C arrays read and written\n", flush=True)
    columns = [p for p in RATIO_PEERS
               if any(p in peer_names(c, torch is not None) for c in cases)]
    table = _Table(columns, sys.stdout)
    groups: dict[tuple[str, str, tuple[int, int]], list[Case]] = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case)
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    # The peers set PyTorch's threads per call; the setting found here is restored.
    with torch_threads(torch, torch.get_num_threads() if torch is not None else 1):
        for group in groups.values():
            for result in time_group(group, torch, mode, args.rounds):
                results.append(result)
                table.row(result)
    print(f"\n{len(results)} cases in {time.perf_counter() - start:.1f} s", flush=True)
    if args.json_path is not None:
        document = {
            "schema": JSON_SCHEMA, "version": fastloss.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **env,
            "settings": {"quick": args.quick, "rounds": args.rounds,
                         "ratio": "median over rounds of peer time / fastloss time"},
            "cases": results,
        }
        args.json_path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json_path}")
    if saved is None:
        return 0
    lines, failed = compare(saved, results, args.tolerance)
    print(f"\ncompared with {args.compare} (tolerance {args.tolerance:.0%}):")
    print("\n".join(lines))
    regressions = sum(line.startswith("REGRESSION") for line in lines)
    print(f"{regressions} ratio(s) fell by more than {args.tolerance:.0%}" if failed
          else "no ratio fell by more than the tolerance")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``fastloss bench`` as a function: parse ``argv`` and return the exit status."""
    parser = configure_parser(argparse.ArgumentParser(prog="fastloss bench"))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:     # --help, or a usage error (argparse prints it)
        return exc.code if isinstance(exc.code, int) else 2
    return run(args)
