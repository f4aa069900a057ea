/* Rows of few classes (C <= FL_SMALL_C), one row per vector lane.
 *
 * A row of 10 scores is too short for the row primitives: its max and sum would be
 * reductions across the lanes of a single vector, and a vector exp's latency would have
 * nothing to overlap with. Here a block of L rows (L = the lanes of a vector) is loaded
 * as the C vectors it spans in memory and transposed in registers into C class vectors
 * T_j (lane r: row r's score of class j). Everything per row (max, the exponentials,
 * their sum, its log, a loss and its gradient) is then lane-wise, with no reduction
 * across lanes, and the results go back through the inverse transposition.
 *
 * The transposition gathers class j from pairs of row-major vectors with two-source
 * shuffles and merges the pairs with selects (a plan of index vectors, made once per class
 * count). The maths follows the row engine: float rows in float, with the argument x - max
 * carried exactly and the terms at the max (exactly 1) counted apart from the float sum of
 * the others, so that log S = log1p((ones - 1) + others) keeps a small loss's relative
 * accuracy; double rows in double.
 *
 * Padding: the rows past the end of the array in the last block are -inf (their results
 * are never stored).
 */
#ifndef FL_ENGINE_BLOCKS_H
#define FL_ENGINE_BLOCKS_H

#include <stdlib.h>

#include "chunks.h"
#include "rows.h"

#define FL_SMALL_K 4            /* the most blocks one call interleaves */

/* ---- lane-wise maths of the two types, under one set of names ---- */

/* exp(t - m) for t <= m, and whether t is m (a term of exactly 1). */
FL_INLINE fl_vf fl_small_exp_f32(fl_vf t, fl_vf m, fl_vi* at_max) {
    const fl_vf d = t - m;
    const fl_vf t_seen = d + m, m_seen = t_seen - d;
    *at_max = t == m;
    return fl_exp_neg_f(d, (t - t_seen) + (m_seen - m));
}
FL_INLINE fl_vd fl_small_exp_f64(fl_vd t, fl_vd m, fl_vl* at_max) {
    const fl_vd zero = {0};
    *at_max = t == m;
    /* the polynomial, not the table: with the table's register and permutes, a block of
     * ten float64 classes ran 14% slower */
    return fl_exp_poly_d(fl_vmax_d(zero - 746.0, t - m));   /* NaN stays NaN */
}

/* Class targets of a block as lanes of the element width: -1 for ignored rows and for
 * those past the end (rows < lanes), which matches no class. */
FL_INLINE fl_vl fl_small_targets_half(const ptrdiff_t* y, ptrdiff_t rows, ptrdiff_t ignore) {
    fl_vl v;
    if (rows >= FL_ND && sizeof(ptrdiff_t) == sizeof(int64_t)) {
        memcpy(&v, y, sizeof v);
    } else {
        for (int k = 0; k < FL_ND; k++) v[k] = k < rows ? y[k] : ignore;
    }
    return (fl_vl)((v == ignore) | v);                  /* all ones: -1 */
}
FL_INLINE fl_vi fl_small_targets_f32(const ptrdiff_t* y, ptrdiff_t rows, ptrdiff_t ignore) {
    const fl_vih lo = __builtin_convertvector(fl_small_targets_half(y, rows, ignore), fl_vih);
    const fl_vih hi = __builtin_convertvector(
        fl_small_targets_half(y + FL_ND, rows - FL_ND, ignore), fl_vih);
    return __builtin_shufflevector(lo, hi, FL_LO, FL_HI);
}
FL_INLINE fl_vl fl_small_targets_f64(const ptrdiff_t* y, ptrdiff_t rows, ptrdiff_t ignore) {
    return fl_small_targets_half(y, rows, ignore);
}

/* Row results of a block (rows < lanes: the first rows) into double. */
FL_INLINE void fl_small_put_f64(double* out, fl_vd v, ptrdiff_t rows) {
    if (rows >= FL_ND) memcpy(out, &v, sizeof v);
    else fl_store_tail_f64(out, v, (int)rows);
}
FL_INLINE void fl_small_put_f32(double* out, fl_vf v, ptrdiff_t rows) {
    fl_small_put_f64(out, fl_widen_lo(v), rows);
    if (rows > FL_ND) fl_small_put_f64(out + FL_ND, fl_widen_hi(v), rows - FL_ND);
}

/* A block's row results as a double vector whose lanes sum to theirs. */
FL_INLINE fl_vd fl_small_pairs_f64(fl_vd v) { return v; }
FL_INLINE fl_vd fl_small_pairs_f32(fl_vf v) { return fl_widen_lo(v) + fl_widen_hi(v); }

/* Per-row doubles of a block (sample weights) as lanes of the element type; 0 past the
 * end. */
FL_INLINE fl_vd fl_small_get_f64(const double* w, ptrdiff_t rows) {
    return fl_load_d_f64(w, rows);
}
FL_INLINE fl_vf fl_small_get_f32(const double* w, ptrdiff_t rows) {
    return fl_load_f_f64(w, rows);
}

/* FN(args) with the class count C_ among args: a constant for the counts in the cases
 * (each its own compiled copy), else the count c as it is. */
#define FL_SMALL_CASE(C, FN, ...)                                                         \
    case C: { const int C_ = C; FN(__VA_ARGS__); break; }
#define FL_SMALL_DISPATCH(c, FN, ...)                                                     \
    do {                                                                                  \
        switch (c) {                                                                      \
        FL_SMALL_CASE(2, FN, __VA_ARGS__); FL_SMALL_CASE(10, FN, __VA_ARGS__);            \
        default: { const int C_ = (c); FN(__VA_ARGS__); break; }                          \
        }                                                                                 \
    } while (0)

/* The same with every count 2 ... 11 a constant (softmax, log_softmax and logsumexp:
 * short kernels, whose copies compile fast). A/B against the loops, 500000 rows, 1 thread:
 * 0.68-0.89 of the time at C = 3 ... 11 (softmax at C = 7: 0.98); from C = 12 on, 0.82 to
 * 1.19 (softmax at C = 12), so those counts keep the loops. */
#define FL_SMALL_DISPATCH_ALL(c, FN, ...)                                                 \
    do {                                                                                  \
        switch (c) {                                                                      \
        FL_SMALL_CASE(2, FN, __VA_ARGS__); FL_SMALL_CASE(3, FN, __VA_ARGS__);             \
        FL_SMALL_CASE(4, FN, __VA_ARGS__); FL_SMALL_CASE(5, FN, __VA_ARGS__);             \
        FL_SMALL_CASE(6, FN, __VA_ARGS__); FL_SMALL_CASE(7, FN, __VA_ARGS__);             \
        FL_SMALL_CASE(8, FN, __VA_ARGS__); FL_SMALL_CASE(9, FN, __VA_ARGS__);             \
        FL_SMALL_CASE(10, FN, __VA_ARGS__); FL_SMALL_CASE(11, FN, __VA_ARGS__);           \
        default: { const int C_ = (c); FN(__VA_ARGS__); break; }                          \
        }                                                                                 \
    } while (0)

#define FL_T float
#define FL_VT fl_vf
#define FL_IT fl_vi
#define FL_L FL_NF
#define FL_SEL fl_select_f
#define FL_VMAX fl_vmax_f
#define FL_SFX(name) name##_f32
#include "blocks_t.h"
#undef FL_T
#undef FL_VT
#undef FL_IT
#undef FL_L
#undef FL_SEL
#undef FL_VMAX
#undef FL_SFX
#define FL_T double
#define FL_VT fl_vd
#define FL_IT fl_vl
#define FL_L FL_ND
#define FL_SEL fl_select_d
#define FL_VMAX fl_vmax_d
#define FL_SFX(name) name##_f64
#include "blocks_t.h"
#undef FL_T
#undef FL_VT
#undef FL_IT
#undef FL_L
#undef FL_SEL
#undef FL_VMAX
#undef FL_SFX

/* Float rows computed in double lanes go through these copies, FL_ND rows at a time. */
FL_INLINE void fl_small_widen(const float* x, ptrdiff_t n, double* wide) {
    for (ptrdiff_t i = 0; i < n; i++) wide[i] = x[i];
}
FL_INLINE void fl_small_narrow(const double* wide, ptrdiff_t n, float* out) {
    for (ptrdiff_t i = 0; i < n; i++) out[i] = (float)wide[i];
}

/* logsumexp m + log S of a block of float rows (rows <= FL_NF) into out[0:rows] as
 * double. Rows of max m >= 0: the exponentials in float lanes, their sum, its log and
 * m + log S in double. fl_exp_neg_f is within 0.65-0.83 * 2^-23 relative on every float
 * argument in [-87, 0] (by build; 0.76-0.96 on 240M arguments with a rounding-error term,
 * the SSE2 build the worst; below -87 its error is under 2^-149, nothing beside S >= 1).
 * Only the terms other than the max's 1s carry that error, so log S is within about
 * 2^-23 (S - 1) / S <= 2^-23 log S <= 2^-23 (m + log S): 2 float ulps of the result (and
 * the rounding to float). Rows of m < 0, where m + log S may be near 0 (the float sum's
 * relative error would be an absolute one in the result): in double lanes, as
 * fl_small_logsumexp_c_f64 takes them (the same bits). Each row's value depends on that
 * row alone, so cross_entropy's return_lse and logsumexp agree whatever the blocks. */
FL_INLINE void fl_small_logsumexp_lanes_f32(const float* x, ptrdiff_t rows, const int c,
                                            const fl_small_plan_f32* pf, double* out) {
    const fl_vf zero = {0};
    const fl_vd zero_d = {0};
    fl_vf t[FL_SMALL_C];
    fl_small_load_f32(x, rows, c, pf, t);
    fl_vf m = zero - INFINITY;
    FL_UNROLL for (int j = 0; j < c; j++) m = fl_vmax_f(t[j], m);
    m = fl_select_f(m == zero - INFINITY, zero, m);
    /* Rows whose max is negative take the double lanes; the float lanes serve the others
     * (none: skipped). Two classes take the double lanes always: a quarter of random rows
     * have m < 0, and with them the float lanes took 1.34x the time (1M x 2, 1 thread). */
    const int all_double = c <= 2;
    int in_float = 0;
    for (int k = 0; k < rows && !all_double; k++) in_float |= !(m[k] < 0.0f);
    fl_vd sum[4] = {{0}};
    fl_vi ones = {0};
    if (in_float) {
        FL_UNROLL for (int j = 0; j < c; j++) {
            fl_vi at_max;
            const fl_vf e = fl_small_exp_f32(t[j], m, &at_max);
            ones -= at_max;
            const fl_vf e_rest = fl_select_f(at_max, zero, e);
            sum[2 * (j & 1)] += fl_widen_lo(e_rest);
            sum[2 * (j & 1) + 1] += fl_widen_hi(e_rest);
        }
    }
    const fl_vf ones_less_1 = __builtin_convertvector(ones, fl_vf) - 1.0f;
    for (int h = 0; h < 2 && h * FL_ND < rows; h++) {
        const fl_vd m_d = h ? fl_widen_hi(m) : fl_widen_lo(m);
        const fl_vl in_double = all_double ? (fl_vl)(zero_d == zero_d) : (fl_vl)(m_d < zero_d);
        fl_vd lse = zero_d;
        if (in_float) {
            fl_vd rest = (h ? fl_widen_hi(ones_less_1) : fl_widen_lo(ones_less_1)) +
                         (sum[h] + sum[2 + h]);
            rest = fl_select_d(m_d == zero_d + INFINITY, zero_d + NAN, rest);
            lse = m_d + fl_log1p_f64(rest);
        }
        int any_double = 0;
        for (int k = 0; k < FL_ND && h * FL_ND + k < rows; k++) any_double |= in_double[k] != 0;
        if (any_double) {               /* fl_small_logsumexp_c_f64 on the widened half */
            fl_vd wide[FL_SMALL_C], shift_d, rest_d;
            FL_UNROLL for (int j = 0; j < c; j++)
                wide[j] = h ? fl_widen_hi(t[j]) : fl_widen_lo(t[j]);
            const fl_vd log_sum_d = fl_small_stats_f64(wide, c, 0, &shift_d, &rest_d);
            lse = fl_select_d(in_double, shift_d + log_sum_d, lse);
        }
        fl_small_put_f64(out + h * FL_ND, lse, rows - h * FL_ND);
    }
}

/* logsumexp of float rows (any number) into out[0:rows] as double: blocks of FL_NF rows
 * through fl_small_logsumexp_lanes_f32. */
FL_INLINE void fl_small_logsumexp_wide_f32(const float* x, ptrdiff_t rows,
                                           const fl_small_plan_f32* pf, double* out) {
    const int c = pf->n_classes;
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += FL_NF) {
        const ptrdiff_t n = rows - r0 < FL_NF ? rows - r0 : FL_NF;
        FL_SMALL_DISPATCH_ALL(c, fl_small_logsumexp_lanes_f32, x + r0 * c, n, C_, pf,
                              out + r0);
    }
}

/* The same, rounded to float into out[0:rows]. */
FL_INLINE void fl_small_logsumexp_narrow_f32(const float* x, ptrdiff_t rows,
                                             const fl_small_plan_f32* pf, float* out) {
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += FL_NF) {
        const ptrdiff_t n = rows - r0 < FL_NF ? rows - r0 : FL_NF;
        double lse[FL_NF];
        fl_small_logsumexp_wide_f32(x + r0 * pf->n_classes, n, pf, lse);
        for (ptrdiff_t k = 0; k < n; k++) out[r0 + k] = (float)lse[k];
    }
}

#endif
