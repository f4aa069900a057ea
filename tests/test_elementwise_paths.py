"""The paths inside the elementwise kernels (losses/elementwise.h) against the float64
reference: float32 computed in float where the error analysis allows, with a double path
for the lanes where a derivative or a kl_div term cancels; extreme and special values;
the tails of every size; the range checks done in the kernel's own pass."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, simd_builds
from elementwise_cases import FUNCTIONS, check_matches_reference, make_case

import fastloss
from fastloss import _common, reference
from fastloss._kernels import _kernels

bce = fastloss.binary_cross_entropy
bce_logits = fastloss.binary_cross_entropy_with_logits

LOGIT_OPTIONS = [{}, {"pos_weight": "C"}, {"label_smoothing": 0.1}, {"weight": "C"},
                 {"weight": "C", "pos_weight": "C", "label_smoothing": 0.05}]
LOGIT_IDS = ["plain", "pos_weight", "smoothing", "weight", "all"]


def _options(rng, options, columns, dtype):
    return {k: (rng.random(columns) * 3 + 0.1).astype(dtype) if v == "C" else v
            for k, v in options.items()}


def _sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@pytest.mark.parametrize("options", LOGIT_OPTIONS, ids=LOGIT_IDS)
def test_logits_derivative_that_cancels(rng, dtype, options):
    # Targets within a few float32 ulps of sigmoid(x): sigma(x) - t cancels, and float32
    # computes it from e = exp(-|x|) in double there.
    x = (rng.standard_normal((64, 257)) * 6).astype(dtype)
    x[:, :5] = np.array([1e-13, -1e-13, 17.5, -30.0, 0.0], dtype=dtype)
    t = _sigmoid(x).astype(dtype)
    step = rng.integers(-3, 4, size=t.shape).astype(np.int32)
    if dtype == np.float32:
        t = np.clip((t.view(np.int32) + step).view(np.float32), 0, 1)
    else:
        t = np.clip(t * (1 + step * 1e-15), 0, 1)
    kwargs = _options(rng, options, x.shape[-1], dtype)
    loss, grad = bce_logits(x, t, reduction="none", return_grad=True, **kwargs)
    total, grad_of_sum = bce_logits(x, t, reduction="sum", return_grad=True, **kwargs)
    assert grad_of_sum.tobytes() == grad.tobytes()
    assert_close(total, np.sum(loss, dtype=np.float64), dtype, ulps=2)
    ref_loss, ref_grad = reference.binary_cross_entropy_with_logits(
        x, t, reduction="none", return_grad=True, **kwargs)
    assert_close(loss, ref_loss, dtype, what="loss")
    # The derivative w (L q - v t) or w ((1 - t) - L q), q = sigmoid(-|x|): within 4 ulps,
    # or 16 float64 ulps of its parts (the float64 reference's own error).
    w = kwargs.get("weight", 1.0)
    v = kwargs.get("pos_weight", 1.0)
    eps = kwargs.get("label_smoothing", 0.0)
    t64 = t.astype(np.float64) * (1 - eps) + eps / 2
    coef = 1 + (v - 1) * t64
    parts = w * np.maximum(np.maximum(coef * _sigmoid(-np.abs(x)), v * t64), 1 - t64)
    assert_close(grad, ref_grad, dtype, atol=16 * np.finfo(np.float64).eps * parts,
                 what="grad")


@pytest.mark.parametrize("options", LOGIT_OPTIONS, ids=LOGIT_IDS)
def test_logits_extreme_values(rng, dtype, options):
    special = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-45, 0.5, -0.5, 16.6, -16.6, 17.0,
                        88.0, -88.0, 104.0, -104.0, 110.0, -745.0, 1e4, -1e4, 1e30, -1e30,
                        np.finfo(dtype).max, -np.finfo(dtype).max, np.inf, -np.inf, np.nan])
    x = np.repeat(special, 5).astype(dtype)
    t = np.tile(np.array([0.0, 1.0, 0.5, 0.25, 0.999]), special.size).astype(dtype)
    kwargs = _options(rng, options, x.shape[-1], dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        for reduction in ("none", "sum"):
            check_matches_reference("bce_logits", x, t, reduction, **kwargs)


def test_bce_extreme_probabilities(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    p = np.array([0.0, tiny, 2 * tiny, np.finfo(dtype).tiny, 3.7e-44, 1e-30, 1e-10,
                  2.0 ** -24, 0.25, 0.5, 0.75, 1 - 2.0 ** -24, 1 - np.finfo(dtype).epsneg,
                  1.0, np.nan])
    x = np.repeat(p, 5).astype(dtype)
    y = np.tile(np.array([0.0, 1.0, 0.5, 0.3, 0.99]), p.size).astype(dtype)
    for reduction in ("none", "sum"):
        check_matches_reference("bce", x, y, reduction)


@pytest.mark.parametrize("log_target", [False, True], ids=["p", "log_p"])
def test_kl_terms_that_cancel(rng, dtype, log_target):
    # input close to log p: p (log p - input) cancels, and float32 takes log p in double
    # there (log_target: the term is p (log_p - input), exact in double).
    p = np.exp(rng.uniform(-40, 0, size=(50, 301)))
    p[:, :3] = [0.0, 1.0, np.finfo(np.float32).smallest_subnormal]
    p = p.astype(dtype)
    log_p = np.log(p.astype(np.float64), where=p > 0, out=np.full(p.shape, -np.inf))
    x = (log_p + rng.standard_normal(p.shape) * np.exp(rng.uniform(-20, -1, p.shape)))
    x = np.where(np.isfinite(x), x, -5.0).astype(dtype)
    target = log_p.astype(dtype) if log_target else p
    for reduction in ("none", "sum"):
        check_matches_reference("kl", x, target, reduction, log_target=log_target)


@pytest.mark.parametrize("name", ["bce", "bce_logits", "kl", "focal"])
def test_every_tail_length(rng, dtype, name):
    # Blocks of 4096 and groups of 16 elements: every tail length of the last group, in the
    # first block and after several blocks, with NaN in the tail.
    for size in [*range(1, 40), 4095, 4097, 4096 + 15, 3 * 4096 + 17]:
        x, target = make_case(rng, name, (size,), dtype)
        check_matches_reference(name, x, target, "none")
        check_matches_reference(name, x, target, "sum", n_threads=3)
        if size > 3:
            x[-1] = np.nan
            loss = FUNCTIONS[name][0](x, target, reduction="none")
            assert np.isnan(loss[-1]) and not np.isnan(loss[:-1]).any()
            assert np.isnan(FUNCTIONS[name][0](x, target, reduction="sum"))


@pytest.mark.parametrize("name", ["bce", "bce_logits", "focal"])
def test_weights_of_one_change_no_bit(rng, dtype, name):
    # Weights that are all 1 are not read (nor multiplied by): the same bits as none.
    x, target = make_case(rng, name, (37, 129), dtype)
    plain = FUNCTIONS[name][0](x, target, reduction="none", return_grad=True)
    ones = FUNCTIONS[name][0](x, target, weight=np.ones(129, dtype), reduction="none",
                              return_grad=True)
    assert plain[0].tobytes() == ones[0].tobytes()
    assert plain[1].tobytes() == ones[1].tobytes()


class TestRangeChecksInTheKernel:
    """Targets (and BCE's probabilities) are checked in the kernel's pass, and the error
    raised after it; in place, where the gradient would overwrite the input, before it."""

    @pytest.mark.parametrize("in_place", [False, True], ids=["grad_out", "in_place"])
    @pytest.mark.parametrize("where", [0, 4095, 4096 * 3 + 4], ids=["first", "block", "tail"])
    def test_the_extremes_in_the_message(self, dtype, where, in_place):
        x = np.zeros(4096 * 3 + 5, dtype)
        target = np.full(x.shape, 0.25, dtype)
        target[where] = -2.0
        target[7] = 0.75
        target[8] = np.nan
        out = x if in_place else np.empty_like(x)
        with pytest.raises(ValueError, match=r"target must be in \[0, 1\] \(probabilities\), "
                                             r"got values from -2\.0 to 0\.75"):
            bce_logits(x, target, grad_out=out)
        assert (x == 0).all()

    def test_probabilities_checked_with_the_targets(self, dtype):
        probs = np.full(5000, 0.5, dtype)
        probs[4999] = 1.5
        with pytest.raises(ValueError, match=r"probs must be in \[0, 1\] \(probabilities\), "
                                             r"got values from 0\.5 to 1\.5"):
            bce(probs, np.zeros_like(probs), return_grad=True)
        target = np.zeros_like(probs)
        target[3] = np.inf
        probs[4999] = 0.5
        with pytest.raises(ValueError, match=r"target must be in \[0, 1\]"):
            bce(probs, target)

    def test_kl_negative_target(self, dtype):
        x = np.full((3, 4099), -1.0, dtype)
        target = np.full(x.shape, 0.125, dtype)
        target[2, 4098] = -0.5
        target[1, 7] = 0.25
        with pytest.raises(ValueError, match=r"target must be >= 0 \(probabilities; pass "
                                             r"log_target=True for log-probabilities\), got "
                                             r"values from -0\.5 to 0\.25"):
            fastloss.kl_div(x, target, reduction="sum", n_threads=2)

    def test_all_nan_values_pass(self, dtype):
        x = np.zeros(20, dtype)
        assert np.isnan(bce_logits(x, np.full(20, np.nan, dtype)))


def test_block_kernel_reports_each_blocks_extremes(rng, dtype, use_build):
    # The kernel's own range output: per block, min and max of x then of the target,
    # NaN skipped (+inf and -inf for a block of NaN only), for every build.
    n = 3 * 4096 + 21
    x = (rng.standard_normal(n) * 3).astype(dtype)
    y = rng.random(n).astype(dtype)
    y[:4096] = np.nan
    x[rng.random(n) < 0.1] = np.nan
    ones = _common.periodic_weights(None, "w", (n,), np.dtype(dtype), "x")
    blocks = -(-n // 4096)
    for build in simd_builds():
        use_build(build)
        ranges = np.empty((blocks, 4))
        partials = np.empty(blocks)
        _kernels.elementwise(_kernels.BCE_WITH_LOGITS, x, y, ones, ones, partials,
                                 np.empty(0, dtype), np.empty(0, dtype), 0.0, 1.0, 1.0, 2,
                                 False, False, ranges)
        for b in range(blocks):
            xs, ys = x[b * 4096:(b + 1) * 4096], y[b * 4096:(b + 1) * 4096]
            assert ranges[b, 0] == np.nanmin(xs) and ranges[b, 1] == np.nanmax(xs)
            if np.isnan(ys).all():
                assert ranges[b, 2] == np.inf and ranges[b, 3] == -np.inf
            else:
                assert ranges[b, 2] == np.nanmin(ys) and ranges[b, 3] == np.nanmax(ys)


def test_bce_hard_label_vectors_give_the_same_bits(rng, dtype):
    # A vector of hard labels takes one log (log p or log(1 - p), as the label says), a
    # vector with a soft label both: the same bits for the hard elements either way (so no
    # result depends on its neighbours, nor on the vector width).
    p = rng.random(4096 * 2).astype(dtype)
    p[::37] = 0.0
    p[5::41] = 1.0
    p[7::43] = np.finfo(dtype).smallest_subnormal
    hard = (rng.random(p.size) < 0.5).astype(dtype)
    mixed = hard.copy()
    mixed[::5] = 0.5
    a = bce(p, hard, reduction="none", return_grad=True)
    b = bce(p, mixed, reduction="none", return_grad=True)
    same = mixed != 0.5
    assert a[0][same].tobytes() == b[0][same].tobytes()
    assert a[1][same].tobytes() == b[1][same].tobytes()
