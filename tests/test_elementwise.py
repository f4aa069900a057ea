"""What every elementwise loss (binary_cross_entropy, binary_cross_entropy_with_logits,
kl_div) promises alike: deterministic reductions, the same loss with or without the
gradient, in-place gradients, layouts and dtypes, every SIMD build within a few ulps of the
baseline, no input-sized temporaries, and the errors of the arguments they share."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import simd_builds
from elementwise_cases import (
    FUNCTIONS,
    VARIANT_IDS,
    VARIANTS,
    check_matches_reference,
    magnitude_atol,
    reductions_of,
    variant_case,
)

import fastloss
from fastloss._kernels import _kernels


def _same_bits(a, b):
    """Equal to the bit, NaN matching NaN of any sign or payload (which the order of the
    operands that meet a NaN decides, not the value)."""
    a, b = np.asarray(a), np.asarray(b)
    return (np.isnan(a) == np.isnan(b)).all() and \
        np.where(np.isnan(a), 0, a).tobytes() == np.where(np.isnan(b), 0, b).tobytes()


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
class TestDeterminism:
    def test_loss_same_bits_with_or_without_grad(self, rng, dtype, variant):
        fn, x, target, kwargs = variant_case(rng, variant, (70, 1000), dtype)
        for reduction in reductions_of(variant):
            alone = fn(x, target, reduction=reduction, **kwargs)
            fused, _ = fn(x, target, reduction=reduction, return_grad=True, **kwargs)
            assert _same_bits(alone, fused), reduction

    def test_same_bits_for_any_thread_count(self, rng, dtype, variant):
        fn, x, target, kwargs = variant_case(rng, variant, (91, 1001), dtype)  # 23 blocks
        for reduction in reductions_of(variant):
            results = [fn(x, target, reduction=reduction, n_threads=n, return_grad=True,
                          **kwargs) for n in (1, 2, 3, -1, None)]
            for loss, grad in results[1:]:
                assert _same_bits(loss, results[0][0]), reduction
                assert _same_bits(grad, results[0][1]), reduction

    @pytest.mark.parametrize("build", ["avx2", "avx512"])
    def test_every_simd_build_agrees_with_the_baseline(self, rng, dtype, variant, build,
                                                       use_build):
        # The AVX2 and AVX-512 builds fuse multiplies and adds, the baseline cannot: each
        # is within the accuracy bar of the exact values (the other tests, run under every
        # FASTLOSS_SIMD), so two builds are within twice the bar of each other: 8 ulps of
        # the dtype, plus the slack of terms that cancel (a derivative sigma(x) - t, a
        # kl_div term), and the same NaN and infinities in the same places.
        if build not in simd_builds():
            pytest.skip(f"this CPU or build has no {build} kernels")
        fn, x, target, kwargs = variant_case(rng, variant, (33, 1001), dtype)
        x.reshape(-1)[::97] = np.nan
        results = {}
        for chosen in ("baseline", build):
            use_build(chosen)
            results[chosen] = [fn(x, target, reduction=r, return_grad=True, **kwargs)
                               for r in reductions_of(variant)]
        for (loss_a, grad_a), (loss_b, grad_b) in zip(*results.values(), strict=True):
            _assert_builds_agree(loss_a, loss_b, dtype)
            _assert_builds_agree(grad_a, grad_b, dtype)


def _assert_builds_agree(a, b, dtype, ulps=8):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    infinite = np.isinf(a) | np.isinf(b)
    np.testing.assert_array_equal(a[infinite], b[infinite])
    finite = np.isfinite(a)
    a, b = a[finite], b[finite]
    spacing = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(dtype)).astype(np.float64)
    slack = magnitude_atol(np.concatenate([a, b]), dtype)
    assert (np.abs(a - b) <= ulps * spacing + slack).all(), np.max(np.abs(a - b) / spacing)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
class TestLayouts:
    def test_in_place_gradient_equals_out_of_place(self, rng, dtype, variant):
        fn, x, target, kwargs = variant_case(rng, variant, (40, 1000), dtype)
        for reduction in reductions_of(variant):
            loss, grad = fn(x, target, reduction=reduction, return_grad=True, **kwargs)
            buffer = x.copy()
            loss2, grad2 = fn(buffer, target, reduction=reduction, grad_out=buffer, **kwargs)
            assert grad2 is buffer
            assert _same_bits(loss2, loss) and _same_bits(grad2, grad), reduction

    def test_grad_out_is_written_and_returned(self, rng, dtype, variant):
        fn, x, target, kwargs = variant_case(rng, variant, (20, 30), dtype)
        out = np.full_like(x, np.nan)
        _, grad = fn(x, target, grad_out=out, **kwargs)
        assert grad is out
        np.testing.assert_array_equal(out, fn(x, target, return_grad=True, **kwargs)[1])

    def test_strided_read_only_and_memmap(self, rng, dtype, variant, tmp_path):
        fn, x, target, kwargs = variant_case(rng, variant, (30, 40), dtype)
        kwargs = {k: v for k, v in kwargs.items() if not isinstance(v, np.ndarray)}
        expected = fn(x.T.copy(), target.T.copy(), reduction="none", return_grad=True,
                      **kwargs)
        got = fn(x.T, target.T, reduction="none", return_grad=True, **kwargs)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        frozen = x.copy()
        frozen.flags.writeable = False
        np.testing.assert_array_equal(fn(frozen, target, **kwargs), fn(x, target, **kwargs))
        mapped = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=dtype,
                                           shape=x.shape)
        mapped[...] = x
        np.testing.assert_array_equal(fn(mapped, target, **kwargs), fn(x, target, **kwargs))

    def test_other_float_dtypes(self, rng, variant):
        fn, x, target, kwargs = variant_case(rng, variant, (10, 20), np.float64)
        if variant[1] == "bce":                 # no gradient of 1e12, beyond float16's range
            x = np.clip(x, 0.01, 0.99)
        for low, kernel in ((np.float16, np.float32), (np.longdouble, np.float64)):
            loss, grad = fn(x.astype(low), target, reduction="none", return_grad=True,
                            **kwargs)
            assert loss.dtype == grad.dtype == low
            ref = fn(x.astype(low).astype(kernel), target.astype(kernel), reduction="none",
                     return_grad=True, **kwargs)
            np.testing.assert_array_equal(loss, ref[0].astype(low))
            np.testing.assert_array_equal(grad, ref[1].astype(low))
            out = np.empty(x.shape, low)
            _, into = fn(x.astype(low), target, reduction="none", grad_out=out, **kwargs)
            assert into is out
            np.testing.assert_array_equal(out, grad)
            assert isinstance(fn(x.astype(low), target, reduction="sum", **kwargs), low)

    def test_integer_and_boolean_targets(self, rng, dtype, variant):
        fn, x, _, kwargs = variant_case(rng, variant, (10, 20), dtype)
        labels = rng.integers(0, 2, size=(10, 20))
        expected = fn(x, labels.astype(dtype), reduction="none", **kwargs)
        np.testing.assert_array_equal(fn(x, labels, reduction="none", **kwargs), expected)
        np.testing.assert_array_equal(fn(x, labels.astype(bool), reduction="none", **kwargs),
                                      expected)

    def test_in_place_allocates_no_input_sized_memory(self, rng, variant):
        fn, x, target, kwargs = variant_case(rng, variant, (1000, 1000), np.float32)  # 4 MB
        tracemalloc.start()
        try:
            fn(x, target, grad_out=x, reduction="mean", **kwargs)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # Block sums (2 KB) and tiled periodic weights (16 KB each), nothing of N.
        assert peak < x.nbytes / 20, peak


WEIGHTED = [v for v in VARIANTS if any(value == "C" for value in v[2].values())]


@pytest.mark.parametrize("variant", WEIGHTED, ids=[v[0] for v in WEIGHTED])
def test_weights_of_another_dtype_are_rounded_to_the_input_dtype(rng, dtype, variant):
    fn, x, target, kwargs = variant_case(rng, variant, (10, 20), dtype)
    wide = {k: v.astype(np.float64) if isinstance(v, np.ndarray) else v
            for k, v in kwargs.items()}
    np.testing.assert_array_equal(fn(x, target, reduction="none", **wide),
                                  fn(x, target, reduction="none", **kwargs))
    check_matches_reference(variant[1], x, target, "sum", **kwargs)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
class TestEmpty:
    def test_no_elements(self, dtype, variant):
        fn = FUNCTIONS[variant[1]][0]
        x = np.empty((0, 3), dtype)
        assert fn(x, x, reduction="sum") == 0
        assert np.isnan(fn(x, x, reduction="mean"))
        loss, grad = fn(x, x, reduction="none", return_grad=True)
        assert loss.shape == grad.shape == (0, 3)
        assert loss.dtype == grad.dtype == dtype

    def test_zero_dim(self, rng, dtype, variant):
        _, x, target, kwargs = variant_case(rng, variant, (), dtype)
        for reduction in reductions_of(variant):
            loss, grad = check_matches_reference(variant[1], x, target, reduction, **kwargs)
            assert np.shape(loss) == () and grad.shape == ()


@pytest.mark.parametrize("size", [1, 7, 4095, 4096, 4097, 3 * 4096 + 5, 70001])
def test_value_range_per_block_ignores_nan(rng, dtype, size, use_build):
    # The one-pass, parallel min and max behind the range checks, and whether each block
    # has a NaN, for every build.
    v = (rng.standard_normal(size) * 5).astype(dtype)
    v[rng.random(size) < 0.1] = np.nan
    block = 4096
    if size > block:
        v[:block] = np.nan                                  # a block of NaN only
        v[2 * block:3 * block] = 1.0                        # a block without NaN
    n_blocks = -(-size // block)
    expected_low = np.array([np.fmin.reduce(v[i:i + block]) for i in range(0, size, block)])
    expected_high = np.array([np.fmax.reduce(v[i:i + block]) for i in range(0, size, block)])
    expected_nan = np.array([np.isnan(v[i:i + block]).any() for i in range(0, size, block)])
    for build in simd_builds():
        kernels = _kernels
        use_build(build)
        for n_threads in (1, 2, 3):
            lows, highs, nans = np.empty(n_blocks), np.empty(n_blocks), np.empty(n_blocks)
            kernels.value_range(v, lows, highs, nans, n_threads)
            all_nan = np.isnan(expected_low)
            np.testing.assert_array_equal(lows[~all_nan], expected_low[~all_nan])
            np.testing.assert_array_equal(highs[~all_nan], expected_high[~all_nan])
            assert (lows[all_nan] == np.inf).all() and (highs[all_nan] == -np.inf).all()
            np.testing.assert_array_equal(nans, expected_nan.astype(float))


# --- the errors of the arguments every elementwise loss has ------------------------------

X = {"bce": np.full((4, 3), 0.5), "bce_logits": np.zeros((4, 3)),
     "kl": np.log(np.full((4, 3), 1 / 3)), "focal": np.zeros((4, 3))}
Y = np.full((4, 3), 0.5)
ARGS = [("bce", "probs"), ("bce_logits", "logits"), ("kl", "input"), ("focal", "logits")]


def _escaped(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("name, arg", ARGS)
class TestBadArguments:
    @pytest.mark.parametrize(
        "bad", [np.zeros((4, 3), dtype=np.int64), np.zeros((4, 3), dtype=bool),
                np.zeros((4, 3), dtype=np.complex128), np.zeros((4, 3), dtype=object),
                [[1, 0, 1]], "abc"],
        ids=["int", "bool", "complex", "object", "int-list", "str"],
    )
    def test_non_float_input(self, name, arg, bad):
        with pytest.raises(TypeError, match=f"{arg} must be an array of real floating-point "
                                            rf"numbers \(float32 or float64\)"):
            FUNCTIONS[name][0](bad, Y)

    @pytest.mark.parametrize(
        "bad", [Y.astype(np.complex128), Y.astype(object), np.full((4, 3), "a")],
        ids=["complex", "object", "str"],
    )
    def test_non_real_target(self, name, arg, bad):
        with pytest.raises(TypeError, match="target must be an array of real numbers, "
                                            "got dtype"):
            FUNCTIONS[name][0](X[name], bad)

    @pytest.mark.parametrize("shape", [(4,), (4, 1), (1, 3), (3, 4), (2, 4, 3), ()], ids=str)
    def test_target_shape_mismatch(self, name, arg, shape):
        with pytest.raises(ValueError, match=rf"target must have the shape of {arg}, "
                                             rf"\(4, 3\), got {_escaped(shape)}"):
            FUNCTIONS[name][0](X[name], np.full(shape, 0.5))

    @pytest.mark.parametrize("base, exc, message",
                             [(1, ValueError, "other than 1, got 1.0"),
                              (0, ValueError, "other than 1, got 0.0"),
                              (-2.0, ValueError, "other than 1, got -2.0"),
                              (np.inf, ValueError, "other than 1, got inf"),
                              (np.nan, ValueError, "other than 1, got nan"),
                              ("2", TypeError, "or None, got str"),
                              (True, TypeError, "or None, got bool")])
    def test_bad_base(self, name, arg, base, exc, message):
        if name == "focal":         # torchvision's loss has no base: not an argument
            exc, message = TypeError, "unexpected keyword argument 'base'"
        with pytest.raises(exc, match=("" if name == "focal" else "base must be a .*") + message):
            FUNCTIONS[name][0](X[name], Y, base=base)

    def test_bad_threads(self, name, arg):
        fn = FUNCTIONS[name][0]
        with pytest.raises(ValueError, match="n_threads must be a non-zero int"):
            fn(X[name], Y, n_threads=0)
        for bad in (1.5, "2", True):
            with pytest.raises(TypeError, match="n_threads must be an int or None"):
                fn(X[name], Y, n_threads=bad)

    def test_bad_grad_out(self, name, arg):
        fn, x = FUNCTIONS[name][0], X[name]
        with pytest.raises(ValueError, match=r"grad_out must have shape \(4, 3\), got \(12,\)"):
            fn(x, Y, grad_out=np.empty(12))
        with pytest.raises(TypeError, match="grad_out must have dtype float64, got float32"):
            fn(x, Y, grad_out=np.empty((4, 3), np.float32))
        with pytest.raises(ValueError, match="grad_out must be C-contiguous"):
            fn(x, Y, grad_out=np.empty((3, 4)).T)
        with pytest.raises(TypeError, match=r"grad_out must be a numpy\.ndarray, got list"):
            fn(x, Y, grad_out=x.tolist())
        frozen = np.empty((4, 3))
        frozen.flags.writeable = False
        with pytest.raises(ValueError, match="grad_out must be writeable"):
            fn(x, Y, grad_out=frozen)
        buf = np.full(13, x[0, 0])
        with pytest.raises(ValueError, match="grad_out overlaps the input only partly"):
            fn(buf[:12].reshape(4, 3), Y, grad_out=buf[1:].reshape(4, 3))
        target = Y.copy()
        with pytest.raises(ValueError, match="grad_out must not share memory with target"):
            fn(x, target, grad_out=target)

    def test_bad_input_never_reaches_the_kernel_in_place(self, name, arg):
        x = X[name].copy()
        with pytest.raises(ValueError, match="target must be"):
            FUNCTIONS[name][0](x, np.full((4, 3), -2.0), grad_out=x)
        np.testing.assert_array_equal(x, X[name])


def test_simd_build_names_ignore_case():
    here = str(Path(fastloss.__file__).resolve().parents[1])
    env = dict(os.environ, FASTLOSS_SIMD=" BaseLine ", PYTHONPATH=os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-c", "from fastloss import _dispatch; "
                          "print(_dispatch.isa())"], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.strip() == "baseline"


def test_builds_start_with_the_widest_and_end_with_baseline():
    builds = simd_builds()
    assert builds[-1] == "baseline"
    order = ["avx512", "avx2", "baseline"]
    assert builds == sorted(builds, key=order.index)
