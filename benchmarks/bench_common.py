"""Cases and peers shared by the pytest-benchmark suite and ``ratios.py``.

Both front ends must time exactly the same callables on the same inputs, or the ratios
printed by ``ratios.py`` would not describe the suite; so the peers are built here once.
Every peer is a zero-argument callable whose inputs and output buffers already exist and
have been touched, so that a timed call measures the computation and not page faults.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType

import numpy as np

import fastloss
from fastloss import reference

SEED = 20240611
DTYPES: tuple[str, ...] = ("float32", "float64")
CE_SHAPES: tuple[tuple[int, int], ...] = ((4096, 1000), (1024, 32000))
SOFTMAX_SHAPE: tuple[int, int] = (4096, 1000)
SOFTMAX_DTYPE = "float32"
THREADS: tuple[int, ...] = (1, 2)
SOFTMAX_FUNCS: tuple[str, ...] = ("softmax", "log_softmax", "logsumexp")

# "fastloss": fused loss+grad into a preallocated grad_out (the steady state of a training
# loop); "fastloss-alloc": return_grad=True, which allocates the gradient on every call;
# "copy": np.copyto of the logits into a same-size buffer, i.e. the N*C read + N*C write
# the fused kernel cannot avoid, the yardstick for its bandwidth.
CE_PEERS: tuple[str, ...] = ("fastloss", "fastloss-alloc", "copy", "numpy", "torch")
SOFTMAX_PEERS: tuple[str, ...] = ("fastloss", "numpy", "torch")

Callback = Callable[[], object]


def load_torch() -> ModuleType | None:
    """PyTorch if importable: it is an optional peer, never a requirement."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@dataclass(frozen=True)
class Inputs:
    """One case's arrays, created once: logits, targets and a same-size scratch buffer.

    ``scratch`` serves as ``grad_out``/``out`` and as the destination of the copy peer;
    sharing it is safe because peers run one at a time, and it halves the memory of the
    1024x32000 float64 case.
    """

    logits: np.ndarray
    target: np.ndarray
    scratch: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        n, c = self.logits.shape
        return n, c


InputsGetter = Callable[[str, tuple[int, int]], Inputs]
"""Type of the ``bench_inputs`` fixture: (dtype, (N, C)) -> cached :class:`Inputs`."""


def make_inputs(dtype: str, n: int, c: int) -> Inputs:
    """Logits ~ 3 * N(0, 1) and uniform targets from a fixed seed, all pages touched.

    The seed depends on the shape only, so float32 and float64 see the same values.
    """
    rng = np.random.default_rng([SEED, n, c])
    logits = (rng.standard_normal((n, c)) * 3.0).astype(dtype)
    target = rng.integers(0, c, size=n, dtype=np.intp)
    scratch = np.empty_like(logits)
    scratch.fill(0.0)  # fault the pages in now rather than in the first timed round
    return Inputs(logits=logits, target=target, scratch=scratch)


# cross_entropy's options, on float32 4096x1000 (issue: all options within 1.3x of plain).
# "options": class weights, 10% ignored rows, label smoothing (PyTorch has all three);
# "all-options" adds sample weights and z-loss (PyTorch has neither, so no torch peer);
# "soft*": probability targets instead of classes (ignore_index does not apply).
OPTION_VARIANTS: tuple[str, ...] = ("plain", "options", "all-options", "soft",
                                    "soft-all-options")
OPTION_SHAPE: tuple[int, int] = (4096, 1000)
OPTION_DTYPE = "float32"
TORCH_VARIANTS = frozenset({"plain", "options", "soft"})


@dataclass(frozen=True)
class OptionInputs:
    """A case's logits with every kind of target and weight the options need."""

    logits: np.ndarray
    classes: np.ndarray         # with 10% ignore_index (-100)
    probabilities: np.ndarray   # rows sum to 1
    class_weight: np.ndarray
    sample_weight: np.ndarray
    scratch: np.ndarray


def make_option_inputs(dtype: str, n: int, c: int) -> OptionInputs:
    base = make_inputs(dtype, n, c)
    rng = np.random.default_rng([SEED, n, c, 1])
    classes = base.target.copy()
    classes[rng.random(n) < 0.1] = -100
    raw = rng.random((n, c)).astype(dtype)
    return OptionInputs(
        logits=base.logits, classes=classes, probabilities=raw / raw.sum(1, keepdims=True),
        class_weight=rng.random(c) + 0.5, sample_weight=rng.random(n) * 2,
        scratch=base.scratch,
    )


def variant_arguments(variant: str, inputs: OptionInputs,
                      plain_target: np.ndarray) -> tuple[np.ndarray, dict[str, object]]:
    """(target, keyword arguments) of fastloss.cross_entropy for one option variant."""
    soft = variant.startswith("soft")
    target = inputs.probabilities if soft else inputs.classes
    kwargs: dict[str, object] = {}
    if variant == "plain":
        return plain_target, kwargs
    if "options" in variant:
        kwargs.update(weight=inputs.class_weight, label_smoothing=0.1)
    if "all-options" in variant:
        kwargs.update(sample_weight=inputs.sample_weight, z_loss=1e-4)
    return target, kwargs


def option_peer(variant: str, peer: str, inputs: OptionInputs, plain_target: np.ndarray,
                n_threads: int) -> Callback:
    """The callable that times ``peer`` on one option variant (loss and gradient)."""
    x, buf = inputs.logits, inputs.scratch
    target, kwargs = variant_arguments(variant, inputs, plain_target)
    if peer == "fastloss":
        return lambda: fastloss.cross_entropy(x, target, n_threads=n_threads, grad_out=buf,
                                              **kwargs)
    if peer == "numpy":
        return lambda: reference.cross_entropy(x, target, return_grad=True, **kwargs)
    if peer == "torch" and variant in TORCH_VARIANTS:
        torch = load_torch()
        if torch is None:
            raise RuntimeError("torch is not installed")
        leaf = torch.from_numpy(x).requires_grad_(True)
        torch_target = torch.from_numpy(target)
        torch_target = torch_target if variant.startswith("soft") else torch_target.long()
        torch_kwargs = dict(kwargs)
        if "weight" in torch_kwargs:
            torch_kwargs["weight"] = torch.from_numpy(inputs.class_weight.astype(x.dtype))
        ce = torch.nn.functional.cross_entropy

        def run() -> None:
            leaf.grad = None
            ce(leaf, torch_target, **torch_kwargs).backward()

        return run
    raise ValueError(f"no {peer!r} peer for variant {variant!r}")


def group_name(func: str, dtype: str, shape: tuple[int, int], n_threads: int) -> str:
    """pytest-benchmark group of one case, e.g. ``cross_entropy-float32-4096x1000-t2``."""
    return f"{func}-{dtype}-{shape[0]}x{shape[1]}-t{n_threads}"


def moved_bytes(func: str, inputs: Inputs) -> int:
    """Bytes a kernel must move at least: read the logits, write a same-size result
    (logsumexp only reads; its N outputs are negligible)."""
    factor = 1 if func == "logsumexp" else 2
    return factor * inputs.logits.nbytes


@contextlib.contextmanager
def torch_threads(n_threads: int) -> Iterator[None]:
    """Run PyTorch with n_threads intra-op threads, restoring the previous setting."""
    torch = load_torch()
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _torch_cross_entropy(inputs: Inputs) -> Callback:
    """Forward + backward on a leaf sharing the logits' memory (no copy), like a training
    step's loss; ``.grad`` is dropped each round so that PyTorch allocates it as it would."""
    torch = load_torch()
    if torch is None:
        raise RuntimeError("torch is not installed")
    x = torch.from_numpy(inputs.logits).requires_grad_(True)
    y = torch.from_numpy(inputs.target).long()
    ce = torch.nn.functional.cross_entropy

    def run() -> None:
        x.grad = None
        ce(x, y).backward()

    return run


def cross_entropy_peer(peer: str, inputs: Inputs, n_threads: int) -> Callback:
    """The callable that times ``peer`` on one cross-entropy case (loss and gradient).

    PyTorch's thread count is process-global: wrap calls in :func:`torch_threads`.
    """
    x, y, buf = inputs.logits, inputs.target, inputs.scratch
    if peer == "fastloss":
        return lambda: fastloss.cross_entropy(x, y, n_threads=n_threads, grad_out=buf)
    if peer == "fastloss-alloc":
        return lambda: fastloss.cross_entropy(x, y, n_threads=n_threads, return_grad=True)
    if peer == "copy":
        return lambda: np.copyto(buf, x)
    if peer == "numpy":
        return lambda: reference.cross_entropy(x, y, return_grad=True)
    if peer == "torch":
        return _torch_cross_entropy(inputs)
    raise ValueError(f"unknown cross_entropy peer {peer!r}")


def softmax_peer(func: str, peer: str, inputs: Inputs, n_threads: int) -> Callback:
    """The callable that times ``peer`` computing ``func`` along the last axis."""
    if func not in SOFTMAX_FUNCS:
        raise ValueError(f"unknown function {func!r}")
    x = inputs.logits
    if peer == "fastloss":
        out = inputs.scratch if func != "logsumexp" else np.zeros(x.shape[0], x.dtype)
        kernel = getattr(fastloss, func)
        return lambda: kernel(x, -1, out=out, n_threads=n_threads)
    if peer == "numpy":
        ref = getattr(reference, func)
        return lambda: ref(x, -1)
    if peer == "torch":
        torch = load_torch()
        if torch is None:
            raise RuntimeError("torch is not installed")
        t = torch.from_numpy(x)
        op = getattr(torch, func)
        return lambda: op(t, dim=-1)
    raise ValueError(f"unknown softmax peer {peer!r}")


def _is_large(shape: tuple[int, int]) -> bool:
    return shape[0] * shape[1] > 10_000_000


def rounds_for(peer: str, shape: tuple[int, int]) -> int:
    """Timed rounds per peer: few for the slow NumPy reference on the large shape (one to
    several seconds a call), more for the fast peers so their medians settle on a noisy
    machine, while the whole suite stays near three minutes on two cores."""
    if peer == "numpy":
        return 5 if _is_large(shape) else 15
    return 15 if _is_large(shape) else 30


def warmup_rounds_for(peer: str, shape: tuple[int, int]) -> int:
    """Untimed rounds first: they absorb lazy initialisation (PyTorch's autograd engine and
    thread pool, OpenMP's team). The NumPy reference has none worth a multi-second call."""
    return 0 if peer == "numpy" and _is_large(shape) else 1


# binary_cross_entropy_with_logits on 16M float32 elements, loss and gradient (mean).
# "fastloss": fused, into a preallocated grad_out; "copy": np.copyto of the logits into a
# same-size buffer (read + write of one array: the kernel must also read the targets, so
# it moves 1.5 times the copy's bytes); "numpy": the float64 reference; "torch": forward
# and backward through autograd.
ELEMENTWISE_SHAPE: tuple[int, int] = (16384, 1024)
ELEMENTWISE_DTYPE = "float32"
ELEMENTWISE_PEERS: tuple[str, ...] = ("fastloss", "copy", "numpy", "torch")


@dataclass(frozen=True)
class ElementwiseInputs(Inputs):
    """Inputs whose target holds labels of the logits' shape (0/1, in their dtype)."""

    @property
    def moved_bytes(self) -> int:
        """What the fused kernel must move: read logits and targets, write the gradient."""
        return self.logits.nbytes + self.target.nbytes + self.scratch.nbytes


def make_elementwise_inputs(dtype: str, n: int, c: int) -> ElementwiseInputs:
    """Logits ~ 3 * N(0, 1) and fair 0/1 labels from a fixed seed, all pages touched."""
    rng = np.random.default_rng([SEED, n, c, 2])
    logits = (rng.standard_normal((n, c)) * 3.0).astype(dtype)
    target = (rng.random((n, c)) < 0.5).astype(dtype)
    scratch = np.empty_like(logits)
    scratch.fill(0.0)
    return ElementwiseInputs(logits=logits, target=target, scratch=scratch)


def bce_with_logits_peer(peer: str, inputs: ElementwiseInputs, n_threads: int) -> Callback:
    """The callable that times ``peer`` on binary_cross_entropy_with_logits (loss and
    gradient, mean reduction). PyTorch's threads: wrap calls in :func:`torch_threads`."""
    x, y, buf = inputs.logits, inputs.target, inputs.scratch
    if peer == "fastloss":
        return lambda: fastloss.binary_cross_entropy_with_logits(x, y, n_threads=n_threads,
                                                                 grad_out=buf)
    if peer == "copy":
        return lambda: np.copyto(buf, x)
    if peer == "numpy":
        return lambda: reference.binary_cross_entropy_with_logits(x, y, return_grad=True)
    if peer == "torch":
        torch = load_torch()
        if torch is None:
            raise RuntimeError("torch is not installed")
        leaf = torch.from_numpy(x).requires_grad_(True)
        labels = torch.from_numpy(y)
        bce = torch.nn.functional.binary_cross_entropy_with_logits

        def run() -> None:
            leaf.grad = None
            bce(leaf, labels).backward()

        return run
    raise ValueError(f"unknown binary_cross_entropy_with_logits peer {peer!r}")
