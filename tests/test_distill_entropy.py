"""kl_div_with_logits, entropy, entropy_from_logits, one_hot and base=: against the
reference, finite differences, docs/theory.md's figures and the identities between them."""

from __future__ import annotations

import decimal

import numpy as np
import pytest
from conftest import assert_close, check_fd_gradient, make_logits
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastloss
from fastloss import reference

KINDS = ["probs", "log_probs", "logits"]
KL_REDUCTIONS = ["batchmean", "mean", "sum", "none"]
ATOL = {np.dtype(np.float32): 1e-12, np.dtype(np.float64): 1e-13}


def grad_atol(ref_grad, dtype):
    """Gradients here are differences of nearly equal terms (q - p): a few ulps of the
    largest entry (see test_cross_entropy_options.grad_atol)."""
    finite = np.abs(np.asarray(ref_grad, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    return 1e-15 + 4 * np.finfo(dtype).eps * (finite.max() if finite.size else 0.0)


def make_teacher(rng, shape, dtype, kind, axis=-1, temperature=1.0):
    logits = make_logits(rng, shape, np.float64)
    if kind == "logits":
        return logits.astype(dtype)
    if kind == "log_probs":
        return reference.log_softmax(logits / temperature, axis).astype(dtype)
    return reference.softmax(logits / temperature, axis).astype(dtype)


def _row_formula_bound(dtype, n_classes):
    """The relative error of a distillation row that the row formula computes: its terms'
    rounding (double lanes: a few units of 2^-52; float rows of more than 16 classes: of
    2^-29, from their float exponentials) up to 2^16 times the KL (fl_kl_terms_cancel)."""
    rounding = 2.0**-29 if dtype == np.float32 and n_classes > 16 else 4 * 2.0**-52
    return max(2.0**16 * rounding, 8 * np.finfo(dtype).eps)


def _exact_kl(student, teacher, kind, temperature):
    """T**2 KL(p || softmax(s / T)) of one row and its gradient T (q sum(p) - p), in 60-digit
    decimal arithmetic from the definition (the KL as sum_j p_j (log p_j - log q_j))."""
    with decimal.localcontext() as context:
        context.prec = 60
        t_scale = decimal.Decimal(1) / decimal.Decimal(temperature)
        xs = [decimal.Decimal(float(v)) * t_scale for v in student]
        top = max(xs)
        log_z = sum((v - top).exp() for v in xs).ln() + top
        log_q = [v - log_z for v in xs]
        if kind == "logits":
            ts = [decimal.Decimal(float(v)) * t_scale for v in teacher]
            top = max(ts)
            log_zt = sum((v - top).exp() for v in ts).ln() + top
            log_p = [v - log_zt for v in ts]
        elif kind == "log_probs":
            log_p = [decimal.Decimal(float(v)) for v in teacher]
        else:
            log_p = [decimal.Decimal(float(v)).ln() if v else None for v in teacher]
        p = [v.exp() if v is not None and v.is_finite() else decimal.Decimal(0)
             for v in log_p]
        kl = sum(pj * (lp - lq) for pj, lp, lq in zip(p, log_p, log_q, strict=True) if pj)
        t2 = decimal.Decimal(temperature) ** 2
        total_p = sum(p)
        grad = [(lq.exp() * total_p - pj) * t2 * t_scale for pj, lq in zip(p, log_q, strict=True)]
        return float(kl * t2), np.array([float(g) for g in grad])


class TestKLDivWithLogits:
    X = np.array([[1.0, 2.0, 3.0]])

    @pytest.mark.parametrize("reduction", KL_REDUCTIONS)
    @pytest.mark.parametrize("scaled", [True, False], ids=["T2", "plain"])
    @pytest.mark.parametrize("temperature", [1.0, 2.5])
    @pytest.mark.parametrize("kind", KINDS)
    def test_matches_reference(self, rng, dtype, kind, temperature, scaled, reduction):
        student = make_logits(rng, (9, 17), dtype)
        teacher = make_teacher(rng, (9, 17), dtype, kind, temperature=temperature)
        kwargs = dict(teacher_kind=kind, temperature=temperature,
                      scale_by_temperature=scaled, reduction=reduction)
        loss, grad = fastloss.kl_div_with_logits(student, teacher, return_grad=True, **kwargs)
        ref_loss, ref_grad = reference.kl_div_with_logits(student, teacher, return_grad=True,
                                                          **kwargs)
        assert_close(loss, ref_loss, dtype, ulps=8, atol=ATOL[dtype], what="loss")
        assert_close(grad, ref_grad, dtype, ulps=8, atol=grad_atol(ref_grad, dtype),
                     what="grad")

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("shape, axis", [((3, 4500), -1), ((4, 6, 19), 1), ((5, 3), 0)],
                             ids=["long", "nchw", "axis0"])
    def test_layouts(self, rng, dtype, kind, shape, axis):
        student = make_logits(rng, shape, dtype)
        teacher = make_teacher(rng, shape, dtype, kind, axis=axis, temperature=2.0)
        kwargs = dict(teacher_kind=kind, temperature=2.0, axis=axis, reduction="none")
        loss, grad = fastloss.kl_div_with_logits(student, teacher, return_grad=True, **kwargs)
        ref_loss, ref_grad = reference.kl_div_with_logits(student, teacher, return_grad=True,
                                                          **kwargs)
        assert_close(loss, ref_loss, dtype, ulps=8, atol=ATOL[dtype])
        assert_close(grad, ref_grad, dtype, ulps=8, atol=grad_atol(ref_grad, dtype))

    @pytest.mark.parametrize("reduction", KL_REDUCTIONS)
    @pytest.mark.parametrize("kind", KINDS)
    def test_gradient_matches_finite_differences(self, rng, kind, reduction):
        student = make_logits(rng, (3, 5), np.float64)
        teacher = make_teacher(rng, (3, 5), np.float64, kind, temperature=1.7)
        kwargs = dict(teacher_kind=kind, temperature=1.7, reduction=reduction)

        def total(x):
            return float(np.sum(fastloss.kl_div_with_logits(x, teacher, **kwargs)))

        _, grad = fastloss.kl_div_with_logits(student, teacher, return_grad=True, **kwargs)
        check_fd_gradient(total, student, grad)

    @pytest.mark.parametrize("kind", KINDS)
    def test_in_place_and_threads(self, rng, kind):
        student = make_logits(rng, (400, 300), np.float32)
        teacher = make_teacher(rng, (400, 300), np.float32, kind)
        runs = [fastloss.kl_div_with_logits(student, teacher, teacher_kind=kind, n_threads=n,
                                            return_grad=True) for n in (1, 2, 3)]
        for loss, grad in runs[1:]:
            assert loss.tobytes() == runs[0][0].tobytes()
            assert grad.tobytes() == runs[0][1].tobytes()
        buffer = student.copy()
        loss, grad = fastloss.kl_div_with_logits(buffer, teacher, teacher_kind=kind,
                                                 grad_out=buffer)
        assert grad is buffer and loss == runs[0][0]
        assert buffer.tobytes() == runs[0][1].tobytes()

    def test_theory_worked_example(self, dtype):
        # docs/theory.md: p = (0.8, 0.1, 0.1), q = (0.2, 0.2, 0.6): KL(p || q) = 0.860545 nats.
        p = np.array([[0.8, 0.1, 0.1]], dtype=dtype)
        q_logits = np.log(np.array([[0.2, 0.2, 0.6]])).astype(dtype)
        kl = fastloss.kl_div_with_logits(q_logits, p)
        assert float(kl) == pytest.approx(0.860545, abs=2e-6)
        ce = fastloss.cross_entropy(q_logits, p)
        h = fastloss.entropy(p)
        assert float(ce) == pytest.approx(1.499577, abs=2e-6)
        assert float(h[0]) == pytest.approx(0.639032, abs=2e-6)

    @pytest.mark.parametrize("kind", KINDS)
    def test_kl_is_cross_entropy_minus_entropy(self, rng, kind):
        student = make_logits(rng, (20, 12), np.float64)
        teacher = make_teacher(rng, (20, 12), np.float64, kind)
        probs = {"probs": teacher, "log_probs": np.exp(teacher),
                 "logits": reference.softmax(teacher)}[kind]
        kl = fastloss.kl_div_with_logits(student, teacher, teacher_kind=kind,
                                         reduction="none")
        ce = fastloss.cross_entropy(student, probs, reduction="none")
        np.testing.assert_allclose(kl, ce - fastloss.entropy(probs), rtol=1e-12, atol=1e-14)
        # The gradients agree too: the entropy does not depend on the student.
        _, g_kl = fastloss.kl_div_with_logits(student, teacher, teacher_kind=kind,
                                              reduction="sum", return_grad=True)
        _, g_ce = fastloss.cross_entropy(student, probs, reduction="sum", return_grad=True)
        np.testing.assert_allclose(g_kl, g_ce, rtol=1e-12, atol=1e-15)

    def test_hard_label_kl_equals_cross_entropy(self, rng, dtype):
        student = make_logits(rng, (10, 7), dtype)
        labels = rng.integers(0, 7, 10)
        kl, g_kl = fastloss.kl_div_with_logits(student, fastloss.one_hot(labels, 7, dtype=dtype),
                                               reduction="batchmean", return_grad=True)
        ce, g_ce = fastloss.cross_entropy(student, labels, return_grad=True)
        assert_close(kl, float(ce), dtype, ulps=4, atol=ATOL[dtype])
        assert_close(g_kl, g_ce.astype(float), dtype, ulps=4, atol=1e-7 if dtype == np.float32
                     else 1e-16)

    def test_zero_teacher_probability_on_masked_student_counts_zero(self, dtype):
        student = np.array([[1.0, -np.inf, 0.5]], dtype=dtype)
        teacher = np.array([[0.6, 0.0, 0.4]], dtype=dtype)
        loss, grad = fastloss.kl_div_with_logits(student, teacher, return_grad=True)
        assert np.isfinite(loss) and np.isfinite(grad).all() and grad[0, 1] == 0
        logits_teacher = np.array([[0.0, -np.inf, 1.0]], dtype=dtype)
        loss = fastloss.kl_div_with_logits(student, logits_teacher, teacher_kind="logits")
        assert np.isfinite(loss)
        # A masked student class the teacher gives probability: infinite loss.
        positive = np.array([[0.3, 0.3, 0.4]], dtype=dtype)
        assert fastloss.kl_div_with_logits(student, positive) == np.inf

    def test_identical_distributions_give_zero(self, rng, dtype):
        logits = make_logits(rng, (6, 9), dtype)
        loss, grad = fastloss.kl_div_with_logits(logits, logits, teacher_kind="logits",
                                                 temperature=3.0, return_grad=True)
        # the terms of the row formula cancel: computed again, u_j = 0 gives exactly 0
        assert float(loss) == 0.0 and not grad.any()

    @pytest.mark.parametrize("n_classes", [3, 10, 100, 3000], ids=lambda c: f"C{c}")
    def test_relative_accuracy_at_any_temperature(self, rng, dtype, n_classes):
        # A teacher's logits: the row formula's terms (~log C) cancel to the KL (~1/T**2),
        # and such rows are computed again without cancellation (losses/kl_refined.h).
        # Against 60-digit arithmetic, T**2 KL and its gradient keep their relative
        # accuracy up to T = 1e12 on every path (blocks, batches, rows; in place too).
        student = rng.standard_normal((2, n_classes)) * 3
        teacher = student + rng.standard_normal((2, n_classes))
        teacher[1] = student[1] + 1e-3 * rng.standard_normal(n_classes)   # near agreement
        student, teacher = student.astype(dtype), teacher.astype(dtype)
        eps = np.finfo(dtype).eps
        for temperature in [1.0, 4.0, 1e2, 1e4, 1e8, 1e12]:
            # up to T = 100 the row formula may serve (its terms' rounding, up to 2^16
            # times the KL); beyond, these rows are all computed again
            bound = (_row_formula_bound(dtype, n_classes) if temperature <= 100
                     else 16 * eps)
            self._check_rows(student, teacher, "logits", temperature, bound, 4 * bound)

    @pytest.mark.parametrize("kind", ["probs", "log_probs"])
    @pytest.mark.parametrize("n_classes", [3, 10, 100, 3000], ids=lambda c: f"C{c}")
    def test_accuracy_of_given_teachers_near_the_student(self, rng, dtype, kind, n_classes):
        # Probabilities as given (not renormalised: the "KL" may be negative), near the
        # student's (the row computed again), one of them 0: the KL of the numbers given,
        # to their own conditioning (a relative change of eps in p_j moves the KL by
        # eps p_j (1 + |log p_j|), and the gradient T (P q_j - p_j) by eps T p_j).
        student = rng.standard_normal((3, n_classes)) * 3
        student[2, 0] = -30.0                  # q_0 ~ 1e-13 where the teacher has p_0 = 0
        log_p = reference.log_softmax(student, 1)
        log_p[0] += 0.5 * rng.standard_normal(n_classes) / n_classes
        log_p[1] += 1e-6 * rng.standard_normal(n_classes)
        log_p[2, 0] = -np.inf
        teacher = np.exp(log_p) if kind == "probs" else log_p
        student, teacher = student.astype(dtype), teacher.astype(dtype)
        eps = np.finfo(dtype).eps
        for temperature in [1.0, 4.0]:
            scaled = (1 + np.log(n_classes)) * temperature**2
            bound = (_row_formula_bound(dtype, n_classes) if dtype == np.float32
                     else 16 * eps * scaled)
            self._check_rows(student, teacher, kind, temperature, bound, 8 * eps,
                             absolute=dtype == np.float64, grad_absolute=True)

    @staticmethod
    def _check_rows(student, teacher, kind, temperature, bound, grad_bound, absolute=False,
                    grad_absolute=False):
        """Each row's loss within bound of the exact value (relative, or absolute), its
        gradient within grad_bound of the largest entry (grad_absolute: of T max(q, 1));
        in place the same bits."""
        losses, grad = fastloss.kl_div_with_logits(
            student, teacher, teacher_kind=kind, temperature=temperature, reduction="none",
            return_grad=True)
        in_place = student.copy()
        fastloss.kl_div_with_logits(in_place, teacher, teacher_kind=kind,
                                    temperature=temperature, reduction="sum",
                                    grad_out=in_place)
        assert np.array_equal(in_place, grad)
        for row in range(len(student)):
            exact, exact_grad = _exact_kl(student[row], teacher[row], kind, temperature)
            error = abs(float(losses[row]) - exact)
            assert error <= bound * (1.0 if absolute else abs(exact)), (temperature, row, error)
            scale = np.abs(exact_grad).max()
            if grad_absolute:
                q = reference.softmax(student[row].astype(np.float64) / temperature, 0)
                scale = temperature * max(q.max(), 1.0)
            error = np.abs(grad[row] - exact_grad).max()
            assert error <= grad_bound * scale, (temperature, row, error)

    def test_huge_temperatures_are_rejected(self):
        with pytest.raises(ValueError, match=r"temperature must be a finite number in "
                                             r"\(0, 1e\+100\], got 1e\+200"):
            fastloss.kl_div_with_logits(self.X, self.X, temperature=1e200)
        loss = fastloss.kl_div_with_logits(self.X, self.X + np.array([[0.0, 1.0, 2.0]]),
                                           teacher_kind="logits", temperature=1e100)
        assert np.isfinite(loss) and loss > 0

    def test_empty_batch(self, dtype):
        empty = np.empty((0, 4), dtype=dtype)
        assert np.isnan(fastloss.kl_div_with_logits(empty, empty))
        assert fastloss.kl_div_with_logits(empty, empty, reduction="sum") == 0


class TestEntropy:
    def test_theory_figures(self):
        assert float(fastloss.entropy(np.array([0.5, 0.5]), base=2)) == pytest.approx(1.0)
        assert float(fastloss.entropy(np.array([0.5, 0.5]))) == pytest.approx(0.693147, 1e-6)
        assert float(fastloss.entropy(np.full(6, 1 / 6))) == pytest.approx(1.791759, 1e-6)
        assert float(fastloss.entropy(np.array([0.6, 0.4]), base=2)) == pytest.approx(
            0.9710, abs=5e-5)
        assert fastloss.entropy(np.array([0.0, 1.0, 0.0])) == 0.0
        assert float(fastloss.entropy(np.array([0.8, 0.1, 0.1]))) == pytest.approx(0.639032,
                                                                                  abs=1e-6)

    @pytest.mark.parametrize("base", [None, 2, 10, 0.5])
    @pytest.mark.parametrize("axis", [0, 1, -1])
    def test_matches_reference(self, rng, dtype, axis, base):
        raw = rng.random((5, 2100, 3)) ** 4
        raw[raw < 0.01] = 0.0
        p = (raw / (raw.sum(axis=axis, keepdims=True) + 1e-3)).astype(dtype)
        assert_close(fastloss.entropy(p, axis=axis, base=base),
                     reference.entropy(p, axis=axis, base=base), dtype, ulps=8,
                     atol=ATOL[dtype])

    def test_nan_propagates_and_threads_agree(self, rng):
        p = rng.random((300, 200))
        p[3, 7] = np.nan
        runs = [fastloss.entropy(p, n_threads=n) for n in (1, 2)]
        assert np.isnan(runs[0][3]) and np.isfinite(np.delete(runs[0], 3)).all()
        np.testing.assert_array_equal(runs[0], runs[1])

    @given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=20),
                      elements=st.floats(0, 1)))
    def test_property_matches_reference(self, p):
        assert_close(fastloss.entropy(p), reference.entropy(p), np.float64, atol=1e-14)


class TestEntropyFromLogits:
    @pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
    @pytest.mark.parametrize("shape", [(7, 1), (8, 2), (6, 33), (3, 4500)],
                             ids=lambda s: f"{s[0]}x{s[1]}")
    def test_matches_reference(self, rng, dtype, shape, reduction):
        logits = make_logits(rng, shape, dtype)
        h, grad = fastloss.entropy_from_logits(logits, reduction=reduction, return_grad=True)
        ref_h, ref_grad = reference.entropy_from_logits(logits, reduction=reduction,
                                                        return_grad=True)
        assert_close(h, ref_h, dtype, ulps=8, atol=ATOL[dtype], what="entropy")
        assert_close(grad, ref_grad, dtype, ulps=8, atol=grad_atol(ref_grad, dtype),
                     what="grad")

    @pytest.mark.parametrize("reduction", ["none", "mean"])
    def test_gradient_matches_finite_differences(self, rng, reduction):
        logits = make_logits(rng, (3, 6), np.float64)

        def total(x):
            return float(np.sum(fastloss.entropy_from_logits(x, reduction=reduction)))

        _, grad = fastloss.entropy_from_logits(logits, reduction=reduction, return_grad=True)
        check_fd_gradient(total, logits, grad, abs_tol=1e-10)

    def test_masks_uniform_and_axis(self, dtype):
        logits = np.array([[0.0, -np.inf, 0.0, -np.inf]], dtype=dtype)
        h, grad = fastloss.entropy_from_logits(logits, base=2, return_grad=True)
        assert float(h[0]) == pytest.approx(1.0, abs=1e-6)          # two equal classes
        assert (grad == 0).all()                                      # a maximum
        x = np.random.default_rng(3).standard_normal((4, 5, 6)).astype(dtype)
        assert_close(fastloss.entropy_from_logits(x, axis=1),
                     reference.entropy_from_logits(x, axis=1), dtype, ulps=8,
                     atol=ATOL[dtype])

    def test_in_place_and_threads(self, rng):
        logits = make_logits(rng, (300, 2500), np.float32)
        runs = [fastloss.entropy_from_logits(logits, reduction="mean", n_threads=n,
                                             return_grad=True) for n in (1, 2, 3)]
        for h, grad in runs[1:]:
            assert h.tobytes() == runs[0][0].tobytes()
            assert grad.tobytes() == runs[0][1].tobytes()
        buffer = logits.copy()
        _, grad = fastloss.entropy_from_logits(buffer, reduction="mean", grad_out=buffer)
        assert grad is buffer and buffer.tobytes() == runs[0][1].tobytes()


class TestOneHot:
    @pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, bool])
    def test_matches_eye(self, rng, dtype):
        labels = rng.integers(0, 5, (3, 4))
        encoded = fastloss.one_hot(labels, 5, dtype=dtype)
        assert encoded.shape == (3, 4, 5) and encoded.dtype == dtype
        np.testing.assert_array_equal(encoded, np.eye(5, dtype=dtype)[labels])

    def test_theory_example(self):
        # (cat, dog, monkey): "dog" -> [0, 1, 0].
        np.testing.assert_array_equal(fastloss.one_hot(1, 3), [0.0, 1.0, 0.0])

    @pytest.mark.parametrize("labels, exc, message", [
        ([0, 3], IndexError, r"labels must be in \[0, 3\), got 3"),
        ([-1, 0], IndexError, r"labels must be in \[0, 3\), got -1"),
        ([0.0, 1.0], TypeError, "labels must be integer class indices, got dtype float64"),
        ([True], TypeError, "labels must be integer class indices, got dtype bool"),
    ])
    def test_bad_labels(self, labels, exc, message):
        with pytest.raises(exc, match=message):
            fastloss.one_hot(labels, 3)

    @pytest.mark.parametrize("num_classes, exc", [(0, ValueError), (-2, ValueError),
                                                  (2.0, TypeError), (True, TypeError)])
    def test_bad_num_classes(self, num_classes, exc):
        with pytest.raises(exc, match="num_classes"):
            fastloss.one_hot([0], num_classes)


class TestBase:
    def test_cross_entropy_in_bits(self, dtype):
        logits = np.array([[2.3, -1.2]], dtype=dtype)
        _, g_nats = fastloss.cross_entropy(logits, [1], return_grad=True)
        bits, g_bits = fastloss.cross_entropy(logits, [1], base=2, return_grad=True)
        assert float(bits) == pytest.approx(3.52975 / np.log(2), rel=1e-5)
        np.testing.assert_allclose(g_bits, g_nats / np.log(2), rtol=1e-6)

    @pytest.mark.parametrize("base", [2, 10, 0.5, np.e])
    def test_every_base_matches_reference(self, rng, base):
        logits = make_logits(rng, (6, 5), np.float64)
        target = rng.integers(0, 5, 6)
        got = fastloss.cross_entropy(logits, target, base=base, return_grad=True,
                                     label_smoothing=0.1)
        ref = reference.cross_entropy(logits, target, base=base, return_grad=True,
                                      label_smoothing=0.1)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-13)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-13, atol=1e-16)
        teacher = reference.softmax(make_logits(rng, (6, 5), np.float64))
        np.testing.assert_allclose(fastloss.kl_div_with_logits(logits, teacher, base=base),
                                   reference.kl_div_with_logits(logits, teacher, base=base),
                                   rtol=1e-13)
        np.testing.assert_allclose(fastloss.entropy_from_logits(logits, base=base),
                                   reference.entropy_from_logits(logits, base=base),
                                   rtol=1e-13)

    def test_lse_stays_in_nats(self, rng):
        logits = make_logits(rng, (4, 3), np.float64)
        _, lse = fastloss.cross_entropy(logits, [0, 1, 2, 0], base=2, return_lse=True)
        np.testing.assert_array_equal(lse, fastloss.logsumexp(logits))


class TestBadInput:
    X = np.zeros((2, 3))

    @pytest.mark.parametrize("base, exc", [(0, ValueError), (-2, ValueError), (1, ValueError),
                                           (np.inf, ValueError), (np.nan, ValueError),
                                           ("2", TypeError), (True, TypeError)])
    @pytest.mark.parametrize("fn", ["cross_entropy", "kl_div_with_logits", "entropy",
                                    "entropy_from_logits"])
    def test_bad_base(self, fn, base, exc):
        args = {"cross_entropy": (self.X, [0, 1]), "kl_div_with_logits": (self.X, self.X + 0.3),
                "entropy": (self.X,), "entropy_from_logits": (self.X,)}[fn]
        with pytest.raises(exc, match="base must be"):
            getattr(fastloss, fn)(*args, base=base)

    @pytest.mark.parametrize("temperature", [0.0, -1.0, np.inf, np.nan])
    def test_bad_temperature(self, temperature):
        with pytest.raises(ValueError, match="temperature must be"):
            fastloss.kl_div_with_logits(self.X, self.X + 0.3, temperature=temperature)

    def test_unknown_teacher_kind(self):
        with pytest.raises(ValueError, match=r"teacher_kind must be one of \('probs', "
                                             r"'log_probs', 'logits'\), got 'prob'"):
            fastloss.kl_div_with_logits(self.X, self.X, teacher_kind="prob")

    def test_teacher_shape(self):
        with pytest.raises(ValueError, match=r"teacher must have the shape of student_logits, "
                                             r"\(2, 3\), got \(2, 2\)"):
            fastloss.kl_div_with_logits(self.X, np.zeros((2, 2)))

    @pytest.mark.parametrize("bad, message", [(-0.1, "must be non-negative, got -0.1"),
                                              (np.nan, "must be finite"),
                                              (np.inf, "must be finite")])
    def test_bad_teacher_probabilities(self, bad, message):
        teacher = np.full((2, 3), 1 / 3)
        teacher[1, 2] = bad
        with pytest.raises(ValueError, match=f"teacher probabilities {message}"):
            fastloss.kl_div_with_logits(self.X, teacher)

    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_bad_teacher_log_probs(self, bad):
        teacher = np.full((2, 3), -1.0)
        teacher[0, 0] = bad
        with pytest.raises(ValueError, match=r"teacher log-probabilities must not be NaN or "
                                             r"\+inf"):
            fastloss.kl_div_with_logits(self.X, teacher, teacher_kind="log_probs")

    def test_unknown_reduction(self):
        with pytest.raises(ValueError, match="reduction must be one of"):
            fastloss.kl_div_with_logits(self.X, self.X, reduction="avg")
        with pytest.raises(ValueError, match="reduction must be one of"):
            fastloss.entropy_from_logits(self.X, reduction="batchmean")

    def test_integer_teacher(self):
        with pytest.raises(TypeError, match="teacher must be an array of real floating"):
            fastloss.kl_div_with_logits(self.X, np.zeros((2, 3), dtype=int))

    @pytest.mark.parametrize("bad, message", [(-0.5, "p must be non-negative, got -0.5"),
                                              (np.inf, r"p must be finite \(or NaN\)")])
    def test_entropy_of_non_probabilities(self, bad, message):
        p = np.full((2, 3), 0.2)
        p[0, 1] = bad
        with pytest.raises(ValueError, match=message):
            fastloss.entropy(p)
