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
    /* the polynomial, not the table: in a block of few classes the table's register and
     * permutes cost more than they save (docs/performance.md) */
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

/* The block kernels are compiled twice. With the class count c a constant, their loops
 * over the classes unrolled (FL_UNROLL), the class vectors stay in registers: one copy
 * per count, for the counts of FL_SMALL_COUNTS. With c known at run time, the loops stay
 * loops (FL_UNROLL empty) and the kernels are named FL_LOOPS(name): one copy for every
 * other count. Both compute the same operations in the same order: the same bits.
 * FL_BLK(name) names a block kernel in the compilation being made
 * (engine/block_instances.h). */
#define FL_LOOPS(name) FL_LOOPS_(name)
#define FL_LOOPS_(name) name##_loops

/* The counts compiled as constants: two classes (binary problems written as a two-class
 * softmax) and ten (the usual small benchmark datasets), where the loops cost the most
 * (docs/performance.md). Every copy costs build time and binary size on every
 * instruction set; a baseline built beside wider instruction sets has none
 * (FL_BLOCK_COPIES 0, from instruction_sets.py): it serves only CPUs without AVX2. */
#ifndef FL_BLOCK_COPIES
#define FL_BLOCK_COPIES 1
#endif
#if FL_BLOCK_COPIES
#define FL_SMALL_COUNTS(X, ...) X(2, __VA_ARGS__) X(10, __VA_ARGS__)
#else
#define FL_SMALL_COUNTS(X, ...)
#endif

/* FN(args) with the class count C_ among args: FN with C_ a constant for the counts of
 * FL_SMALL_COUNTS, else FL_LOOPS(FN) with the count c as it is. */
#define FL_SMALL_CASE(C, FN, ...)                                                         \
    case C: { const int C_ = C; FN(__VA_ARGS__); break; }
#define FL_SMALL_DISPATCH(c, FN, ...)                                                     \
    do {                                                                                  \
        switch (c) {                                                                      \
        FL_SMALL_COUNTS(FL_SMALL_CASE, FN, __VA_ARGS__)                                   \
        default: { const int C_ = (c); FL_LOOPS(FN)(__VA_ARGS__); break; }               \
        }                                                                                 \
    } while (0)

/* The plans, once per type (they have no loops to compile twice). */
#define FL_BLOCK_PER_TYPE 1
#define FL_BLOCK_TEMPLATE "engine/block_plan_t.h"
#include "block_instance.h"
#undef FL_BLOCK_TEMPLATE
#undef FL_BLOCK_PER_TYPE

#define FL_BLOCK_PER_TYPE 1
#define FL_BLOCK_TEMPLATE "engine/blocks_t.h"
#include "block_instances.h"
#undef FL_BLOCK_TEMPLATE
#undef FL_BLOCK_PER_TYPE

/* Float rows computed in double lanes go through these copies, FL_ND rows at a time. */
FL_INLINE void fl_small_widen(const float* x, ptrdiff_t n, double* wide) {
    for (ptrdiff_t i = 0; i < n; i++) wide[i] = x[i];
}
FL_INLINE void fl_small_narrow(const double* wide, ptrdiff_t n, float* out) {
    for (ptrdiff_t i = 0; i < n; i++) out[i] = (float)wide[i];
}

#define FL_BLOCK_PER_TYPE 0
#define FL_BLOCK_TEMPLATE "engine/blocks_wide_t.h"
#include "block_instances.h"
#undef FL_BLOCK_TEMPLATE
#undef FL_BLOCK_PER_TYPE

/* logsumexp of float rows (any number) into out[0:rows] as double: blocks of FL_NF rows
 * through fl_small_logsumexp_lanes_f32. */
FL_INLINE void fl_small_logsumexp_wide_f32(const float* x, ptrdiff_t rows,
                                           const fl_small_plan_f32* pf, double* out) {
    const int c = pf->n_classes;
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += FL_NF) {
        const ptrdiff_t n = rows - r0 < FL_NF ? rows - r0 : FL_NF;
        FL_SMALL_DISPATCH(c, fl_small_logsumexp_lanes_f32, x + r0 * c, n, C_, pf,
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
