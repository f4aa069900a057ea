"""Every SIMD build of the row kernels (baseline, AVX2+FMA, AVX-512) against the baseline
build and the NumPy reference.

The row kernels' wider builds fuse multiplies and adds, so they may differ from the
baseline in the last bits; each build must stay within the accuracy bar of the speed
issue: float32 losses within 1e-6 relative and gradients within 1e-6 absolute of the
float64 reference, float64 within 1e-14, for C up to 262144. CI also runs the row-kernel
test files under each FASTLOSS_SIMD (see .ci/run).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close, simd_builds

import fastloss
from fastloss import _dispatch, reference
from fastloss._kernels import _kernels

BUILDS = ["baseline", "avx2", "avx512"]
# (N, C): SIMD tails (C not a multiple of 16 or 8), a row of several 2048-element chunks
# with a partial one, and the largest C the bar names.
SHAPES = [(5, 1), (4, 2), (3, 17), (6, 1000), (2, 4099), (2, 262144)]
BAR = {np.dtype(np.float32): (1e-6, 1e-6), np.dtype(np.float64): (1e-14, 1e-14)}


@pytest.fixture(params=BUILDS)
def build(request, use_build):
    if request.param not in simd_builds():
        pytest.skip(f"this CPU or build has no {request.param} kernels")
    use_build(request.param)
    return request.param


def _logits(rng, shape, dtype):
    x = rng.standard_normal(shape) * 4.0
    if shape[1] > 2:
        x[:, 1] = -np.inf                # masked classes
        x[0, 2] = 1e4                    # a dominant class: large logits lose nothing
    return x.astype(dtype)


def _within_bar(got, expected, dtype, what, *, absolute=False):
    rel, abs_ = BAR[np.dtype(dtype)]
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    err = np.abs(got - expected)
    bound = abs_ if absolute else rel * np.abs(expected) + 1e-300
    assert (err <= bound).all(), f"{what}: max error {err.max():.3g} over the bar"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_cross_entropy_meets_the_accuracy_bar(rng, dtype, build, shape):
    x = _logits(rng, shape, dtype)
    target = rng.integers(0, shape[1], shape[0])
    if shape[1] > 2:
        target[1 % shape[0]] = 0
    loss, grad = fastloss.cross_entropy(x, target, reduction="none", return_grad=True)
    ref_loss, ref_grad = reference.cross_entropy(x.astype(np.float64), target,
                                                 reduction="none", return_grad=True)
    _within_bar(loss, ref_loss, dtype, f"{build} loss")
    _within_bar(grad, ref_grad, dtype, f"{build} grad", absolute=True)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_softmax_family_matches_reference(rng, dtype, build, shape):
    x = _logits(rng, shape, dtype)
    x64 = x.astype(np.float64)
    assert_close(fastloss.softmax(x), reference.softmax(x64), dtype, atol=1e-12,
                 what=f"{build} softmax")
    assert_close(fastloss.log_softmax(x), reference.log_softmax(x64), dtype, atol=1e-12,
                 what=f"{build} log_softmax")
    assert_close(fastloss.logsumexp(x), reference.logsumexp(x64), dtype,
                 what=f"{build} logsumexp")


@pytest.mark.parametrize("n_classes", range(1, 17))
def test_few_classes_softmax_family_for_every_count(rng, dtype, build, n_classes):
    """softmax, log_softmax and logsumexp over each count of few classes (each has its own
    compiled copy or the loops), in partial blocks, with masked classes and rows whose max
    is negative (float32 logsumexp: the double lanes)."""
    x = _logits(rng, (37, n_classes), dtype)
    x[::3] -= np.asarray(12.0, dtype=dtype)
    x64 = x.astype(np.float64)
    assert_close(fastloss.softmax(x), reference.softmax(x64), dtype, atol=1e-12,
                 what=f"{build} softmax")
    assert_close(fastloss.log_softmax(x), reference.log_softmax(x64), dtype, atol=1e-12,
                 what=f"{build} log_softmax")
    assert_close(fastloss.logsumexp(x, axis=1), reference.logsumexp(x64), dtype,
                 atol=1e-15, what=f"{build} logsumexp")


@pytest.mark.parametrize("shape", [(6, 1000), (3, 4099)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_build_agrees_with_the_baseline(rng, dtype, build, shape, use_build):
    """A few ulps apart (FMA), or a small absolute difference where a gradient entry
    cancels (p_y - 1); the same non-finite values in the same places."""
    x = _logits(rng, shape, dtype)
    x[2, 5] = np.nan
    teacher = _logits(rng, shape, dtype)
    calls = {
        "cross_entropy": lambda: fastloss.cross_entropy(
            x, np.arange(shape[0]) % shape[1], reduction="none", return_grad=True,
            label_smoothing=0.1),
        "soft": lambda: fastloss.cross_entropy(
            x, reference.softmax(teacher.astype(np.float64)).astype(dtype),
            reduction="none", return_grad=True),
        "kl_div_with_logits": lambda: fastloss.kl_div_with_logits(
            x, teacher, teacher_kind="logits", temperature=2.0, reduction="none",
            return_grad=True),
        "entropy_from_logits": lambda: fastloss.entropy_from_logits(x, return_grad=True),
        "softmax": lambda: (fastloss.softmax(x),),
        "log_softmax": lambda: (fastloss.log_softmax(x),),
        "logsumexp": lambda: (fastloss.logsumexp(x),),
    }
    mine = {name: call() for name, call in calls.items()}
    use_build("baseline")
    base = {name: call() for name, call in calls.items()}
    ulps, atol = (8, 1e-8) if dtype == np.float32 else (64, 1e-15)
    for name in calls:
        for got, want in zip(mine[name], base[name], strict=True):
            got, want = np.asarray(got), np.asarray(want)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
            finite = np.isfinite(want)
            np.testing.assert_array_equal(got[~finite & ~np.isnan(want)],
                                          want[~finite & ~np.isnan(want)], err_msg=name)
            scale = np.maximum(np.abs(want[finite]), np.finfo(dtype).tiny)
            spacing = np.spacing(scale.astype(dtype)).astype(np.float64)
            diff = np.abs(got[finite].astype(np.float64) - want[finite])
            assert (diff <= ulps * spacing + atol).all(), (
                f"{build} {name}: {diff.max():.3g} from the baseline")


@pytest.mark.parametrize("n_classes", [300, 4099])
@pytest.mark.parametrize("row_range", ["max wider", "logits wider", "wide"])
def test_float32_rows_keep_the_rounding_error_of_x_minus_max(rng, build, n_classes,
                                                             row_range):
    """Rows whose x - max rounds in float32 by up to 2e-6 relative in exp: the float32
    kernels carry that rounding error into exp, found by the subtraction the row's range
    allows (Fast2Sum where every |x| stays below max's binade or above |max|, TwoSum
    otherwise), so every kind of row stays within the bar. The loss of these rows is
    the sum of the small terms (the target is the max), where it shows."""
    n_rows = 64
    if row_range == "logits wider":      # max <= 0: every |x| >= |max|
        top = -rng.uniform(0.01, 0.99, n_rows)
    else:                                # max in [32, 64), every x in (-64, 64)
        top = rng.uniform(32.0, 60.0, n_rows)
    # One value for the rest of each row: its rounding error does not average out.
    rest = top - 33.0 - rng.uniform(0.0, 1.0, n_rows)
    x = np.repeat(rest[:, None], n_classes, axis=1)
    x[:, 0] = top
    if row_range == "wide":
        x[:, -1] = -1e3                   # below -64: neither operand is known wider
    x = x.astype(np.float32)
    target = np.zeros(n_rows, dtype=np.intp)
    loss = fastloss.cross_entropy(x, target, reduction="none")
    ref = reference.cross_entropy(x.astype(np.float64), target, reduction="none")
    # The rounded float32 x - max alone misses the bar on some of these rows.
    rounded = (x - x.max(axis=1, keepdims=True)).astype(np.float64)
    naive = np.log1p(np.exp(rounded[:, 1:]).sum(axis=1))
    assert (np.abs(naive - ref) > 1e-6 * ref).any()
    _within_bar(loss, ref, np.float32, f"{build} {row_range} loss")


@pytest.fixture
def stream_rows():
    """A function that sets, in every build, the gradient size from which rows are
    streamed (streamed_rows_loop), restored after the test."""
    previous = _kernels._set_stream_min_bytes(2**62)
    yield _kernels._set_stream_min_bytes
    _kernels._set_stream_min_bytes(previous)


@pytest.mark.parametrize("n_classes", [2049, 4099, 6001])
@pytest.mark.parametrize("options", ["plain", "weights", "z_loss"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_streamed_rows_give_the_row_kernel_bits(rng, dtype, build, stream_rows, n_classes,
                                                options, reduction):
    """Rows whose second pass is streamed during the next row's first: the losses and
    gradients of the row kernel, bit for bit, for 1-3 threads. With ignored rows (they
    drain the waiting row first; the last row too), targets at both ends of a row and of
    a chunk, gradient rows that start at every alignment (an odd C and a gradient buffer
    one element off), masked and huge logits, and a row of NaN."""
    n_rows = 37
    x = _logits(rng, (n_rows, n_classes), dtype)
    x[9] = np.nan
    target = rng.integers(0, n_classes, n_rows)
    target[[3, 4, n_rows - 1]] = -100
    target[[5, 6, 7, 8]] = [0, n_classes - 1, 2047, 2048]
    kwargs = {"reduction": reduction}
    if options == "weights":
        kwargs["weight"] = rng.uniform(0.5, 2.0, n_classes)
        kwargs["sample_weight"] = rng.uniform(0.0, 2.0, n_rows)
        kwargs["sample_weight"][10] = 0.0
    elif options == "z_loss":
        kwargs["z_loss"] = 1e-3

    def run(n_threads):
        grad = np.empty(n_rows * n_classes + 1, dtype)[1:].reshape(n_rows, n_classes)
        loss = fastloss.cross_entropy(x, target, grad_out=grad, n_threads=n_threads,
                                      **kwargs)
        return np.asarray(loss[0] if isinstance(loss, tuple) else loss), grad

    expected = run(1)
    stream_rows(0)
    for n_threads in (1, 2, 3):
        loss, grad = run(n_threads)
        assert loss.tobytes() == expected[0].tobytes(), f"{build} loss, {n_threads}"
        assert grad.tobytes() == expected[1].tobytes(), f"{build} gradient, {n_threads}"


def test_streamed_rows_meet_the_accuracy_bar(rng, dtype, build, stream_rows):
    """Streamed rows against the reference (the row kernel's bits are checked above)."""
    stream_rows(0)
    x = _logits(rng, (6, 5000), dtype)
    target = rng.integers(0, 5000, 6)
    loss, grad = fastloss.cross_entropy(x, target, reduction="none", return_grad=True)
    ref_loss, ref_grad = reference.cross_entropy(x.astype(np.float64), target,
                                                 reduction="none", return_grad=True)
    _within_bar(loss, ref_loss, dtype, f"{build} loss")
    _within_bar(grad, ref_grad, dtype, f"{build} grad", absolute=True)


def test_reduced_loss_is_the_same_for_any_thread_count(rng, dtype, build):
    x = _logits(rng, (300, 1001), dtype)
    target = rng.integers(0, 1001, 300)
    losses = [fastloss.cross_entropy(x, target, n_threads=n) for n in (1, 2, 3)]
    assert losses[0].tobytes() == losses[1].tobytes() == losses[2].tobytes()


@pytest.mark.parametrize("n_classes", [2, 10, 16])
def test_few_classes_reduce_the_same_for_any_thread_count(rng, dtype, build, n_classes):
    """The blocks of rows of few classes, summed by fixed spans of rows: one loss bits
    for any thread count, with and without the gradient, and equal to the reference."""
    x = _logits(rng, (20011, n_classes), dtype)
    target = rng.integers(0, n_classes, 20011)
    if n_classes > 2:
        target[target == 1] = 0          # the masked class: an infinite loss
    target[::7] = -100
    losses = [fastloss.cross_entropy(x, target, n_threads=n) for n in (1, 2, 3)]
    _, grad = fastloss.cross_entropy(x, target, n_threads=2, return_grad=True)
    with_grad = fastloss.cross_entropy(x, target, n_threads=2, grad_out=np.empty_like(x))[0]
    assert len({loss.tobytes() for loss in [*losses, with_grad]}) == 1
    ref_loss, ref_grad = reference.cross_entropy(x.astype(np.float64), target,
                                                 return_grad=True)
    _within_bar(losses[0], ref_loss, dtype, f"{build} loss")
    _within_bar(grad, ref_grad, dtype, f"{build} grad", absolute=True)


def _few_class_rows(rng, n, n_classes, dtype):
    """n rows with the blocks' edge cases: a target alone at the max (the others -inf:
    its gradient is a zero whose sign the formula fixes), a tie, a dominant 1e4, and
    ignored rows."""
    x = rng.standard_normal((n, n_classes)) * 4.0
    target = rng.integers(0, n_classes, n)
    x[0] = -np.inf
    x[0, target[0]] = 0.0
    x[2::11] = 1.5
    x[3::13, 0] = 1e4
    target[1::7] = -100
    return x.astype(dtype), target


@pytest.mark.parametrize("n_classes", [2, 3, 10])
def test_few_classes_without_options_give_the_bits_of_unit_weights(rng, dtype, build,
                                                                   n_classes):
    """Without options the block kernels drop the options' terms at compile time (at
    C = 2 they also take four blocks a call and sum its losses themselves): the same bits
    as class and sample weights of 1, which keep them, for the row losses, the reduced
    loss and the gradient, over rows that fill a call's blocks partly or not at all."""
    for n in (1, 5, 16, 17, 40, 64, 65, 131, 3001):
        x, target = _few_class_rows(rng, n, n_classes, dtype)
        ones = {"weight": np.ones(n_classes), "sample_weight": np.ones(n)}
        for reduction in ("none", "mean", "sum"):
            plain = fastloss.cross_entropy(x, target, reduction=reduction,
                                           return_grad=True)
            weighted = fastloss.cross_entropy(x, target, reduction=reduction,
                                              return_grad=True, **ones)
            for got, want, what in zip(plain, weighted, ("loss", "gradient"), strict=True):
                assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), (
                    f"{build} {what}, {reduction}, {n} rows")
        loss, grad = fastloss.cross_entropy(x, target, reduction="none", return_grad=True)
        ref_loss, ref_grad = reference.cross_entropy(x.astype(np.float64), target,
                                                     reduction="none", return_grad=True)
        _within_bar(loss, ref_loss, dtype, f"{build} loss, {n} rows")
        _within_bar(grad, ref_grad, dtype, f"{build} grad, {n} rows", absolute=True)


@pytest.mark.parametrize("n_classes", [17, 100, 2048])
@pytest.mark.parametrize("options", ["plain", "all"])
def test_batched_rows_match_the_row_kernel(rng, dtype, build, n_classes, options):
    """Rows of 17 to 2048 classes with class targets go in batches of 16, phase by phase
    (ce_rows_batch): the same bits in the class-first layout (axis 0: tiles of 16
    gathered rows, batched from the first row, where the class-last layout batches from
    each span's), within the bar of the reference with every option, in place too, and
    one loss bits for any thread count. (The batches do ce_row's operations: they gave
    the same bits as ce_row when the class-first layout still took it.)"""
    n = 203                              # 12 batches and a partial one
    x = _logits(rng, (n, n_classes), dtype)
    target = rng.integers(0, n_classes, n)
    target[target == 1] = 0              # the masked class: an infinite loss
    target[::7] = -100
    kw: dict = {}
    if options == "all":
        sample_weight = rng.random(n)
        sample_weight[::9] = 0.0
        kw = dict(weight=rng.random(n_classes) + 0.5, z_loss=1e-3,
                  sample_weight=sample_weight)
    rows, lse = fastloss.cross_entropy(x, target, reduction="none", return_lse=True, **kw)
    rows_t, lse_t = fastloss.cross_entropy(np.ascontiguousarray(x.T), target, axis=0,
                                           reduction="none", return_lse=True, **kw)
    assert rows.tobytes() == rows_t.tobytes() and lse.tobytes() == lse_t.tobytes()
    loss, grad = fastloss.cross_entropy(x, target, return_grad=True, **kw)
    _, grad_t = fastloss.cross_entropy(np.ascontiguousarray(x.T), target, axis=0,
                                       return_grad=True, **kw)
    assert grad.tobytes() == np.ascontiguousarray(grad_t.T).tobytes()
    buffer = x.copy()
    in_place, _ = fastloss.cross_entropy(buffer, target, grad_out=buffer, **kw)
    assert in_place == loss and buffer.tobytes() == grad.tobytes()
    losses = [fastloss.cross_entropy(x, target, n_threads=k, **kw) for k in (1, 2, 3)]
    assert len({v.tobytes() for v in [*losses, loss]}) == 1
    ref_rows, ref_lse = reference.cross_entropy(x.astype(np.float64), target,
                                                reduction="none", return_lse=True, **kw)
    ref_loss, ref_grad = reference.cross_entropy(x.astype(np.float64), target,
                                                 return_grad=True, **kw)
    _within_bar(rows, ref_rows, dtype, f"{build} row losses")
    _within_bar(lse, ref_lse, dtype, f"{build} logsumexp")
    _within_bar(loss, ref_loss, dtype, f"{build} loss")
    _within_bar(grad, ref_grad, dtype, f"{build} grad", absolute=True)


@pytest.mark.parametrize("n_classes", [5, 17, 100, 2048])
@pytest.mark.parametrize("kind", ["smoothing", "probs", "kl_probs", "kl_log_probs",
                                  "kl_logits"])
def test_batched_target_rows_match_the_row_kernel(rng, dtype, build, n_classes, kind):
    """Label smoothing, probability targets and distillation from every kind of teacher
    take the batches too where the blocks do not serve them: the same bits in the
    class-first layout (batched by tiles), within the bar of the reference."""
    n = 203
    x = _logits(rng, (n, n_classes), dtype)
    if kind == "smoothing":
        x[np.isinf(x)] = -30.0           # smoothing puts mass on every class
    p = rng.random((n, n_classes))
    p[::4, 0] = 0.0
    if n_classes > 2:
        p[:, 1] = 0.0                    # no mass on the masked class
    p = p / p.sum(axis=1, keepdims=True)
    sample_weight = rng.random(n)
    sample_weight[::9] = 0.0
    if kind in ("smoothing", "probs"):
        target = rng.integers(0, n_classes, n) if kind == "smoothing" else p.astype(dtype)
        kw = dict(label_smoothing=0.1 if kind == "smoothing" else 0.0, z_loss=1e-3,
                  weight=rng.random(n_classes) + 0.5, sample_weight=sample_weight)

        def run(logits, axis, **extra):
            tt = target if kind == "smoothing" else (
                target if axis == -1 else np.ascontiguousarray(target.T))
            return fastloss.cross_entropy(logits, tt, axis=axis, **kw, **extra)

        ref = reference.cross_entropy(
            x.astype(np.float64),
            target if kind == "smoothing" else target.astype(np.float64),
            return_grad=True, reduction="none", **kw)
    else:
        teacher_kind = kind[3:]
        with np.errstate(divide="ignore"):
            target = {"probs": p, "log_probs": np.log(p),
                      "logits": np.log(p) * 2.0 + 1.0}[teacher_kind].astype(dtype)

        def run(logits, axis, **extra):
            tt = target if axis == -1 else np.ascontiguousarray(target.T)
            return fastloss.kl_div_with_logits(logits, tt, axis=axis,
                                               teacher_kind=teacher_kind, temperature=2.0,
                                               **extra)

        ref = reference.kl_div_with_logits(x.astype(np.float64), target.astype(np.float64),
                                           teacher_kind=teacher_kind, temperature=2.0,
                                           return_grad=True, reduction="none")
    rows, grad = run(x, -1, reduction="none", return_grad=True)
    rows_t, grad_t = run(np.ascontiguousarray(x.T), 0, reduction="none", return_grad=True)
    assert rows.tobytes() == rows_t.tobytes()
    assert grad.tobytes() == np.ascontiguousarray(grad_t.T).tobytes()
    losses = [run(x, -1, n_threads=k) for k in (1, 2, 3)]
    assert len({np.asarray(v).tobytes() for v in losses}) == 1
    # relative to the terms whose difference a KL is: a cross-entropy and an entropy of
    # up to log C each, times T^2 = 4 (the reference rounds at that scale too)
    scale = np.abs(ref[0]) + (4.0 if kind.startswith("kl") else 1.0) * np.log(n_classes) + 1
    _within_bar(np.asarray(rows) / scale, ref[0] / scale, dtype, f"{build} {kind} rows",
                absolute=True)
    _within_bar(grad, ref[1], dtype, f"{build} {kind} grad", absolute=True)


@pytest.mark.parametrize("n_classes", [17, 100, 2048])
def test_batched_softmax_family_is_row_by_row(rng, dtype, build, n_classes):
    """softmax, log_softmax, logsumexp and entropy_from_logits take rows of 17 to 2048
    classes in batches of 16 (batch_row_stats): each row's result has the same bits
    whichever batch it is in and for any thread count, and entropy_from_logits in place
    (row by row, from a copy of the row) the same bits as into a new array."""
    x = _logits(rng, (37, n_classes), dtype)
    kernels = {   # each row's results, as a tuple of arrays
        "softmax": lambda a, n: (fastloss.softmax(a, n_threads=n),),
        "log_softmax": lambda a, n: (fastloss.log_softmax(a, n_threads=n),),
        "logsumexp": lambda a, n: (fastloss.logsumexp(a, axis=-1, n_threads=n),),
        "entropy_from_logits": lambda a, n: fastloss.entropy_from_logits(
            a, return_grad=True, n_threads=n),
    }
    for name, kernel in kernels.items():
        whole = kernel(x, 1)
        for n_threads in (2, 3):
            for got, want in zip(kernel(x, n_threads), whole, strict=True):
                assert np.asarray(got).tobytes() == np.asarray(want).tobytes(), name
        for lo, hi in [(0, 1), (5, 6), (3, 22), (20, 37)]:
            for got, want in zip(kernel(x[lo:hi], 1), whole, strict=True):
                assert np.asarray(got).tobytes() == np.asarray(want)[lo:hi].tobytes(), name
    h, grad = fastloss.entropy_from_logits(x, return_grad=True)
    buffer = x.copy()
    h_in_place, grad_in_place = fastloss.entropy_from_logits(buffer, return_grad=True,
                                                             grad_out=buffer)
    assert grad_in_place is buffer
    assert h_in_place.tobytes() == h.tobytes() and buffer.tobytes() == grad.tobytes()
    ref_h, ref_grad = reference.entropy_from_logits(x.astype(np.float64), return_grad=True)
    scale = np.abs(ref_h) + 1e-3
    _within_bar(np.asarray(h) / scale, ref_h / scale, dtype, f"{build} entropy",
                absolute=True)
    _within_bar(grad, ref_grad, dtype, f"{build} entropy grad", absolute=True)


@pytest.mark.parametrize("n_classes", [100, 5000])
def test_entropy_gradient_at_the_edges_of_float_lanes(rng, dtype, build, n_classes):
    """entropy_from_logits' second pass runs in float lanes for float rows only where
    the chunk's factor, the row's max and its offset keep every term in range
    (fl_entropy_grad_f32), else in double lanes: rows on either side of each limit meet
    the bar. A chunk far below the max (a factor under 2^-126), a max of 3e38 with a
    chunk at -3e38 (max - x overflows float: in float lanes 0 * inf would be NaN),
    logits beyond 2^100, a nearly uniform row (offset + (max - x) cancels) and a
    confident one."""
    c = n_classes
    x = rng.standard_normal((6, c))
    x[0, c // 2:] -= 95.0                # a factor near e^-95, below float's normal range
    x[1, 0] = 3e38
    x[1, c // 2:] = -3e38
    x[2] = 1e31 + x[2] * 1e25
    x[3] *= 0.01
    x[4, 3] += 25.0
    x[5, c // 2:] -= 60.0                # a factor near e^-60: float lanes
    x = x.astype(dtype)
    h, grad = fastloss.entropy_from_logits(x, reduction="none", return_grad=True)
    ref_h, ref_grad = reference.entropy_from_logits(x.astype(np.float64), reduction="none",
                                                    return_grad=True)
    assert np.isfinite(grad).all()
    _within_bar(h, ref_h, dtype, f"{build} entropy")
    _within_bar(grad, ref_grad, dtype, f"{build} entropy grad", absolute=True)
    assert (grad[1] == 0).all() and h[1] == 0


def _beside_reference(name, x, t, dtype, what, **kwargs):
    """fastloss's and the reference's row losses and gradients of kernel `name` on x and
    target rows t, reduction "none"; the losses beyond float's range must be inf (where
    the reference's exceed it: 1e25 weights) and the others finite. Returns them and the
    mask of those beyond."""
    loss, grad = getattr(fastloss, name)(x, t, return_grad=True, reduction="none",
                                         **kwargs)
    ref_loss, ref_grad = getattr(reference, name)(
        x.astype(np.float64), t.astype(np.float64), return_grad=True, reduction="none",
        **kwargs)
    over = np.abs(ref_loss) > np.finfo(dtype).max
    assert np.isinf(loss[over]).all() and np.isfinite(loss[~over]).all(), what
    return loss, grad, ref_loss, ref_grad, over


@pytest.mark.parametrize("n_classes", [100, 5000])
def test_probability_targets_at_the_edges_of_float_lanes(rng, dtype, build, n_classes):
    """Probability targets and label smoothing over float rows sum their coefficients in
    float lanes (fl_coef_sums_f32) unless a term or a sum overflows float, and then in
    double; class weights join them when each is 0 or within [2^-100, 2^64], the weight
    multiplied into max - x before the tiny probabilities. Rows on either side meet the
    bar: a loss of 6e37 from a class at -3e38 below a max of 3e38 (in float, inf), losses
    made of probabilities of 1e-40 (weighted 0.01, they would lose their digits below
    float's normal range), and weights beyond 2^64 or below 2^-100. Distillation from
    these rows as teacher probabilities forms its gradient the same way (its sums stay in
    double: the teacher's entropy cancels against them)."""
    c = n_classes
    x = rng.standard_normal((7, c))
    p = rng.uniform(0.0, 1.0, (7, c))
    p /= p.sum(axis=1, keepdims=True)
    x[0, :2] = 3e38, -3e38
    p[0] = 0.0
    p[0, :2] = 0.9, 0.1
    x[1] = -1e6                          # every sum below 2^-100: in double
    x[1, 0] = 0.0
    p[1] = 1e-40
    p[1, 0] = 0.0
    x[4] = -1e12                         # terms below float's range, sums above 2^-100
    x[4, 0] = 0.0
    p[4] = 1e-40
    p[4, 0] = 1.0
    x[5] = -1234.5                       # a dot of 5e-38 from terms below float's range
    x[5, 0] = 0.0
    p[5] = 5e-38 / ((c - 1) * 12.345)
    p[5, 0] = 1.0
    x[6] = -1e20                         # a loss of w_1 5e19 (5e-25 where w_1 is 1e-44)
    x[6, 2] = 0.0
    p[6] = 0.0
    p[6, 1:3] = 0.5
    x, p = x.astype(dtype), p.astype(dtype)
    weights = {"none": None, "small": np.full(c, 0.01), "beyond": rng.uniform(0.5, 2.0, c)}
    weights["beyond"][::7] = 1e25
    weights["beyond"][1::7] = 1e-44      # in float, 7 units of its least subnormal
    for name, weight in weights.items():
        for smoothing in (0.0, 0.1):
            what = f"{build} {name} weights, smoothing {smoothing}"
            loss, grad, ref_loss, ref_grad, over = _beside_reference(
                "cross_entropy", x, p, dtype, what, weight=weight, label_smoothing=smoothing)
            _within_bar(loss[~over], ref_loss[~over], dtype, f"{what} loss")
            # the bar's absolute error, relative to the largest weight beyond 1 (the
            # gradient's terms, which cancel, are of its size)
            scale = 1.0 if weight is None else max(1.0, weight.max())
            _within_bar(grad / scale, ref_grad / scale, dtype, f"{what} grad",
                        absolute=True)
    for temperature in (1.0, 2.0):
        what = f"{build} distillation, T={temperature}"
        loss, grad, ref_loss, ref_grad, over = _beside_reference(
            "kl_div_with_logits", x, p, dtype, what, temperature=temperature)
        # the loss is a difference of sums of the size of the cross-entropy: the bar
        # relative to that (the loss of probabilities of 1e-40 is tiny, not its terms)
        ref_ce = reference.cross_entropy(x.astype(np.float64) / temperature,
                                         p.astype(np.float64), reduction="none")
        size = np.maximum(np.abs(ref_loss), temperature**2 * np.abs(ref_ce))
        err = np.abs(loss.astype(np.float64) - ref_loss)[~over]
        assert (err <= BAR[np.dtype(dtype)][0] * size[~over]).all(), f"{what} loss"
        _within_bar(grad, ref_grad, dtype, f"{what} grad", absolute=True)


@pytest.mark.parametrize("n_classes", [100, 5000])
@pytest.mark.parametrize("teacher_kind", ["logits", "log_probs"])
def test_teacher_exponentials_at_the_edges_of_float_lanes(rng, dtype, build, n_classes,
                                                         teacher_kind):
    """A teacher's logits or log-probabilities give the gradient's coefficients by a float
    exponential over float rows (fl_coef_scale_exp_f32), except for vectors with an
    argument above 64, which go in double lanes. Rows on either side meet the bar:
    log-probabilities of 100 whose gradient is finite only with a double
    exponential, and of 5, masked teacher entries, a row of them, a NaN logit, a dominant
    class, and temperatures of 1e-3, 2 and 1e6."""
    c = n_classes
    x = rng.standard_normal((6, c)) * 3.0
    t = rng.standard_normal((6, c)) * 3.0
    if teacher_kind == "log_probs":
        t -= np.log(np.exp(t).sum(axis=1, keepdims=True))
        t[0, 5] = 100.0                  # exp beyond float's range: in double lanes
    t[1, ::3] = -np.inf                  # masked teacher classes
    t[2] = -np.inf                       # a teacher row of nothing: NaN, in either lanes
    # a NaN logit (log-probabilities may not be NaN), or a log-probability of 5: above
    # 1, in float lanes all the same
    t[3, 7] = np.nan if teacher_kind == "logits" else 5.0
    t[4] = -1e4                          # a dominant teacher class
    t[4, 0] = 1e4 if teacher_kind == "logits" else 0.0
    x[5, 0] = 1e4                        # and student class
    x, t = x.astype(dtype), t.astype(dtype)
    for temperature in (1e-3, 2.0, 1e6):
        # unscaled, the gradient's factor is 1 / (T N C): at T = 1e6, e^100 times it is
        # within float's range
        kwargs = dict(teacher_kind=teacher_kind, temperature=temperature,
                      scale_by_temperature=False, reduction="mean")
        _, grad = fastloss.kl_div_with_logits(x, t, return_grad=True, **kwargs)
        with np.errstate(over="ignore", invalid="ignore"):   # e^100, masked rows
            _, ref_grad = reference.kl_div_with_logits(
                x.astype(np.float64), t.astype(np.float64), return_grad=True, **kwargs)
            ref_grad = ref_grad.astype(dtype).astype(np.float64)   # float's range, too
        what = f"{build} {teacher_kind}, T={temperature:g}"
        finite = np.isfinite(ref_grad)
        assert (np.isnan(grad) == np.isnan(ref_grad)).all(), what
        assert (grad[~finite] == ref_grad[~finite])[~np.isnan(ref_grad[~finite])].all(), what
        # the bar relative to the largest finite term, e^100 s in row 0 of log-probs
        size = max(1.0, np.abs(ref_grad[finite]).max())
        _within_bar(grad[finite] / size, ref_grad[finite] / size, dtype, f"{what} grad",
                    absolute=True)


@pytest.mark.parametrize("n_classes", [1, 2, 10, 13, 16])
@pytest.mark.parametrize("options", ["plain", "smoothing", "all"])
def test_few_classes_probability_targets(rng, dtype, build, n_classes, options):
    """Probability targets over few classes (the blocks: in float lanes for float rows,
    in double lanes for double ones): within the bar of the reference with every option,
    zero probabilities against masked logits counting 0, a row count that leaves a
    partial block, and one loss bits for any thread count and with or without the
    gradient."""
    n = 1001
    x = _logits(rng, (n, n_classes), dtype)
    t = rng.random((n, n_classes))
    if n_classes > 2:
        t[:, 1] = 0.0                    # no mass on the masked class
        t[::5, 3 % n_classes] = 0.0
    t = (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    kw: dict = {}
    if options == "smoothing":
        x[np.isinf(x)] = -30.0           # smoothing puts mass on every class
        kw = dict(label_smoothing=0.1)
    if options == "all":
        x[np.isinf(x)] = -30.0
        sample_weight = rng.random(n)
        sample_weight[::9] = 0.0
        kw = dict(weight=rng.random(n_classes) + 0.5, label_smoothing=0.1, z_loss=1e-3,
                  sample_weight=sample_weight)
    losses = [fastloss.cross_entropy(x, t, n_threads=k, **kw) for k in (1, 2, 3)]
    loss, grad = fastloss.cross_entropy(x, t, n_threads=2, return_grad=True, **kw)
    assert len({v.tobytes() for v in [*losses, loss]}) == 1
    rows, lse = fastloss.cross_entropy(x, t, reduction="none", return_lse=True, **kw)
    ref_rows, ref_lse = reference.cross_entropy(x.astype(np.float64), t.astype(np.float64),
                                                reduction="none", return_lse=True, **kw)
    ref_loss, ref_grad = reference.cross_entropy(x.astype(np.float64), t.astype(np.float64),
                                                 return_grad=True, **kw)
    _within_bar(rows, ref_rows, dtype, f"{build} row losses")
    _within_bar(lse, ref_lse, dtype, f"{build} logsumexp")
    _within_bar(loss, ref_loss, dtype, f"{build} loss")
    _within_bar(grad, ref_grad, dtype, f"{build} grad", absolute=True)


@pytest.mark.parametrize("n_classes", [2, 10, 13])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.3])
@pytest.mark.parametrize("teacher_kind", ["probs", "log_probs", "logits"])
def test_few_classes_distillation(rng, dtype, build, n_classes, temperature, teacher_kind):
    """T^2 KL(teacher || softmax(x / T)) over few classes (double-lane blocks, with the
    teacher's entropy term; a teacher's logits at the same temperature), against the
    reference."""
    x = _logits(rng, (203, n_classes), dtype)
    p = rng.random((203, n_classes))
    p[::4, 0] = 0.0
    if n_classes > 2:
        p[:, 1] = 0.0                    # no mass on the masked class
    p = p / p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        teacher = {"probs": p, "log_probs": np.log(p),
                   "logits": np.log(p) * temperature + 3.0}[teacher_kind]
    if teacher_kind == "logits":
        teacher[5] = rng.standard_normal(n_classes) * 50.0      # a confident teacher
        teacher[7, 0] = 1e4
        if n_classes > 2:
            teacher[[5, 7], 1] = -np.inf                        # the masked class
    teacher = teacher.astype(dtype)
    loss, grad = fastloss.kl_div_with_logits(x, teacher, teacher_kind=teacher_kind,
                                             temperature=temperature, reduction="none",
                                             return_grad=True)
    ref_loss, ref_grad = reference.kl_div_with_logits(
        x.astype(np.float64), teacher.astype(np.float64), teacher_kind=teacher_kind,
        temperature=temperature, reduction="none", return_grad=True)
    # KL is a difference of cross-entropy and entropy: relative to their scale
    scale = np.abs(ref_loss) + 1.0
    _within_bar(np.asarray(loss) / scale, ref_loss / scale, dtype, f"{build} KL",
                absolute=True)
    _within_bar(grad, ref_grad, dtype, f"{build} KL grad", absolute=True)
    # the same rows through the row kernel (one row at a time takes no block)
    for i in (0, 5, 7):
        one = fastloss.kl_div_with_logits(x[i], teacher[i], teacher_kind=teacher_kind,
                                          temperature=temperature, reduction="sum")
        assert one == pytest.approx(loss[i], rel=1e-13 if dtype == np.float64 else 1e-6,
                                    abs=1e-13)


@pytest.mark.parametrize("n_classes", [1, 2, 10, 13, 16])
def test_few_classes_entropy_from_logits(rng, dtype, build, n_classes):
    """The entropy of softmax over few classes (double-lane blocks), its gradient, in
    place and for any thread count, against the reference."""
    x = _logits(rng, (1001, n_classes), dtype)
    x[3] = 0.0                           # uniform: log C
    h, grad = fastloss.entropy_from_logits(x, reduction="none", return_grad=True)
    ref_h, ref_grad = reference.entropy_from_logits(x.astype(np.float64), reduction="none",
                                                    return_grad=True)
    scale = np.abs(ref_h) + 1e-3         # a confident row's entropy is near 0
    _within_bar(np.asarray(h) / scale, ref_h / scale, dtype, f"{build} entropy",
                absolute=True)
    _within_bar(grad, ref_grad, dtype, f"{build} entropy grad", absolute=True)
    assert h[3] == pytest.approx(np.log(n_classes), rel=1e-6, abs=1e-7)
    in_bits = fastloss.entropy_from_logits(x, base=2, reduction="none")
    np.testing.assert_allclose(in_bits, np.asarray(h, dtype=np.float64) / np.log(2),
                               rtol=1e-14 if dtype == np.float64 else 2e-7, atol=1e-300)
    means = [fastloss.entropy_from_logits(x, reduction="mean", return_grad=True, n_threads=n)
             for n in (1, 2, 3)]
    buffer = x.copy()
    _, in_place = fastloss.entropy_from_logits(buffer, reduction="mean", grad_out=buffer)
    for mean, g in means:
        assert mean == means[0][0]
        assert g.tobytes() == means[0][1].tobytes()
    assert in_place.tobytes() == means[0][1].tobytes()


def test_forcing_a_path_the_cpu_lacks_is_an_error():
    # The build is chosen at import: a name this CPU does not run makes every kernel call
    # a ValueError (not the import).
    code = ("import numpy as np, fastloss\n"
            "try:\n    fastloss.softmax(np.zeros((2, 3)))\n"
            "except ValueError as exc:\n    print(exc)\n")
    here = str(Path(fastloss.__file__).resolve().parents[1])
    env = dict(os.environ, FASTLOSS_SIMD="sse9", PYTHONPATH=os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert "FASTLOSS_SIMD='sse9' names no build" in out
    with pytest.raises(ValueError, match="no kernels for 'sse9' that this CPU runs"):
        with _dispatch.use("sse9"):
            pass
