/* The row engine's primitives: what one row (or one chunk of a long row) needs, in the
 * vector types of simd/vec.h for float and double rows.
 *
 * fl_max_T(x, n, lowest): the max of x[0:n] as double; NaN never wins a comparison, so it
 *   is skipped (exp(NaN) = NaN catches it in the sum); -inf where there is no other value.
 * fl_exp_sum_T(x, n, sub, s, out, self_dot, ones, lowest, drain): sum_i exp((x_i - sub) s)
 *   for x_i <= sub (sub is the max of x, or above it) and s > 0, less the terms with
 *   x_i = sub (exactly 1), whose count goes to *ones (so that S - 1 is exact: see the
 *   engine's log S), storing each exponential in out[i] unless out is NULL (out may be x:
 *   x_i is read before out[i] is written). Unless self_dot is NULL it also returns
 *   sum_i e_i (sub - x_i) over e_i != 0 there (entropy; x_i = -inf has e_i = 0, adds 0).
 * fl_scale_T(e, n, factor): e_i <- e_i factor.
 * fl_sub_shift_T(x, n, a, b, out): out_i <- (x_i - a) - b, in double (log_softmax: x - a is
 *   exact for x near the max a, so large logits lose nothing).
 * The coefficient sums and passes of a loss with coefficients a_j (coefs_t.h, and float
 * lanes below).
 *
 * Float rows are computed in float, with two safeguards that keep them within a few ulps
 * of the float64 result:
 * - the argument x - shift is carried exactly as d + lo (maths/exact.h): rounding it
 *   would cost |x - shift| / 2 ulps of the result;
 * - the sum of a row's exponentials leaves out the terms at the shift (x = shift, exactly
 *   1) and counts them, sums the others in float only eight at a time (a tree of three
 *   roundings), then in double: a 1 in a float sum would round away the small terms, and
 *   with them the relative accuracy of a small loss log(1 + sum of the others).
 * Sums are formed in an order that depends on n alone (never on the data's alignment or
 * the threads): the tail of a row is a vector padded with -inf (whose exp is 0).
 */
#ifndef FL_ENGINE_ROWS_H
#define FL_ENGINE_ROWS_H

#include "../maths/exact.h"
#include "../maths/exp.h"
#include "../maths/log.h"
#include "row_types.h"

/* The loops fetch memory this far ahead of the element they work on: a chunk of a row is
 * scanned for its max, then exponentiated from L1, and without the prefetches the next
 * chunk's loads would wait for memory between the two. A whole chunk ahead in rows longer
 * than a chunk of FL_AHEAD elements, else FL_AHEAD_BYTES (docs/performance.md: the
 * distances measured). */
#define FL_AHEAD 2048
#define FL_AHEAD_BYTES 8192

/* Rows of at most this many elements take a scalar loop with libm's exp in double: a
 * vector's latency costs more than a few scalar exps, and one row has nothing to overlap
 * it with. */
#define FL_SHORT_ROW 4

/* Rows shorter than this do not look for their least element (fl_max_f32): in a row of
 * 100 floats it cost about as much as the cheaper subtraction it allows saves. */
#define FL_LOWEST_MIN_ROW 256

/* e * factor as fl_scale_T forms it (and the drains): in float where the factor is a float
 * (lanes), else in double (fl_factor_lanes_T returns 0: element by element). */
FL_INLINE int fl_factor_lanes_f32(double factor) { return fabs(factor) <= 3.0e38; }
FL_INLINE int fl_factor_lanes_f64(double factor) { (void)factor; return 1; }
FL_INLINE float fl_drain_one_f32(float e, double factor) {
    return fl_factor_lanes_f32(factor) ? e * (float)factor : (float)(e * factor);
}
FL_INLINE double fl_drain_one_f64(double e, double factor) { return e * factor; }

/* The primitives that are the same code for both types (rows_t.h). */
#define FL_TEMPLATE "engine/rows_t.h"
#include "../each_type.h"
#undef FL_TEMPLATE

/* ---- exponential sums: float rows ---- */

/* Four vectors of float exponentials from x[0:n] (n < 4 lanes: padded): stored in out
 * unless it is NULL, the terms at the shift counted in ones; returns the others' sum lane
 * by lane, in float. Unless dot is NULL, *dot gets the sum of e (x - sub) s lane by lane
 * (e (d + lo): the exact argument; terms of e = 0 add 0, x = -inf too), in float: its
 * terms share a sign, so the sum of a few loses no more than their roundings. */
FL_INLINE fl_vf fl_exp_group_f32(const float* x, ptrdiff_t n, float sub, float s, float* out,
                                 fl_vi* ones, int kind, fl_vf* dot) {
    const fl_vf zero = {0};
    fl_vf e[4], t[4];
    for (int k = 0; k < 4; k++) {
        const fl_vf v = fl_group_load_f32(x, n, k);
        fl_vf lo;
        const fl_vf d = fl_shift_f(v, sub, s, &lo, kind);
        e[k] = fl_exp_neg_f(d, lo);
        if (out) fl_group_store_f32(out, n, k, e[k]);
        if (dot) t[k] = fl_select_f(e[k] != zero, fl_fma_f(e[k], d, e[k] * lo), zero);
        const fl_vi at_shift = v == sub;
        *ones -= at_shift;
        e[k] = (fl_vf)(~at_shift & (fl_vi)e[k]);
    }
    if (dot) *dot = (t[0] + t[1]) + (t[2] + t[3]);
    return (e[0] + e[1]) + (e[2] + e[3]);
}

/* acc (two double vectors) += the float lanes of sum. */
FL_INLINE void fl_add_widened(fl_vd* acc, fl_vf sum) {
    acc[0] += fl_widen_lo(sum);
    acc[1] += fl_widen_hi(sum);
}

/* fl_exp_sum_f32's exponentials, with the subtraction kind (a literal at each call: one
 * copy of the loop each), their dot (fl_exp_group_f32's, widened into dot[0:2]) unless dot
 * is NULL, and the previous row's chunk drained (drain unless NULL: a group of it after
 * each group of exponentials, the rest at the end). */
FL_INLINE void fl_exp_rest_f32(const float* x, ptrdiff_t n, float sub, float s, float* out,
                               fl_vd* acc, fl_vi* ones, int kind, const fl_drain* drain,
                               fl_vd* dot) {
    const size_t ahead = n >= FL_AHEAD ? FL_AHEAD * sizeof(float) : FL_AHEAD_BYTES;
    const ptrdiff_t start = drain ? fl_drain_start_f32(drain, n) : 0;
    ptrdiff_t drained = start;
    ptrdiff_t i = 0;
    fl_vf dot_first, dot_second;
    /* Whole groups (no tail checks), two at a time: their sums are added in float before
     * they are widened (8 terms a lane in a tree of 3 roundings), which halves the
     * conversions. */
    for (; i + 8 * FL_NF <= n; i += 8 * FL_NF) {
        fl_prefetch(x + i, n < FL_AHEAD && out ? out + i : NULL, 8 * FL_WIDTH, ahead);
        const fl_vf first = fl_exp_group_f32(x + i, 4 * FL_NF, sub, s, out ? out + i : NULL,
                                             ones, kind, dot ? &dot_first : NULL);
        const fl_vf second = fl_exp_group_f32(x + i + 4 * FL_NF, 4 * FL_NF, sub, s,
                                              out ? out + i + 4 * FL_NF : NULL, ones, kind,
                                              dot ? &dot_second : NULL);
        fl_add_widened(acc, first + second);
        if (dot) fl_add_widened(dot, dot_first + dot_second);
        if (drain && drained + 8 * FL_NF <= n) {
            fl_drain_vectors_f32(drain, drained, 8 * FL_NF);
            drained += 8 * FL_NF;
        }
    }
    if (i + 4 * FL_NF <= n) {
        fl_add_widened(acc, fl_exp_group_f32(x + i, 4 * FL_NF, sub, s, out ? out + i : NULL,
                                             ones, kind, dot ? &dot_first : NULL));
        if (dot) fl_add_widened(dot, dot_first);
        i += 4 * FL_NF;
    }
    if (i < n) {
        fl_add_widened(acc, fl_exp_group_f32(x + i, n - i, sub, s, out ? out + i : NULL,
                                             ones, kind, dot ? &dot_first : NULL));
        if (dot) fl_add_widened(dot, dot_first);
    }
    if (drain) {
        const ptrdiff_t m = (n - drained) / FL_NF * FL_NF;
        fl_drain_vectors_f32(drain, drained, m);
        fl_drain_edges_f32(drain, start, drained + m, n);
    }
}

/* fl_exp_rest_f32 with the subtraction kind a literal at each call: one copy of the loop
 * for each kind (maths/exact.h: Fast2Sum where the row's range allows). */
FL_INLINE void fl_exp_rest_kinds_f32(const float* x, ptrdiff_t n, float sub, float s,
                                     float* out, fl_vd* acc, fl_vi* ones, int kind,
                                     const fl_drain* drain) {
    if (kind == FL_SHIFT_SUB_WIDER)
        fl_exp_rest_f32(x, n, sub, s, out, acc, ones, FL_SHIFT_SUB_WIDER, drain, NULL);
    else if (kind == FL_SHIFT_X_WIDER)
        fl_exp_rest_f32(x, n, sub, s, out, acc, ones, FL_SHIFT_X_WIDER, drain, NULL);
    else
        fl_exp_rest_f32(x, n, sub, s, out, acc, ones, FL_SHIFT_ANY, drain, NULL);
}

/* sum of exp((x - sub) s) over x[0:n] but for the terms at sub (counted in ones_out), the
 * terms stored in out unless it is NULL; with self_dot, also sum exp(...) (sub - x).
 * lowest: the least x (-inf where unknown), which may allow a cheaper subtraction.
 * drain (NULL: none): a chunk of n of the previous row, drained meanwhile (fl_drain). */
FL_INLINE double fl_exp_sum_f32(const float* x, ptrdiff_t n, double sub, double s,
                                float* out, double* self_dot, double* ones_out,
                                double lowest, const fl_drain* drain) {
    if (n <= FL_SHORT_ROW) {
        const double sum = fl_short_exp_sum_f32(x, n, sub, s, out, self_dot, ones_out);
        if (drain) fl_drain_f32(drain, n);
        return sum;
    }
    /* sub is a float (a max of floats), or 0 */
    const float sub_f = (float)sub, s_f = (float)s;
    fl_vd acc[2] = {{0}};
    fl_vi ones = {0};
    /* Short rows (their least element unknown) keep TwoSum: one copy of the loop in the
     * batches of short rows, not three. */
    const int kind = n < FL_LOWEST_MIN_ROW ? FL_SHIFT_ANY : fl_shift_kind(sub_f, lowest);
    if (self_dot) {
        /* the sum of e (x - sub) s, negated and unscaled; TwoSum only (one copy of the
         * loop: the cheaper subtractions gain nothing measurable there) */
        fl_vd dot[2] = {{0}};
        fl_exp_rest_f32(x, n, sub_f, s_f, out, acc, &ones, FL_SHIFT_ANY, drain, dot);
        *self_dot = -fl_hsum(dot[0] + dot[1]) / s;
    } else {
        /* The loop for the row's kind, a literal at each call (one copy each), and a
         * literal scale of 1 for every row but distillation's: the products by s drop out
         * of the loop, the same bits. */
        if (s_f == 1.0f) fl_exp_rest_kinds_f32(x, n, sub_f, 1.0f, out, acc, &ones, kind, drain);
        else fl_exp_rest_kinds_f32(x, n, sub_f, s_f, out, acc, &ones, kind, drain);
    }
    *ones_out = fl_hsum_i32(ones);
    return fl_hsum(acc[0] + acc[1]);
}

/* ---- exponential sums: double rows ---- */

/* Four vectors of double exponentials, as fl_exp_group_f32 (the terms at the shift are
 * counted apart here too: a 1 in the sum would round the others to 1e-16 of it). */
FL_INLINE void fl_exp_group_f64(const double* x, ptrdiff_t n, double sub, double s,
                                double* out, fl_vd* acc, fl_vl* ones, fl_vd* dot) {
    const fl_vd zero = {0};
    for (int k = 0; k < 4; k++) {
        const fl_vd v = fl_group_load_f64(x, n, k);
        const fl_vd e = fl_exp_neg_d((v - sub) * s);
        if (out) fl_group_store_f64(out, n, k, e);
        const fl_vl at_shift = v == sub;
        *ones -= at_shift;
        acc[k] += (fl_vd)(~at_shift & (fl_vl)e);
        if (dot) dot[k] += fl_select_d(e != zero, e * (sub - v), zero);
    }
}

/* fl_exp_sum_f64's loop, with its self dot's accumulators or NULL, and a chunk drained
 * as in fl_exp_rest_f32 (drain unless NULL). */
FL_INLINE void fl_exp_rest_f64(const double* x, ptrdiff_t n, double sub, double s,
                               double* out, fl_vd* acc, fl_vl* ones, fl_vd* dot,
                               const fl_drain* drain) {
    const size_t ahead = n >= FL_AHEAD ? FL_AHEAD * sizeof(double) : FL_AHEAD_BYTES;
    const ptrdiff_t start = drain ? fl_drain_start_f64(drain, n) : 0;
    ptrdiff_t drained = start;
    ptrdiff_t i = 0;
    for (; i + 4 * FL_ND <= n; i += 4 * FL_ND) {      /* whole groups: no tail checks */
        fl_prefetch(x + i, out ? out + i : NULL, 4 * FL_WIDTH, ahead);
        fl_exp_group_f64(x + i, 4 * FL_ND, sub, s, out ? out + i : NULL, acc, ones, dot);
        if (drain && drained + 4 * FL_ND <= n) {
            fl_drain_vectors_f64(drain, drained, 4 * FL_ND);
            drained += 4 * FL_ND;
        }
    }
    if (i < n) fl_exp_group_f64(x + i, n - i, sub, s, out ? out + i : NULL, acc, ones, dot);
    if (drain) {
        const ptrdiff_t m = (n - drained) / FL_ND * FL_ND;
        fl_drain_vectors_f64(drain, drained, m);
        fl_drain_edges_f64(drain, start, drained + m, n);
    }
}

/* fl_exp_sum_f32 in double lanes; lowest is not used (no rounding error term here). */
FL_INLINE double fl_exp_sum_f64(const double* x, ptrdiff_t n, double sub, double s,
                                double* out, double* self_dot, double* ones_out,
                                double lowest, const fl_drain* drain) {
    (void)lowest;
    if (n <= FL_SHORT_ROW) {
        const double sum = fl_short_exp_sum_f64(x, n, sub, s, out, self_dot, ones_out);
        if (drain) fl_drain_f64(drain, n);
        return sum;
    }
    fl_vd acc[4] = {{0}}, dot[4] = {{0}};
    fl_vl ones = {0};
    /* A literal NULL for the loop without a self dot: with the pointer known only at run
     * time, the loop kept dot on the stack and spilled its registers there. */
    if (self_dot) {
        fl_exp_rest_f64(x, n, sub, s, out, acc, &ones, dot, drain);
        *self_dot = fl_hsum((dot[0] + dot[1]) + (dot[2] + dot[3]));
    } else if (s == 1.0) {            /* a constant scale, as in fl_exp_sum_f32 */
        fl_exp_rest_f64(x, n, sub, 1.0, out, acc, &ones, NULL, drain);
    } else {
        fl_exp_rest_f64(x, n, sub, s, out, acc, &ones, NULL, drain);
    }
    *ones_out = fl_hsum_i64(ones);
    return fl_hsum((acc[0] + acc[1]) + (acc[2] + acc[3]));
}

/* ---- rescaling ---- */

/* e_i <- e_i * factor: in float, where the factor is a float (it rounds once more, half an
 * ulp); in double where it is not (a factor beyond float's range, from extreme weights). */
FL_INLINE void fl_scale_f32(float* e, ptrdiff_t n, double factor) {
    ptrdiff_t i = 0;
    if (fl_factor_lanes_f32(factor)) {
        const float f = (float)factor;
        for (; i + FL_NF <= n; i += FL_NF) {
            fl_vf v;
            memcpy(&v, e + i, sizeof v);
            v = v * f;
            memcpy(e + i, &v, sizeof v);
        }
        for (; i < n; i++) e[i] = e[i] * f;
    }
    for (; i < n; i++) e[i] = (float)(e[i] * factor);
}

FL_INLINE void fl_scale_f64(double* e, ptrdiff_t n, double factor) {
    ptrdiff_t i = 0;
    for (; i + FL_ND <= n; i += FL_ND) {
        fl_vd v;
        memcpy(&v, e + i, sizeof v);
        v = v * factor;
        memcpy(e + i, &v, sizeof v);
    }
    for (; i < n; i++) e[i] = e[i] * factor;
}

FL_INLINE void fl_sub_shift_f32(const float* x, ptrdiff_t n, double a, double b,
                                    float* out) {
    ptrdiff_t i = 0;
    for (; i + FL_NF <= n; i += FL_NF) {
        fl_vf v;
        memcpy(&v, x + i, sizeof v);
        v = fl_narrow((fl_widen_lo(v) - a) - b, (fl_widen_hi(v) - a) - b);
        memcpy(out + i, &v, sizeof v);
    }
    for (; i < n; i++) out[i] = (float)(((double)x[i] - a) - b);
}

FL_INLINE void fl_sub_shift_f64(const double* x, ptrdiff_t n, double a, double b,
                                    double* out) {
    ptrdiff_t i = 0;
    for (; i + FL_ND <= n; i += FL_ND) {
        fl_vd v;
        memcpy(&v, x + i, sizeof v);
        v = (v - a) - b;
        memcpy(out + i, &v, sizeof v);
    }
    for (; i < n; i++) out[i] = (x[i] - a) - b;
}

#define FL_TEMPLATE "engine/coefs_t.h"
#include "../each_type.h"
#undef FL_TEMPLATE

FL_INLINE void fl_coef_sums_f64(const double* x, const double* t, ptrdiff_t start,
                                ptrdiff_t stop, double shift, const fl_coef_spec* c,
                                double* sum, double* dot, double* entropy) {
    fl_coef_sums_wide_f64(x, t, start, stop, shift, c, sum, dot, entropy);
}
FL_INLINE void fl_coef_scale_f64(double* e, const double* t, ptrdiff_t start,
                                 ptrdiff_t stop, double factor, double coef_scale,
                                 const fl_coef_spec* c) {
    fl_coef_scale_wide_f64(e, t, start, stop, factor, coef_scale, c);
}

/* Float rows' linear coefficients (a_j = (beta + alpha t_j) w_j: probability targets,
 * label smoothing, teacher probabilities, class weights rounded to float where each is 0
 * or within [2^-100, 2^64], which keeps their relative precision) go in float lanes,
 * twice as many as double ones and with fewer conversions. (Teachers given as logits or
 * log-probabilities: fl_coef_scale_exp_f32 for the gradient, double for the sums.) */
FL_INLINE int fl_coef_in_float(const fl_coef_spec* c) {
    return !c->exp_kind && (!c->class_weight || c->weights_fit_float);
}

/* Their sums too, but for distillation's (with_entropy): their terms all have one sign
 * (a_j >= 0, shift >= x_j), so nothing cancels in them, but the teacher's entropy cancels
 * against them and stays in double with them. (The gradient, q - a, has no such sum.) */
FL_INLINE int fl_coef_sums_in_float(const fl_coef_spec* c) {
    return fl_coef_in_float(c) && !c->with_entropy;
}

/* a_j = b_j w_j of m (<= FL_NF) float lanes from j as b_j = beta + alpha t_j (0 past
 * them) and w_j into *w_out (1 without weights): a product with a weight may underflow
 * where b_j is tiny, so the callers multiply w_j into a normal factor first. */
FL_INLINE fl_vf fl_coef_lanes_f(const float* t, const double* w, ptrdiff_t j, int m,
                                float alpha, float beta, fl_vf* w_out) {
    const fl_vf zero = {0};
    fl_vf b = zero + beta;
    if (t) {
        fl_vf tv;
        if (m == FL_NF) memcpy(&tv, t + j, sizeof tv);
        else tv = fl_load_tail_f32(t + j, m);
        b = fl_mla_f(tv, zero + alpha, beta);
    }
    *w_out = w ? fl_load_f_f64(w + j, m) : zero + 1.0f;
    if (m < FL_NF) {
        fl_vi valid;
        for (int k = 0; k < FL_NF; k++) valid[k] = k < m ? -1 : 0;
        b = fl_select_f(valid, b, zero);
    }
    return b;
}

/* Four vectors of coefficients from j, of which n (<= 4 FL_NF) elements remain, and
 * their terms a_j (shift - x_j): summed in float (a tree of two roundings), then into the
 * double accumulators s and d. */
FL_INLINE void fl_coef_group_f(const float* x, const float* t, const double* w, ptrdiff_t j,
                               ptrdiff_t n, float shift, float alpha, float beta, fl_vd* s,
                               fl_vd* d) {
    const fl_vf zero = {0};
    fl_vf a[4], term[4];
    for (int q = 0; q < 4; q++) {
        const ptrdiff_t left = n - q * FL_NF;
        const int m = left >= FL_NF ? FL_NF : left > 0 ? (int)left : 0;
        fl_vf wv;
        const fl_vf b = fl_coef_lanes_f(t, w, j + q * FL_NF, m, alpha, beta, &wv);
        const fl_vf xv = fl_group_load_f32(x + j, n, q);
        a[q] = b * wv;                  /* without weights wv is 1: no multiply */
        term[q] = fl_select_f(a[q] != zero, b * (wv * (shift - xv)), zero);
    }
    fl_add_widened(s, (a[0] + a[1]) + (a[2] + a[3]));
    fl_add_widened(d, (term[0] + term[1]) + (term[2] + term[3]));
}

/* fl_coef_sums_f32 in float lanes, whole groups then the rest. Returns 0 where a term or
 * a sum overflowed float (shift - x_j beyond its range, or a sum of such terms), or a
 * sum is nonzero but below 2^-100, where terms below float's normal range (their
 * absolute error 2^-150) could count: the caller then sums in double. */
FL_INLINE int fl_coef_sums_loop_f32(const float* x, const float* t, const double* w,
                                    ptrdiff_t start, ptrdiff_t stop, float shift,
                                    float alpha, float beta, double* sum, double* dot) {
    fl_vd s[2] = {{0}}, d[2] = {{0}};
    ptrdiff_t j = start;
    for (; j + 4 * FL_NF <= stop; j += 4 * FL_NF)
        fl_coef_group_f(x, t, w, j, 4 * FL_NF, shift, alpha, beta, s, d);
    if (j < stop) fl_coef_group_f(x, t, w, j, stop - j, shift, alpha, beta, s, d);
    *sum = fl_hsum(s[0] + s[1]);
    *dot = fl_hsum(d[0] + d[1]);
    return (*sum == 0.0 || (*sum >= 0x1p-100 && *sum < 3.0e38)) &&
           (*dot == 0.0 || (*dot >= 0x1p-100 && *dot < 3.0e38));
}

/* fl_coef_sums_loop_f32 with the target row t and the weights w each a constant NULL where
 * absent: one copy of the float lanes' loop for each case (a run-time test inside it cost
 * most of their gain). */
FL_INLINE int fl_coef_sums_lanes_f32(const float* x, const float* t, const double* w,
                                     ptrdiff_t start, ptrdiff_t stop, float shift,
                                     float alpha, float beta, double* sum, double* dot) {
    if (t && w) return fl_coef_sums_loop_f32(x, t, w, start, stop, shift, alpha, beta, sum, dot);
    if (t) return fl_coef_sums_loop_f32(x, t, NULL, start, stop, shift, alpha, beta, sum, dot);
    if (w) return fl_coef_sums_loop_f32(x, NULL, w, start, stop, shift, alpha, beta, sum, dot);
    return fl_coef_sums_loop_f32(x, NULL, NULL, start, stop, shift, alpha, beta, sum, dot);
}

FL_INLINE void fl_coef_sums_f32(const float* x, const float* t, ptrdiff_t start,
                                ptrdiff_t stop, double shift, const fl_coef_spec* c,
                                double* sum, double* dot, double* entropy) {
    if (fl_coef_sums_in_float(c) &&
        fl_coef_sums_lanes_f32(x, t, c->class_weight, start, stop, (float)shift,
                               (float)c->alpha, (float)c->beta, sum, dot)) {
        *entropy = 0.0;
        return;
    }
    fl_coef_sums_wide_f32(x, t, start, stop, shift, c, sum, dot, entropy);
}

/* Whether a chunk's factor may be rounded to float for float lanes: a normal float (it
 * keeps its 24 bits; a chunk far below the row's max has a tiny one) below 2^100. */
FL_INLINE int fl_factor_fits_float(double factor) {
    return factor >= 0x1p-126 && factor <= 0x1p100;
}

/* e_j <- e_j f - cs a_j over [start, stop) in float lanes, whole vectors then the rest;
 * t and w as in fl_coef_sums_loop_f32. */
FL_INLINE void fl_coef_scale_loop_f32(float* e, const float* t, const double* w,
                                      ptrdiff_t start, ptrdiff_t stop, float f, float cs,
                                      float alpha, float beta) {
    for (ptrdiff_t j = start; j < stop; j += FL_NF) {
        const int m = stop - j < FL_NF ? (int)(stop - j) : FL_NF;
        fl_vf wv;
        const fl_vf b = fl_coef_lanes_f(t, w, j, m, alpha, beta, &wv);
        const fl_vf zero = {0};
        const fl_vf g = fl_fma_f(fl_group_load_f32(e + j, m, 0), zero + f, zero - (cs * wv) * b);
        fl_group_store_f32(e + j, m, 0, g);
    }
}

/* e_j <- e_j factor - coef_scale a_j over [start, stop) for a teacher given as logits or
 * log-probabilities, a_j = exp((t_j - t_max) t_scale - t_shift), in float lanes (the
 * caller's conditions on the factor and the scale as below). The argument rounds a few
 * times in float, each within 2^-24 of |arg| + t_shift, and a |arg| <= 1/e: a_j is off by
 * a few 2^-24 at most (absolute), and the gradient by a few 2^-24 of its terms, as with
 * probability targets (measured: 1.5e-7 at most, against 1.3e-7 in double lanes). t_scale
 * (1 / T) must be a float within [2^-100, 2^100]; distillation's coef_scale (T or 1 / T
 * over the reduction's denominator) keeps it there already. The loss's sums stay in
 * double: the teacher's entropy cancels against them. A vector with an argument above 64
 * (log-probabilities above 1, which are not: a float exponential would overflow where the
 * double one does not) goes in double lanes. */
FL_INLINE void fl_coef_scale_exp_f32(float* e, const float* t, ptrdiff_t start,
                                     ptrdiff_t stop, double factor, double coef_scale,
                                     const fl_coef_spec* c) {
    const fl_vf zero = {0};
    const float f = (float)factor, cs = (float)coef_scale;
    const float t_max = (float)c->t_max, t_scale = (float)c->t_scale;
    const float t_shift = (float)c->t_shift;
    for (ptrdiff_t j = start; j < stop; j += FL_NF) {
        const int m = stop - j < FL_NF ? (int)(stop - j) : FL_NF;
        /* the padding lanes' -inf gives a = 0 */
        const fl_vf arg = (fl_group_load_f32(t + j, m, 0) - t_max) * t_scale - t_shift;
        if (__builtin_expect(fl_any_i(arg > zero + 64.0f), 0)) {
            fl_coef_scale_wide_f32(e, t, j, j + m, factor, coef_scale, c);
            continue;
        }
        const fl_vf g = fl_fma_f(fl_group_load_f32(e + j, m, 0), zero + f,
                                 zero - cs * fl_exp_neg_f(arg, zero));
        fl_group_store_f32(e + j, m, 0, g);
    }
}

/* fl_coef_scale_f32 in float lanes where the factor is a normal float below 2^100 (a
 * chunk far below the row's max, whose factor is tiny, stays in double) and coef_scale
 * within [2^-60, 2^60] (times a_j <= 2^64: within float's range); one more rounding
 * than in double, of coef_scale a_j. */
FL_INLINE void fl_coef_scale_f32(float* e, const float* t, ptrdiff_t start, ptrdiff_t stop,
                                 double factor, double coef_scale, const fl_coef_spec* c) {
    const int lanes = fl_factor_fits_float(factor) && fabs(coef_scale) >= 0x1p-60 &&
                      fabs(coef_scale) <= 0x1p60;
    if (lanes && c->exp_kind && !c->class_weight && c->t_scale >= 0x1p-100 &&
        c->t_scale <= 0x1p100) {
        fl_coef_scale_exp_f32(e, t, start, stop, factor, coef_scale, c);
        return;
    }
    if (!(lanes && fl_coef_in_float(c))) {
        fl_coef_scale_wide_f32(e, t, start, stop, factor, coef_scale, c);
        return;
    }
    const float f = (float)factor, cs = (float)coef_scale;
    const float alpha = (float)c->alpha, beta = (float)c->beta;
    const double* w = c->class_weight;      /* each case a copy of the loop, as above */
    if (t && w) fl_coef_scale_loop_f32(e, t, w, start, stop, f, cs, alpha, beta);
    else if (t) fl_coef_scale_loop_f32(e, t, NULL, start, stop, f, cs, alpha, beta);
    else if (w) fl_coef_scale_loop_f32(e, NULL, w, start, stop, f, cs, alpha, beta);
    else fl_coef_scale_loop_f32(e, NULL, NULL, start, stop, f, cs, alpha, beta);
}

FL_INLINE void fl_entropy_grad_f64(double* e, const double* x, ptrdiff_t n, double factor,
                                   double max, double offset) {
    fl_entropy_grad_wide_f64(e, x, n, factor, max, offset);
}

/* The same for float rows, in float lanes (twice as many, and no conversions:
 * docs/performance.md) where the factor is a normal float below 2^100 and the offset is finite
 * (below 2^100); elsewhere in double lanes, among them the chunks far below the max.
 * Such a factor, exp(shift - max) scale / S, puts the chunk's shift within 800 of the
 * max (scale is a double), so max - x_j is finite where e_j != 0: it overflows float
 * only where e_j = 0, whose lanes are set to 0 (in a chunk of factor 0 at -3e38 below a
 * max of 3e38, 0 * inf would make NaN). The roundings of max - x_j and of offset +
 * (max - x_j), 2^-24 of max - x_j + |offset| each, are at most a few 2^-24 of the row's
 * largest entry (a class at the max has e f |offset|): measured up to 4.8 2^-24 against
 * 1.9 in double lanes (1.5e-7 absolute; C = 17 to 40000, scales 0.01 to 1e4). */
FL_INLINE void fl_entropy_grad_f32(float* e, const float* x, ptrdiff_t n, double factor,
                                   double max, double offset) {
    if (!(fl_factor_fits_float(factor) && fabs(offset) <= 0x1p100)) {
        fl_entropy_grad_wide_f32(e, x, n, factor, max, offset);
        return;
    }
    const fl_vf zero = {0};
    const float f = (float)factor, top = (float)max, off = (float)offset;
    for (ptrdiff_t j = 0; j < n; j += FL_NF) {
        const int m = n - j < FL_NF ? (int)(n - j) : FL_NF;
        const fl_vf v = fl_group_load_f32(e + j, m, 0), xv = fl_group_load_f32(x + j, m, 0);
        fl_group_store_f32(e + j, m, 0,
                           fl_select_f(v != zero, (v * f) * (off + (top - xv)), zero));
    }
}

/* Sum of exp(x_j - max) over a float row in double lanes, the terms at max (exactly 1)
 * counted into *ones_out; max is the row's max (a float). A float row's exponentials are
 * within 2^-23 of each term, which a loss (max - x_y + log S, both parts >= 0) keeps, but
 * its logsumexp max + log S does not where a negative max cancels log S (rows of
 * log-probabilities, whose logsumexp is near 0): fl_lse_wide_f32 recomputes those. x_j -
 * max is exact in double for every term that is not 0. The sum is compensated (Neumaier,
 * lane by lane): within 2^-52 of it whatever the row's length, for the rare rows that
 * take this path. */
FL_INLINE double fl_exp_sum_wide_f32(const float* x, ptrdiff_t n, double max,
                                     double* ones_out) {
    const fl_vd zero = {0};
    fl_vd sum = zero, err = zero;
    fl_vl ones = {0};
    for (ptrdiff_t i = 0; i < n; i += FL_ND) {
        const ptrdiff_t m = n - i;
        fl_vd v = fl_load_d_f32(x + i, m < FL_ND ? m : FL_ND);
        for (int k = 0; k < FL_ND; k++)
            if (k >= m) v[k] = -INFINITY;                       /* past the row: exp = 0 */
        const fl_vl at_max = v == zero + max;
        const fl_vd e = (fl_vd)(~at_max & (fl_vl)fl_exp_neg_d(v - max));
        ones -= at_max;
        const fl_vd t = sum + e;
        const fl_vl sum_larger = fl_vmax_d(sum, zero - sum) >= fl_vmax_d(e, zero - e);
        err += fl_select_d(sum_larger, (sum - t) + e, (e - t) + sum);
        sum = t;
    }
    *ones_out = fl_hsum_i64(ones);
    return fl_hsum(sum) + fl_hsum(err);
}

/* A float row's logsumexp max + log S from its exponentials in double lanes (max its max,
 * finite). */
FL_INLINE double fl_lse_wide_f32(const float* x, ptrdiff_t n, double max) {
    double ones;
    const double rest = fl_exp_sum_wide_f32(x, n, max, &ones);
    return max + fl_log1p_1((ones - 1.0) + rest);
}

#endif
