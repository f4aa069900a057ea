"""softmax, log_softmax and logsumexp against the NumPy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close, make_logits
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastloss
from fastloss import reference

FUNCTIONS = ["softmax", "log_softmax", "logsumexp"]
SHAPES = [(0, 4), (1, 1), (3, 2), (7, 15), (2, 17), (3, 2047), (2, 2049), (2, 5000),
          (9, 1000), (2, 50257)]

# log_softmax subtracts two numbers of similar size: an absolute slack of a few ulp of
# the row's logsumexp, relative to which the result is exact.
ATOL = {np.dtype(np.float32): 1e-12, np.dtype(np.float64): 1e-13}


def _call(name, x, **kwargs):
    return getattr(fastloss, name)(x, **kwargs)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_reference(rng, dtype, name, shape):
    x = make_logits(rng, shape, dtype)
    got = _call(name, x)
    expected = getattr(reference, name)(x)
    assert got.shape == expected.shape
    assert_close(got, expected, dtype, atol=ATOL[dtype], what=name)


def test_softmax_rows_sum_to_one(rng, dtype):
    probs = fastloss.softmax(make_logits(rng, (20, 3000), dtype))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5 if dtype == np.float32 else 1e-13)


def test_theory_worked_example(dtype):
    x = np.array([2.3, -1.2], dtype=dtype)
    np.testing.assert_allclose(fastloss.softmax(x), [0.97069, 0.02931], atol=1e-5)
    np.testing.assert_allclose(fastloss.log_softmax(x)[1], -3.52975, atol=1e-5)
    assert float(fastloss.logsumexp(x)) == pytest.approx(np.log(9.9742 + 0.3012), abs=1e-4)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("axis", [0, 1, 2, -2])
def test_any_axis(rng, dtype, name, axis):
    x = make_logits(rng, (3, 4, 5), dtype)
    got = _call(name, x, axis=axis)
    assert_close(got, getattr(reference, name)(x, axis=axis), dtype, atol=ATOL[dtype])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("n_classes", [5, 4000])
def test_out_and_in_place(rng, dtype, name, n_classes):
    x = make_logits(rng, (6, n_classes), dtype)
    expected = _call(name, x)
    out = np.empty_like(x)
    assert _call(name, x, out=out) is out
    np.testing.assert_array_equal(out, expected)
    assert _call(name, x, out=x) is x
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_out_may_be_strided(rng, dtype, name):
    x = make_logits(rng, (6, 10), dtype)
    holder = np.zeros((6, 20), dtype=dtype)
    out = holder[:, ::2]
    assert _call(name, x, out=out) is out
    np.testing.assert_array_equal(out, _call(name, x))
    assert (holder[:, 1::2] == 0).all()


def test_logsumexp_out(rng, dtype):
    x = make_logits(rng, (4, 6, 3), dtype)
    out = np.empty((4, 3), dtype=dtype)
    assert fastloss.logsumexp(x, axis=1, out=out) is out
    np.testing.assert_array_equal(out, fastloss.logsumexp(x, axis=1))


def test_unbatched_and_empty(dtype):
    assert fastloss.logsumexp(np.zeros(4, dtype=dtype)).shape == ()
    assert fastloss.logsumexp(np.empty((0, 3), dtype=dtype)).shape == (0,)
    assert fastloss.log_softmax(np.empty((0, 3), dtype=dtype)).shape == (0, 3)
    # No classes is an error, as for every function with a class axis
    # (test_validation.test_an_empty_class_axis_is_an_error).
    for function in (fastloss.softmax, fastloss.log_softmax, fastloss.logsumexp):
        with pytest.raises(ValueError, match="x must have at least one class along axis 1"):
            function(np.empty((3, 0), dtype=dtype))


@pytest.mark.parametrize("n_classes", [3, 5000])
def test_masks_and_extremes(dtype, n_classes):
    x = np.full((4, n_classes), -np.inf, dtype=dtype)
    x[0, 0], x[0, -1] = 2.3, -1.2                     # masked row
    x[1, :2] = 1e30                                   # two huge ties
    x[2, 0], x[2, -1] = 1e4, -1e4
    # row 3: everything masked
    probs = fastloss.softmax(x)
    assert probs[0, 0] == pytest.approx(0.97069, abs=1e-5)
    assert (probs[0, 1:-1] == 0).all()
    assert probs[1, :2].tolist() == [0.5, 0.5]
    assert probs[2, 0] == 1.0 and probs[2, -1] == 0.0
    assert np.isnan(probs[3]).all()                   # as PyTorch: 0 / 0
    logp = fastloss.log_softmax(x)
    assert np.isneginf(logp[0, 1:-1]).all()
    assert logp[1, 0] == pytest.approx(-np.log(2), rel=1e-6)
    lse = fastloss.logsumexp(x)
    assert lse[1] == pytest.approx(1e30, rel=1e-6) and lse[3] == -np.inf
    for name in FUNCTIONS:
        assert_close(_call(name, x), getattr(reference, name)(x), dtype, atol=ATOL[dtype])


@pytest.mark.parametrize("name", FUNCTIONS)
def test_nan_propagates_to_its_row(dtype, name, rng):
    x = make_logits(rng, (3, 2500), dtype)
    x[1, 2100] = np.nan
    got = _call(name, x)
    assert np.isnan(got[1]).all()
    assert not np.isnan(got[[0, 2]]).any()


@pytest.mark.parametrize("name", FUNCTIONS)
def test_same_bits_for_any_thread_count(rng, dtype, name):
    x = make_logits(rng, (400, 2100), dtype)
    results = [_call(name, x, n_threads=n) for n in (1, 2, 3, -1)]
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def _rows_near_cancellation(rng, n_rows, n_classes, rows=slice(None, None, 2)):
    """float32 rows of few classes: `rows` of them log-probabilities (a logsumexp near 0,
    where max < 0 cancels log S), the others logits whose max is >= 0."""
    x = (rng.standard_normal((n_rows, n_classes)) * 2.0).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0])
    logp = rng.standard_normal((n_rows, n_classes)) * 2.0
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    x[rows] = logp[rows]
    return x


def _exact_logsumexp(x32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """logsumexp of each float32 row, max + log1p((count at max - 1) + the others' sum),
    each term in double and summed exactly (fsum); and |max| + log S, the size of the
    parts that cancel, to which the double sum's rounding is relative."""
    out, parts = np.empty(len(x32)), np.empty(len(x32))
    for i, row in enumerate(x32.astype(np.float64)):
        top = row.max()
        others = row[row != top]
        rest = math.fsum(np.exp(others - top)) if others.size else 0.0
        log_sum = math.log1p((np.count_nonzero(row == top) - 1) + rest)
        out[i], parts[i] = top + log_sum, abs(top) + log_sum
    return out, parts


@pytest.mark.parametrize("n_classes", [2, 3, 7, 10, 16])
def test_logsumexp_of_few_float_classes_near_0(rng, n_classes):
    """Few float32 classes take their exponentials in float lanes only where the row's max
    is >= 0; a logsumexp near 0 is then exact to the double-precision sum (atol)."""
    x = _rows_near_cancellation(rng, 300, n_classes)
    got = fastloss.logsumexp(x, axis=1)
    expected, parts = _exact_logsumexp(x)
    assert np.abs(expected[::2]).max() < 1e-5
    assert_close(got, expected, np.float32, ulps=2, atol=2.0**-50 * parts,
                 what="logsumexp")


@pytest.mark.parametrize("n_classes", [3, 10, 16])
def test_logsumexp_of_a_row_does_not_depend_on_its_block(rng, n_classes):
    """Each row takes the float or the double lanes by its own max: the same bits at any
    offset in the blocks, and from cross_entropy's return_lse. A few rows of max < 0 share
    their blocks with different rows at each offset."""
    x = _rows_near_cancellation(rng, 300, n_classes, rows=np.arange(3, 300, 11))
    whole = fastloss.logsumexp(x, axis=1)
    target = rng.integers(0, n_classes, len(x))
    for start in range(1, 16, 2):
        np.testing.assert_array_equal(fastloss.logsumexp(x[start:], axis=1), whole[start:])
        _, lse = fastloss.cross_entropy(x[start:], target[start:], reduction="none",
                                        return_lse=True)
        np.testing.assert_array_equal(lse, whole[start:])


@pytest.mark.parametrize("n_classes", [*range(2, 41), 100, 1000, 2047, 2048, 2049, 5000])
def test_float_logsumexp_of_log_probabilities_keeps_its_relative_accuracy(n_classes):
    """Rows of log-probabilities (a max just below 0, logsumexp near 0, of either sign):
    the float exponentials' error would cancel with the max. For every class count, within
    2 float32 ulps of the exact value, or where even double lanes cancel (a result 1e-10 of
    the max), within 2^-50 (|max| + log S): the documented bound. The same
    bits from cross_entropy's return_lse (in place too, and along another axis)."""
    rng = np.random.default_rng(n_classes)
    rows = []
    for eps in (1e-1, 1e-3, 1e-6, 1e-9):
        for _ in range(4):
            p = rng.random(n_classes) ** 3
            p[rng.integers(n_classes)] = 0.0
            p = p / p.sum() * eps
            p[rng.integers(n_classes)] += 1 - eps
            with np.errstate(divide="ignore"):          # log 0: a masked class
                rows.append(np.log(p))
    x = np.array(rows, dtype=np.float32)
    expected, parts = _exact_logsumexp(x)
    assert np.abs(expected).min() < 1e-12          # results near 0
    got = fastloss.logsumexp(x)
    assert_close(got, expected, np.float32, ulps=2, atol=2.0**-50 * parts,
                 what="logsumexp")
    target = rng.integers(0, n_classes, len(x))
    _, lse = fastloss.cross_entropy(x, target, reduction="none", return_lse=True)
    np.testing.assert_array_equal(lse, got)
    _, _, lse = fastloss.cross_entropy(x.copy(), target, grad_out=x.copy(), return_lse=True)
    np.testing.assert_array_equal(lse, got)
    in_place = x.copy()
    _, _, lse = fastloss.cross_entropy(in_place, target, grad_out=in_place, return_lse=True)
    np.testing.assert_array_equal(lse, got)
    # the class axis first: the strided kernel's tiles
    _, _, lse = fastloss.cross_entropy(np.ascontiguousarray(x.T), target, axis=0,
                                       return_grad=True, return_lse=True)
    np.testing.assert_array_equal(lse, got)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_other_float_dtypes(rng, name):
    x = make_logits(rng, (5, 8), np.float16)
    got = _call(name, x)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(float), getattr(reference, name)(x), rtol=2e-3,
                               atol=2e-3)


@given(
    hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
        elements=st.one_of(st.floats(-100, 100, width=32), st.just(-np.inf)),
    ),
    st.sampled_from(FUNCTIONS),
    st.integers(-1, 0),
)
def test_property_matches_reference(x, name, axis):
    got = _call(name, x, axis=axis)
    assert_close(got, getattr(reference, name)(x, axis=axis), x.dtype, atol=ATOL[x.dtype])
