/* Rows of few classes (C <= FL_SMALL_C), one row per SIMD lane.
 *
 * A row of 10 scores is too short for the row primitives of _simd_rows.h: its max and
 * sum would be reductions across the lanes of a single vector, and a vector exp's latency
 * would have nothing to overlap with. Here a block of L rows (L = the lanes of a vector)
 * is loaded as the C vectors it spans in memory and transposed in registers into C
 * "class vectors" T_j (lane r: row r's score of class j). Everything per row (max, the
 * exponentials, their sum, its log, the loss and the gradient) is then lane-wise, with no
 * reduction across lanes, and the results go back through the inverse transposition.
 *
 * The transposition gathers class j from pairs of row-major vectors with two-source
 * shuffles and merges the pairs with selects (a plan of index vectors, made once per
 * call). The maths follows _simd_rows.h: float rows in float, with the argument x - max
 * carried exactly (TwoSum) and the terms at the max (exactly 1) counted apart from the
 * float sum of the others, so that log S = log1p((ones - 1) + others) keeps a small
 * loss's relative accuracy; double rows in double.
 *
 * Probability targets and probability teachers (fl_small_soft_ce_*) are computed in
 * double lanes for both storage types, as the row kernel forms their coefficient sums;
 * float rows of probability targets (not a teacher's: distillation) in float lanes, their
 * coefficient sums, loss and gradient in double (fl_small_soft_ce_c_f32). The entropy of
 * float rows (fl_small_entropy_c_f32) likewise.
 *
 * Padding: the rows past the end of the array in the last block are -inf (their results
 * are never stored).
 */
#ifndef FASTLOSS_SIMD_SMALL_H
#define FASTLOSS_SIMD_SMALL_H

#include <stdlib.h>

#include "_simd_rows.h"

/* GCC cannot see that a block's loads read only its rows * C elements (the tails are
 * masked), and warns of the rest of the arrays they come from. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

/* The options of cross-entropy over blocks (one definition for the vector and the
 * scalar builds). */
typedef struct {
    const double* class_weight;     /* NULL: 1 */
    const double* sample_weight;    /* NULL: 1; per row */
    double hard_scale;              /* 1 - eps */
    double smoothing;               /* eps / C: a_j = smoothing w_j */
    double coef_sum;                /* A = sum_j a_j */
    double z_loss;
    double grad_scale;              /* 1 / the reduction's denominator */
    ptrdiff_t ignore_index;
    /* Target rows q (fl_small_soft_ce_*), by teacher_kind: probabilities, a_j =
     * (hard_scale q_j + smoothing) w_j; log-probabilities, a_j = exp(q_j) w_j; or logits,
     * a_j = softmax(q s)_j w_j. with_entropy adds sum_j a_j log a_j (distillation:
     * KL(a || softmax(x s))), the scores are x s (s = 1 / T) and the loss is scaled by
     * loss_factor (T^2 or 1). */
    int teacher_kind;
    int with_entropy;
    double x_scale, loss_factor;
} fl_small_ce_spec;

enum { FL_SOFT_PROBS = 0, FL_SOFT_LOG_PROBS = 1, FL_SOFT_LOGITS = 2 };

#if !defined(__GNUC__) || defined(FASTLOSS_SCALAR)
/* Without vector extensions there are no blocks: FL_SMALL_C = 0 keeps every row on the
 * row primitives (_scalar_rows.h), and the block functions below are never called (the
 * kernels test 0 < C <= FL_SMALL_C); they exist so that the kernels compile. */
#define FL_SMALL_C 0
#define FL_SMALL_CE_BLOCKS(c) 1
#define FL_NF 1
#define FL_ND 1
typedef struct { int n_classes; } fl_small_plan_f32;
typedef struct { int n_classes; } fl_small_plan_f64;
static fl_small_plan_f32 fl_small_no_plan_f32;
static fl_small_plan_f64 fl_small_no_plan_f64;
static const fl_small_plan_f32* fl_small_plan_f32_get(int c) { return &fl_small_no_plan_f32; }
static const fl_small_plan_f64* fl_small_plan_f64_get(int c) { return &fl_small_no_plan_f64; }
#define FL_SMALL_UNREACHABLE(NAME, ...) static void NAME(__VA_ARGS__) { abort(); }
FL_SMALL_UNREACHABLE(fl_small_softmax_f32, const float* x, ptrdiff_t r,
                     const fl_small_plan_f32* p, float* o)
FL_SMALL_UNREACHABLE(fl_small_softmax_f64, const double* x, ptrdiff_t r,
                     const fl_small_plan_f64* p, double* o)
FL_SMALL_UNREACHABLE(fl_small_log_softmax_f32, const float* x, ptrdiff_t r,
                     const fl_small_plan_f32* p, float* o)
FL_SMALL_UNREACHABLE(fl_small_log_softmax_f64, const double* x, ptrdiff_t r,
                     const fl_small_plan_f64* p, double* o)
FL_SMALL_UNREACHABLE(fl_small_logsumexp_f64, const double* x, ptrdiff_t r,
                     const fl_small_plan_f64* p, double* o)
FL_SMALL_UNREACHABLE(fl_small_logsumexp_wide_f32, const float* x, ptrdiff_t r,
                     const fl_small_plan_f32* p, double* o)
FL_SMALL_UNREACHABLE(fl_small_logsumexp_narrow_f32, const float* x, ptrdiff_t r,
                     const fl_small_plan_f32* p, float* o)
FL_SMALL_UNREACHABLE(fl_small_ce_f32, const float* x, ptrdiff_t r, const ptrdiff_t* y,
                     ptrdiff_t r0, const fl_small_plan_f32* p, const fl_small_ce_spec* s,
                     double* l, double* ls, double* e, float* g)
FL_SMALL_UNREACHABLE(fl_small_ce_f64, const double* x, ptrdiff_t r, const ptrdiff_t* y,
                     ptrdiff_t r0, const fl_small_plan_f64* p, const fl_small_ce_spec* s,
                     double* l, double* ls, double* e, double* g)
FL_SMALL_UNREACHABLE(fl_small_soft_ce_f32, const float* x, const float* q, ptrdiff_t r,
                     ptrdiff_t r0, const fl_small_plan_f32* pf, const fl_small_plan_f64* p,
                     const fl_small_ce_spec* s, double* l, double* e, float* g)
FL_SMALL_UNREACHABLE(fl_small_soft_ce_f64, const double* x, const double* q, ptrdiff_t r,
                     ptrdiff_t r0, const fl_small_plan_f64* p, const fl_small_ce_spec* s,
                     double* l, double* e, double* g)
FL_SMALL_UNREACHABLE(fl_small_entropy_f32, const float* x, ptrdiff_t r,
                     const fl_small_plan_f32* p, double u, double s, double* h, float* g)
FL_SMALL_UNREACHABLE(fl_small_entropy_f64, const double* x, ptrdiff_t r,
                     const fl_small_plan_f64* p, double u, double s, double* h, double* g)
#else

#define FL_SMALL_C 16
/* Blocks per call of the cross-entropy kernel (fl_small_ce_*) at C classes, and the most
 * of any C. A block of few classes is one short chain of dependent steps, which leaves
 * the core waiting unless other blocks' chains interleave with it. float32, rows in L2,
 * one thread, ns a row (one block a call -> these): C = 2 2.75 -> 1.7, C = 4 4.5 -> 2.6,
 * C = 8 5.6 -> 5.0. Two blocks at C = 10 and 12 were 15% faster in L2 but 10-16% slower
 * over 1M rows from memory. */
#define FL_SMALL_CE_BLOCKS(c) ((c) <= 4 ? 4 : (c) <= 8 ? 2 : 1)
#define FL_SMALL_K 4

/* Two-source shuffle: lane k of the result is (idx[k] < lanes ? a[idx[k]] : b[idx[k] -
 * lanes]). GCC compiles __builtin_shuffle to the permute instructions; elsewhere a loop. */
#if defined(__GNUC__) && !defined(__clang__)
#define FL_SHUFFLE2(a, b, idx) __builtin_shuffle((a), (b), (idx))
#else
#define FL_SHUFFLE2(a, b, idx)                                                            \
    __extension__({                                                                       \
        __typeof__(a) r_;                                                                 \
        const int n_ = (int)(sizeof(r_) / sizeof(r_[0]));                                 \
        for (int k_ = 0; k_ < n_; k_++)                                                   \
            r_[k_] = (idx)[k_] < n_ ? (a)[(idx)[k_]] : (b)[(idx)[k_] - n_];               \
        r_;                                                                               \
    })
#endif

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

/* log1p(z) for z >= -1 (-inf at -1), NaN and +inf passing through: Cephes' logf
 * polynomial on the mantissa, with the rounding of 1 + z corrected; within 2 ulp. (The
 * double one is in _simd_rows.h.) */
FL_INLINE fl_vf fl_log1p_f32(fl_vf z) {
    const fl_vf zero = {0};
    const fl_vf u = z + 1.0f;
    fl_vf f, k;
    /* log(u) = k ln2 + log(m), ln2 in two parts; (z - (u - 1)) / u corrects u's rounding */
    fl_vf r = fl_fma_f(k, zero - 2.12194440e-4f, fl_logf_parts(u, &f, &k));
    r = r + (z - (u - 1.0f)) / u;
    r = fl_fma_f(k, zero + 0.693359375f, f + r);
    const fl_vi finite = (u > zero) & (u < zero + INFINITY);
    return fl_select_f(finite, r, fl_select_f(u == zero, zero - INFINITY, u));
}

/* Class targets of a block as lanes of the element width: -1 for ignored rows and for
 * those past the end (rows < lanes), which matches no class. */
typedef int32_t fl_vih __attribute__((vector_size(FL_WIDTH / 2)));
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

/* Loops over the classes unrolled, so that the class vectors stay in registers. */
#if defined(__GNUC__) && !defined(__clang__)
#define FL_UNROLL _Pragma("GCC unroll 16")
#else
#define FL_UNROLL
#endif

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

/* fl_small_ce_*'s call of FN at C classes and NK blocks, constants (fl_small_ce_c_*'s
 * arguments). */
#define FL_SMALL_CE_CALL(FN, C, NK, PLAIN)                                                \
    FN(x, rows, (C), (NK), (PLAIN), y, row0, p, spec, loss_out, loss_sum, lse_out, grad)
/* Its switch's case for C classes (a constant), without options or with: one block for
 * rows of one block, else FL_SMALL_CE_BLOCKS(C). */
#define FL_SMALL_CE_CASE(FN, C, PLAIN)                                                    \
    case (C) * 4 + (PLAIN) * 2: case (C) * 4 + (PLAIN) * 2 + 1:                          \
        if (FL_SMALL_CE_BLOCKS(C) > 1 && !one)                                            \
            FL_SMALL_CE_CALL(FN, C, FL_SMALL_CE_BLOCKS(C), PLAIN);                        \
        else                                                                              \
            FL_SMALL_CE_CALL(FN, C, 1, PLAIN);                                            \
        break

/* ---- one definition for both types ----
 * SUFFIX f32/f64, T the element type, VT its vector, IT the integer vector of its lane
 * width, L the lanes, SEL the select, VMAX the NaN-skipping max. */
#define FL_DEFINE_SMALL(SUFFIX, T, VT, IT, L, SEL, VMAX)                                  \
                                                                                          \
typedef struct {                                                                          \
    int n_classes;                                                                        \
    IT to_cols[FL_SMALL_C][FL_SMALL_C / 2];    /* [j][a]: class j from vectors 2a, 2a+1 */\
    IT cols_take[FL_SMALL_C][FL_SMALL_C / 2];                                             \
    IT to_rows[FL_SMALL_C][FL_SMALL_C / 2];    /* [i][b]: vector i from classes 2b, 2b+1 */\
    IT rows_take[FL_SMALL_C][FL_SMALL_C / 2];                                             \
} fl_small_plan_##SUFFIX;                                                                 \
                                                                                          \
static inline void fl_small_plan_init_##SUFFIX(fl_small_plan_##SUFFIX* p, int c) {        \
    p->n_classes = c;                                                                     \
    for (int j = 0; j < c; j++)                                                           \
        for (int a = 0; 2 * a < c; a++)                                                   \
            for (int r = 0; r < (L); r++) {                                               \
                /* row r's class j, counted from vector 2a; the pair ends at vector c */  \
                const int pos = r * c + j - 2 * a * (L);                                  \
                const int ok = pos >= 0 && pos < 2 * (L) && (pos < (L) || 2 * a + 1 < c); \
                p->to_cols[j][a][r] = ok ? pos : 0;                                       \
                p->cols_take[j][a][r] = ok ? -1 : 0;                                      \
            }                                                                             \
    for (int i = 0; i < c; i++)                                                           \
        for (int b = 0; 2 * b < c; b++)                                                   \
            for (int l = 0; l < (L); l++) {                                               \
                const int pos = i * (L) + l, r = pos / c, j = pos % c;                    \
                const int ok = j == 2 * b || j == 2 * b + 1;                              \
                p->to_rows[i][b][l] = ok ? (j == 2 * b ? r : (L) + r) : 0;                \
                p->rows_take[i][b][l] = ok ? -1 : 0;                                      \
            }                                                                             \
}                                                                                         \
                                                                                          \
/* The plan for C = c classes, made on first use and kept for the life of the process     \
 * (call it holding the GIL: the cache is not locked); NULL when out of memory. Aligned   \
 * to its vectors' size by hand: malloc's alignment is less, and aligned_alloc is not     \
 * everywhere. */                                                                         \
static fl_small_plan_##SUFFIX* fl_small_plans_##SUFFIX[FL_SMALL_C + 1];                   \
static inline const fl_small_plan_##SUFFIX* fl_small_plan_##SUFFIX##_get(int c) {         \
    if (!fl_small_plans_##SUFFIX[c]) {                                                    \
        char* raw = malloc(sizeof(fl_small_plan_##SUFFIX) + FL_WIDTH);                    \
        if (!raw) return NULL;                                                            \
        fl_small_plan_##SUFFIX* p =                                                       \
            (fl_small_plan_##SUFFIX*)(raw + FL_WIDTH - (uintptr_t)raw % FL_WIDTH);        \
        fl_small_plan_init_##SUFFIX(p, c);                                                \
        fl_small_plans_##SUFFIX[c] = p;                                                   \
    }                                                                                     \
    return fl_small_plans_##SUFFIX[c];                                                    \
}                                                                                         \
                                                                                          \
/* The block of `rows` rows at x into class vectors t[0:C]. */                            \
FL_INLINE void fl_small_load_##SUFFIX(const T* x, ptrdiff_t rows, const int c,            \
                                      const fl_small_plan_##SUFFIX* p, VT* t) {           \
    const ptrdiff_t n = rows * c;                                                         \
    VT v[FL_SMALL_C];                                                                     \
    FL_UNROLL for (int i = 0; i < c; i++) {                                                         \
        const ptrdiff_t m = n - i * (L);                                                  \
        if (m >= (L)) memcpy(&v[i], x + i * (L), sizeof v[i]);                            \
        else v[i] = fl_load_tail_##SUFFIX(x + i * (L), m > 0 ? (int)m : 0);               \
    }                                                                                     \
    FL_UNROLL for (int j = 0; j < c; j++) {                                                         \
        VT col = v[0];                                                                    \
        FL_UNROLL for (int a = 0; 2 * a < c; a++) {                                                 \
            const VT pair = FL_SHUFFLE2(v[2 * a], v[2 * a + 1 < c ? 2 * a + 1 : 2 * a],   \
                                        p->to_cols[j][a]);                                \
            col = SEL(p->cols_take[j][a], pair, col);                                     \
        }                                                                                 \
        t[j] = col;                                                                       \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* Class vectors t[0:C] back into the block of `rows` rows at out. */                    \
FL_INLINE void fl_small_store_##SUFFIX(const VT* t, ptrdiff_t rows, const int c,          \
                                       const fl_small_plan_##SUFFIX* p, T* out) {         \
    const ptrdiff_t n = rows * c;                                                         \
    for (int i = 0; i < c && i * (L) < n; i++) {                                                    \
        VT v = t[0];                                                                      \
        FL_UNROLL for (int b = 0; 2 * b < c; b++) {                                                 \
            const VT pair = FL_SHUFFLE2(t[2 * b], t[2 * b + 1 < c ? 2 * b + 1 : 2 * b],   \
                                        p->to_rows[i][b]);                                \
            v = SEL(p->rows_take[i][b], pair, v);                                         \
        }                                                                                 \
        const ptrdiff_t m = n - i * (L);                                                  \
        if (m >= (L)) memcpy(out + i * (L), &v, sizeof v);                                \
        else fl_store_tail_##SUFFIX(out + i * (L), v, (int)m);                            \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* The statistics of the rows of nk blocks, t[k][0:C] for k < nk: their max m[k] (the    \
 * shift; 0 where a row is all -inf), t[k][j] <- exp(t[k][j] - m[k]) where keep_exp,      \
 * S - 1 into rest[k] and log S into log_sum[k], for S = sum_j exp(t_kj - m_k). Each      \
 * step runs over the blocks in turn: their chains of dependent steps interleave. */      \
FL_INLINE void fl_small_stats_k_##SUFFIX(VT (*t)[FL_SMALL_C], const int nk, int c,       \
                                         int keep_exp, VT* shift, VT* rest,              \
                                         VT* log_sum) {                                  \
    const VT zero = {0};                                                                  \
    VT m[FL_SMALL_K], rest0[FL_SMALL_K], rest1[FL_SMALL_K];                               \
    IT ones[FL_SMALL_K];                                                                  \
    FL_UNROLL for (int k = 0; k < nk; k++) m[k] = zero - INFINITY;                        \
    FL_UNROLL for (int j = 0; j < c; j++)                                                 \
        FL_UNROLL for (int k = 0; k < nk; k++) m[k] = VMAX(t[k][j], m[k]);                \
    FL_UNROLL for (int k = 0; k < nk; k++) {                                              \
        m[k] = SEL(m[k] == zero - INFINITY, zero, m[k]);                                  \
        rest0[k] = rest1[k] = zero;                                                       \
        ones[k] = (IT){0};                                                                \
    }                                                                                     \
    FL_UNROLL for (int j = 0; j < c; j++)                                                 \
        FL_UNROLL for (int k = 0; k < nk; k++) {                                          \
            IT at_max;                                                                    \
            const VT e = fl_small_exp_##SUFFIX(t[k][j], m[k], &at_max);                   \
            ones[k] -= at_max;                                                            \
            const VT e_rest = SEL(at_max, zero, e);                                       \
            if (j & 1) rest1[k] += e_rest;                                                \
            else rest0[k] += e_rest;                                                      \
            if (keep_exp) t[k][j] = e;                                                    \
        }                                                                                 \
    FL_UNROLL for (int k = 0; k < nk; k++) {                                              \
        shift[k] = m[k];                                                                  \
        /* S - 1 = (ones - 1) + the others: exact while the others are small */          \
        rest[k] = (__builtin_convertvector(ones[k], VT) - 1) + (rest0[k] + rest1[k]);     \
        rest[k] = SEL(m[k] == zero + INFINITY, zero + NAN, rest[k]);  /* exp(inf - inf) */\
    }                                                                                     \
    FL_UNROLL for (int k = 0; k < nk; k++) log_sum[k] = fl_log1p_##SUFFIX(rest[k]);       \
}                                                                                         \
                                                                                          \
/* The same for one block t[0:C]; returns log S. */                                       \
FL_INLINE VT fl_small_stats_##SUFFIX(VT* t, int c, int keep_exp, VT* shift, VT* rest) {   \
    VT log_sum;                                                                           \
    fl_small_stats_k_##SUFFIX((VT(*)[FL_SMALL_C])t, 1, c, keep_exp, shift, rest,          \
                              &log_sum);                                                  \
    return log_sum;                                                                       \
}                                                                                         \
                                                                                          \
/* The block of `rows` rows at x into class vectors t, a copy of them (the scores) into   \
 * scores, and their statistics as fl_small_stats_* forms them; returns log S. */         \
FL_INLINE VT fl_small_load_stats_##SUFFIX(const T* x, ptrdiff_t rows, const int c,        \
                                          const fl_small_plan_##SUFFIX* p, int keep_exp,  \
                                          VT* t, VT* scores, VT* shift, VT* rest) {       \
    fl_small_load_##SUFFIX(x, rows, c, p, t);                                             \
    FL_UNROLL for (int j = 0; j < c; j++) scores[j] = t[j];                               \
    return fl_small_stats_##SUFFIX(t, c, keep_exp, shift, rest);                          \
}                                                                                         \
                                                                                          \
FL_INLINE void fl_small_softmax_c_##SUFFIX(const T* x, ptrdiff_t rows, const int c,       \
                                           const fl_small_plan_##SUFFIX* p, T* out) {     \
    VT t[FL_SMALL_C], m, rest;                                                            \
    fl_small_load_##SUFFIX(x, rows, c, p, t);                                             \
    fl_small_stats_##SUFFIX(t, c, 1, &m, &rest);                                          \
    const VT inv_sum = 1 / (rest + 1);                                                    \
    FL_UNROLL for (int j = 0; j < c; j++) t[j] = t[j] * inv_sum;                                    \
    fl_small_store_##SUFFIX(t, rows, c, p, out);                                          \
}                                                                                         \
                                                                                          \
FL_INLINE void fl_small_log_softmax_c_##SUFFIX(const T* x, ptrdiff_t rows, const int c,   \
                                               const fl_small_plan_##SUFFIX* p, T* out) { \
    VT t[FL_SMALL_C], x_minus[FL_SMALL_C], m, rest;                                       \
    const VT log_sum =                                                                    \
        fl_small_load_stats_##SUFFIX(x, rows, c, p, 0, t, x_minus, &m, &rest);            \
    FL_UNROLL for (int j = 0; j < c; j++) x_minus[j] = fl_sub_exact_##SUFFIX(x_minus[j], m, log_sum); \
    fl_small_store_##SUFFIX(x_minus, rows, c, p, out);                                    \
}                                                                                         \
                                                                                          \
/* logsumexp of the rows, as double, into out[0:rows]. */                                 \
FL_INLINE void fl_small_logsumexp_c_##SUFFIX(const T* x, ptrdiff_t rows, const int c,     \
                                             const fl_small_plan_##SUFFIX* p,             \
                                             double* out) {                               \
    VT t[FL_SMALL_C], m, rest;                                                            \
    fl_small_load_##SUFFIX(x, rows, c, p, t);                                             \
    const VT log_sum = fl_small_stats_##SUFFIX(t, c, 0, &m, &rest);                       \
    fl_small_put_##SUFFIX(out, m + log_sum, rows);                                        \
}                                                                                         \
                                                                                          \
/* Cross-entropy with class targets y (rows row0 ... of the array), all options but soft \
 * targets: the same quantities as _cross_entropy.pyx's ce_row with x_scale = 1 and no   \
 * loss factor, for rows <= nk L rows (nk blocks; each step runs over the blocks in      \
 * turn). Row losses (sample weight included) into loss_out and their sum into *loss_sum \
 * (in a fixed order: a tree over lanes and blocks), logsumexp into lse_out and the      \
 * gradient into grad, each unless NULL. With plain (no weights, smoothing or z_loss,  \
 * as the spec says) the options' terms drop out at compile time, with the same bits    \
 * (tests: test_few_classes_without_options_give_the_bits_of_unit_weights). */          \
FL_INLINE void fl_small_ce_c_##SUFFIX(                                                    \
    const T* x, ptrdiff_t rows, const int c, const int nk, const int plain,               \
    const ptrdiff_t* y, ptrdiff_t row0, const fl_small_plan_##SUFFIX* p,                  \
    const fl_small_ce_spec* spec, double* loss_out, double* loss_sum, double* lse_out,    \
    T* grad) {                                                                            \
    const VT zero = {0};                                                                  \
    const double* class_weight = plain ? NULL : spec->class_weight;                       \
    const double* sample_weight = plain ? NULL : spec->sample_weight;                     \
    const double smoothing = plain ? 0.0 : spec->smoothing;                               \
    const double hard_scale = plain ? 1.0 : spec->hard_scale;                             \
    const double z_loss = plain ? 0.0 : spec->z_loss;                                     \
    const double coef_sum_d = plain ? 0.0 : spec->coef_sum;                               \
    const int smooth = smoothing != 0.0;                                                  \
    VT t[FL_SMALL_K][FL_SMALL_C], x_minus[FL_SMALL_K][FL_SMALL_C];                        \
    VT m[FL_SMALL_K], rest[FL_SMALL_K], log_sum[FL_SMALL_K];                              \
    /* per block: its rows, targets, the row weight (0 for ignored rows, and rows past    \
     * the end), the hard coefficient (1 - eps) w_y and x_y */                            \
    ptrdiff_t n[FL_SMALL_K];                                                              \
    IT target[FL_SMALL_K];                                                                \
    VT weight[FL_SMALL_K], hard[FL_SMALL_K], x_y[FL_SMALL_K];                             \
    FL_UNROLL for (int k = 0; k < nk; k++) {                                              \
        n[k] = rows - k * (L) < 0 ? 0 : rows - k * (L) > (L) ? (L) : rows - k * (L);      \
        fl_small_load_##SUFFIX(x + k * (L) * c, n[k], c, p, t[k]);                        \
        target[k] = fl_small_targets_##SUFFIX(y + k * (L), n[k], spec->ignore_index);     \
        weight[k] = zero + 1;                                                             \
        if (sample_weight)                                                                \
            weight[k] = fl_small_get_##SUFFIX(sample_weight + row0 + k * (L), n[k]);      \
        weight[k] = SEL(target[k] == -1, zero, weight[k]);  /* ignored, or past the end */\
        hard[k] = class_weight ? zero : zero + (T)hard_scale;                             \
        x_y[k] = zero;                                                                    \
    }                                                                                     \
    FL_UNROLL for (int j = 0; j < c; j++)                                                 \
        FL_UNROLL for (int k = 0; k < nk; k++) {                                          \
            const IT is_y = target[k] == j;                                               \
            x_y[k] = SEL(is_y, t[k][j], x_y[k]);                                          \
            if (class_weight)                                                             \
                hard[k] = SEL(is_y, zero + (T)(hard_scale * class_weight[j]), hard[k]);   \
        }                                                                                 \
    if (smooth)       /* the scores, for the smoothing's sum */                          \
        for (int k = 0; k < nk; k++)                                                      \
            for (int j = 0; j < c; j++) x_minus[k][j] = t[k][j];                          \
    fl_small_stats_k_##SUFFIX(t, nk, c, grad != NULL, m, rest, log_sum);                  \
    const VT coef_sum = zero + (T)coef_sum_d;                                             \
    VT lse[FL_SMALL_K];                                                                   \
    fl_vd sums[FL_SMALL_K];                                                               \
    FL_UNROLL for (int k = 0; k < nk; k++) {                                              \
        VT coef_dot = zero;       /* sum_j a_j (m - x_j); a zero a_j adds 0 */           \
        if (smooth)                                                                       \
            for (int j = 0; j < c; j++) {                                                 \
                const T a = (T)(smoothing * (class_weight ? class_weight[j] : 1.0));      \
                if (a != 0) coef_dot += a * (m[k] - x_minus[k][j]);                       \
            }                                                                             \
        lse[k] = m[k] + log_sum[k];                                                       \
        /* plain: the sum's terms 0 + 0 log S and 1 (...) are exact; the sum, too */      \
        VT loss = (m[k] - x_y[k]) + log_sum[k];                                           \
        if (!plain)                                                                       \
            loss = (coef_dot + coef_sum * log_sum[k]) +                                   \
                   SEL(hard[k] != zero, hard[k] * loss, zero);                            \
        if (z_loss != 0.0) loss = loss + (T)z_loss * lse[k] * lse[k];                     \
        /* 0 in the lanes past the end */                                                 \
        loss = SEL(weight[k] != zero, weight[k] * loss, zero);                            \
        if (loss_out) fl_small_put_##SUFFIX(loss_out + k * (L), loss, n[k]);              \
        sums[k] = fl_small_pairs_##SUFFIX(loss);                                          \
        if (lse_out) fl_small_put_##SUFFIX(lse_out + k * (L), lse[k], n[k]);              \
    }                                                                                     \
    if (loss_sum) {                                                                       \
        FL_UNROLL for (int w = 1; w < nk; w *= 2)                                         \
            FL_UNROLL for (int k = 0; k + w < nk; k += 2 * w) sums[k] += sums[k + w];     \
        *loss_sum = fl_hsum(sums[0]);                                                     \
    }                                                                                     \
    if (!grad) return;                                                                    \
    /* grad_j = w / D ((h + A + 2 z lse) p_j - a_j - h [j = y]); where y is at the max,   \
     * the target's (h + A + 2 z lse)(p_y - 1) + (A - a_y + 2 z lse) with p_y - 1 as       \
     * -(S - 1) / S: nothing cancels, as in the row kernel's double */                    \
    VT scale[FL_SMALL_K], z_lse[FL_SMALL_K], slope[FL_SMALL_K], inv_sum[FL_SMALL_K];      \
    FL_UNROLL for (int k = 0; k < nk; k++) {                                              \
        scale[k] = weight[k] * (T)spec->grad_scale;                                       \
        /* plain: 0 for 0 lse but where lse is infinite or NaN, whose row's gradient is \
         * NaN all the same; then the slope is 1 and drops out */                        \
        z_lse[k] = plain ? zero : (T)(2.0 * z_loss) * lse[k];                             \
        slope[k] = hard[k] + coef_sum + z_lse[k];                                         \
        inv_sum[k] = 1 / (rest[k] + 1);                                                   \
    }                                                                                     \
    FL_UNROLL for (int j = 0; j < c; j++) {                                               \
        const T a = smoothing == 0.0 ? 0 : (T)(smoothing *                                \
            (class_weight ? class_weight[j] : 1.0));                                      \
        FL_UNROLL for (int k = 0; k < nk; k++) {                                          \
            const IT is_y = target[k] == j;                                               \
            VT g = slope[k] * (t[k][j] * inv_sum[k]) - a;                                 \
            const VT at_max =                                                             \
                slope[k] * -(rest[k] * inv_sum[k]) + ((coef_sum - a) + z_lse[k]);         \
            g = SEL(is_y, SEL(x_y[k] == m[k], at_max, g - hard[k]), g);                   \
            t[k][j] = SEL(weight[k] != zero, scale[k] * g, zero);                         \
        }                                                                                 \
    }                                                                                     \
    FL_UNROLL for (int k = 0; k < nk; k++)                                                \
        fl_small_store_##SUFFIX(t[k], n[k], c, p, grad + k * (L) * c);                    \
}                                                                                         \
                                                                                          \
/* The entry points: the class count a compile-time constant where it is a common one, so \
 * that the compiler keeps the class vectors in registers. */                             \
static inline void fl_small_softmax_##SUFFIX(const T* x, ptrdiff_t rows,                  \
                                             const fl_small_plan_##SUFFIX* p, T* out) {   \
    FL_SMALL_DISPATCH_ALL(p->n_classes, fl_small_softmax_c_##SUFFIX, x, rows, C_, p,     \
                          out);                                                           \
}                                                                                         \
static inline void fl_small_log_softmax_##SUFFIX(const T* x, ptrdiff_t rows,              \
                                                 const fl_small_plan_##SUFFIX* p,         \
                                                 T* out) {                                \
    FL_SMALL_DISPATCH_ALL(p->n_classes, fl_small_log_softmax_c_##SUFFIX, x, rows, C_, p, \
                          out);                                                           \
}                                                                                         \
static inline void fl_small_logsumexp_##SUFFIX(const T* x, ptrdiff_t rows,                \
                                               const fl_small_plan_##SUFFIX* p,           \
                                               double* out) {                             \
    FL_SMALL_DISPATCH_ALL(p->n_classes, fl_small_logsumexp_c_##SUFFIX, x, rows, C_, p,   \
                          out);                                                           \
}                                                                                         \
/* Cross-entropy of rows <= FL_SMALL_CE_BLOCKS(C) L rows (fl_small_ce_c_*). Each class    \
 * count gets its own compiled copy without options (the common call: 1.2-1.5x faster    \
 * than the loops over a count known at run time), 2 and 10 with them too. A block       \
 * past the rows would be computed all the same: rows of one block take one (a span's     \
 * last call may have fewer rows; two blocks' rows still go faster as four blocks). */    \
static inline void fl_small_ce_##SUFFIX(                                                  \
    const T* x, ptrdiff_t rows, const ptrdiff_t* y, ptrdiff_t row0,                       \
    const fl_small_plan_##SUFFIX* p, const fl_small_ce_spec* spec,                        \
    double* loss_out, double* loss_sum, double* lse_out, T* grad) {                       \
    const int plain = !spec->class_weight && !spec->sample_weight &&                      \
                      spec->smoothing == 0.0 && spec->z_loss == 0.0 &&                    \
                      spec->hard_scale == 1.0 && spec->coef_sum == 0.0;                   \
    const int one = rows <= (L);                                                          \
    switch (p->n_classes * 4 + plain * 2 + one) {                                         \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 2, 1);                                       \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 3, 1);                                       \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 4, 1);                                       \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 5, 1);                                       \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 6, 1);                                       \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 7, 1);                                       \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 8, 1);                                       \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 9, 1);                                       \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 10, 1);                                      \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 11, 1);                                      \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 12, 1);                                      \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 13, 1);                                      \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 14, 1);                                      \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 15, 1);                                      \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 16, 1);                                      \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 2, 0);                                       \
    FL_SMALL_CE_CASE(fl_small_ce_c_##SUFFIX, 10, 0);                                      \
    default:   /* the count as it is: the loops stay loops */                             \
        fl_small_ce_c_##SUFFIX(x, rows, p->n_classes,                                     \
                               one ? 1 : FL_SMALL_CE_BLOCKS(p->n_classes), 0, y, row0,    \
                               p, spec, loss_out, loss_sum, lse_out, grad);               \
        break;                                                                            \
    }                                                                                     \
}

/* (x - m) - log_sum with x - m exact, for each type */
FL_INLINE fl_vf fl_sub_exact_f32(fl_vf x, fl_vf m, fl_vf log_sum) {
    const fl_vf d = x - m;
    const fl_vf x_seen = d + m, m_seen = x_seen - d;
    const fl_vf lo = (x - x_seen) + (m_seen - m);
    const fl_vf zero = {0};
    /* lo is NaN where x is -inf (d is -inf all the same) */
    return (d - log_sum) + fl_select_f(lo == lo, lo, zero);
}
FL_INLINE fl_vd fl_sub_exact_f64(fl_vd x, fl_vd m, fl_vd log_sum) {
    return (x - m) - log_sum;
}

FL_DEFINE_SMALL(f32, float, fl_vf, fl_vi, FL_NF, fl_select_f, fl_vmax_f)
FL_DEFINE_SMALL(f64, double, fl_vd, fl_vl, FL_ND, fl_select_d, fl_vmax_d)

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

/* Terms of the double-lane formulas below, for their double and float kernels. */
/* a_j (m - x_j), or 0 where a_j is (even at x_j = -inf): a term of sum_j a_j (m - x_j) */
FL_INLINE fl_vd fl_small_dot_term(fl_vd a, fl_vd m, fl_vd x) {
    const fl_vd zero = {0};
    return fl_select_d(a != zero, a * (m - x), zero);
}
/* A probability target's coefficient a_j = (1 - eps) q_j + eps / C (before its weight). */
FL_INLINE fl_vd fl_small_soft_coef(fl_vd q, const fl_small_ce_spec* spec) {
    const fl_vd zero = {0};
    return fl_fma_d(q, zero + spec->hard_scale, zero + spec->smoothing);
}
/* The soft targets' gradient scale (slope p_j - a_j), p_j = e_j inv_sum. */
FL_INLINE fl_vd fl_small_soft_grad(fl_vd scale, fl_vd slope, fl_vd e, fl_vd inv_sum,
                                   fl_vd a) {
    return scale * fl_fma_d(slope, e * inv_sum, -a);
}
/* The entropy's gradient factor p_j ((m - x_j) + log S - H), 0 where p_j is. */
FL_INLINE fl_vd fl_small_entropy_grad(fl_vd factor, fl_vd e, fl_vd m, fl_vd x,
                                      fl_vd offset) {
    const fl_vd zero = {0};
    return fl_select_d(e != zero, factor * e * ((m - x) + offset), zero);
}

/* Cross-entropy against probability rows q (soft targets; with_entropy: KL(a || softmax),
 * distillation at temperature 1), in double lanes for both storage types: the same
 * quantities as _cross_entropy.pyx's ce_row with coefficients a_j, whose sums the row
 * kernel also forms in double. Row losses (sample weight included) into loss_out,
 * logsumexp into lse_out and the gradient into grad unless NULL. */
FL_INLINE void fl_small_soft_ce_c_f64(
    const double* x, const double* q, ptrdiff_t rows, const int c, ptrdiff_t row0,
    const fl_small_plan_f64* p, const fl_small_ce_spec* spec, double* loss_out,
    double* lse_out, double* grad) {
    if (c < 1 || c > FL_SMALL_C) __builtin_unreachable();    /* for the unrolled loops */
    const fl_vd zero = {0};
    fl_vd t[FL_SMALL_C], a[FL_SMALL_C], x_minus[FL_SMALL_C] = {{0}}, m, rest;
    fl_small_load_f64(x, rows, c, p, t);
    fl_small_load_f64(q, rows, c, p, a);
    /* fl_small_get_f64 gives 0 past the end: those rows are inactive */
    const fl_vd weight = spec->sample_weight ? fl_small_get_f64(spec->sample_weight + row0, rows)
                                             : zero + 1.0;
    fl_vl past = {0};
    for (int k = 0; k < FL_ND; k++) past[k] = k >= rows ? -1 : 0;
    const fl_vl active = (weight != zero) & ~past;
    fl_vd coef_sum = zero, coef_dot = zero, entropy = zero;
    const double s = spec->x_scale;
    fl_vd log_a[FL_SMALL_C];            /* exact for a teacher's logits or log-probs */
    if (spec->teacher_kind != FL_SOFT_PROBS) {
        /* log a_j = (q_j - max q) s - log sum_k exp((q_k - max q) s) (logits; q_j - max q
         * exact for nearby values) or q_j (log-probabilities), as the row kernel forms it */
        FL_UNROLL for (int j = 0; j < c; j++) log_a[j] = a[j];
        if (spec->teacher_kind == FL_SOFT_LOGITS) {
            fl_vd q_max = zero - INFINITY, q_shift, q_rest;
            FL_UNROLL for (int j = 0; j < c; j++) q_max = fl_vmax_d(a[j], q_max);
            FL_UNROLL for (int j = 0; j < c; j++) log_a[j] = (a[j] - q_max) * s;
            const fl_vd q_log_sum = fl_small_stats_f64(log_a, c, 0, &q_shift, &q_rest);
            FL_UNROLL for (int j = 0; j < c; j++) log_a[j] = log_a[j] - q_log_sum;
        }
        FL_UNROLL for (int j = 0; j < c; j++) a[j] = fl_exp_d(log_a[j]);
    }
    FL_UNROLL for (int j = 0; j < c; j++) {
        x_minus[j] = t[j];
        if (spec->teacher_kind == FL_SOFT_PROBS)
            a[j] = fl_small_soft_coef(a[j], spec);
        if (spec->class_weight) a[j] = a[j] * spec->class_weight[j];
    }
    fl_vd x_max = zero;
    if (s != 1.0) {
        /* the scores (x - max) s, as the row kernel forms them: their max is then 0 */
        x_max = zero - INFINITY;
        FL_UNROLL for (int j = 0; j < c; j++) x_max = fl_vmax_d(t[j], x_max);
        x_max = fl_select_d(x_max == zero - INFINITY, zero, x_max);
        FL_UNROLL for (int j = 0; j < c; j++) t[j] = (t[j] - x_max) * s;
    }
    const fl_vd log_sum = fl_small_stats_f64(t, c, grad != NULL, &m, &rest);
    if (s != 1.0) m = x_max;
    FL_UNROLL for (int j = 0; j < c; j++) {      /* a zero a_j adds 0, even at x = -inf */
        const fl_vl nonzero = a[j] != zero;
        coef_sum += a[j];
        coef_dot += fl_small_dot_term(a[j], m, x_minus[j]);
        if (spec->with_entropy)
            entropy += fl_select_d(nonzero, a[j] * (spec->teacher_kind == FL_SOFT_PROBS
                                                    ? fl_log_d(a[j]) : log_a[j]), zero);
    }
    const fl_vd lse = m * s + log_sum;
    fl_vd loss = (coef_dot * s + coef_sum * log_sum + entropy) * spec->loss_factor;
    if (spec->z_loss != 0.0) loss = loss + spec->z_loss * lse * lse;
    fl_small_put_f64(loss_out, fl_select_d(active, weight * loss, zero), rows);
    if (lse_out) fl_small_put_f64(lse_out, lse, rows);
    if (!grad) return;
    /* grad_j = w / D f s ((A + 2 z lse / f) p_j - a_j) */
    const fl_vd scale = weight * (spec->grad_scale * spec->loss_factor * s);
    const fl_vd slope = coef_sum + (2.0 * spec->z_loss / spec->loss_factor) * lse;
    const fl_vd inv_sum = 1 / (rest + 1);
    FL_UNROLL for (int j = 0; j < c; j++)
        t[j] = fl_select_d(active, fl_small_soft_grad(scale, slope, t[j], inv_sum, a[j]),
                           zero);
    fl_small_store_f64(t, rows, c, p, grad);
}

static inline void fl_small_soft_ce_f64(
    const double* x, const double* q, ptrdiff_t rows, ptrdiff_t row0,
    const fl_small_plan_f64* p, const fl_small_ce_spec* spec, double* loss_out,
    double* lse_out, double* grad) {
    FL_SMALL_DISPATCH(p->n_classes, fl_small_soft_ce_c_f64, x, q, rows, C_, row0, p, spec,
                      loss_out, lse_out, grad);
}

/* The same for float rows and probability targets (teachers' probabilities without their
 * entropy, no temperature: cross_entropy), in float lanes: FL_NF rows a block, the
 * exponentials, their sum and its log as fl_small_stats_f32 forms them (the class-target
 * kernel's); the coefficients a_j, their sums A and sum_j a_j (m - x_j), the loss and the
 * gradient in double over the block's halves widened (the gradient's terms may nearly
 * cancel: its error is then a few ulps of the exponential, as the row kernel's). In
 * double lanes these took 1.3 (C = 10) to 2.2 (C = 2) times as long. */
FL_INLINE void fl_small_soft_ce_c_f32(
    const float* x, const float* q, ptrdiff_t rows, const int c, ptrdiff_t row0,
    const fl_small_plan_f32* p, const fl_small_ce_spec* spec, double* loss_out,
    float* grad) {
    if (c < 1 || c > FL_SMALL_C) __builtin_unreachable();    /* for the unrolled loops */
    const fl_vd zero = {0};
    fl_vf t[FL_SMALL_C], probs[FL_SMALL_C], x_minus[FL_SMALL_C], m, rest;
    const fl_vf log_sum =
        fl_small_load_stats_f32(x, rows, c, p, grad != NULL, t, x_minus, &m, &rest);
    fl_small_load_f32(q, rows, c, p, probs);
    /* per half h of the block (rows [0, FL_ND) and the rest), in double */
    const fl_vd m_half[2] = {fl_widen_lo(m), fl_widen_hi(m)};
    const fl_vd log_sum_half[2] = {fl_widen_lo(log_sum), fl_widen_hi(log_sum)};
    ptrdiff_t n[2];                     /* the half's rows */
    fl_vd weight[2], coef_sum[2] = {zero, zero}, coef_dot[2] = {zero, zero};
    fl_vl active[2];
    for (int h = 0; h < 2; h++) {
        const ptrdiff_t left = rows - h * FL_ND;
        n[h] = left < 0 ? 0 : left > FL_ND ? FL_ND : left;
        /* fl_small_get_f64 gives 0 past the end: those rows are inactive */
        weight[h] = spec->sample_weight
                        ? fl_small_get_f64(spec->sample_weight + row0 + h * FL_ND, n[h])
                        : zero + 1.0;
        fl_vl past = {0};
        for (int k = 0; k < FL_ND; k++) past[k] = k >= n[h] ? -1 : 0;
        active[h] = (weight[h] != zero) & ~past;
    }
    FL_UNROLL for (int j = 0; j < c; j++) {
        const fl_vd q_half[2] = {fl_widen_lo(probs[j]), fl_widen_hi(probs[j])};
        const fl_vd x_half[2] = {fl_widen_lo(x_minus[j]), fl_widen_hi(x_minus[j])};
        for (int h = 0; h < 2; h++) {
            fl_vd a = fl_small_soft_coef(q_half[h], spec);
            if (spec->class_weight) a = a * spec->class_weight[j];
            coef_sum[h] += a;
            coef_dot[h] += fl_small_dot_term(a, m_half[h], x_half[h]);
        }
    }
    fl_vd lse[2];
    for (int h = 0; h < 2; h++) {       /* the rows' losses */
        lse[h] = m_half[h] + log_sum_half[h];
        fl_vd loss = coef_dot[h] + coef_sum[h] * log_sum_half[h];
        if (spec->z_loss != 0.0) loss = loss + spec->z_loss * lse[h] * lse[h];
        if (n[h]) fl_small_put_f64(loss_out + h * FL_ND,
                                   fl_select_d(active[h], weight[h] * loss, zero), n[h]);
    }
    if (!grad) return;
    /* grad_j = w / D ((A + 2 z lse) p_j - a_j) */
    fl_vd scale[2], slope[2], inv_sum[2] = {1 / (fl_widen_lo(rest) + 1),
                                            1 / (fl_widen_hi(rest) + 1)};
    for (int h = 0; h < 2; h++) {
        scale[h] = weight[h] * spec->grad_scale;
        slope[h] = coef_sum[h] + (2.0 * spec->z_loss) * lse[h];
    }
    FL_UNROLL for (int j = 0; j < c; j++) {
        const fl_vd e_half[2] = {fl_widen_lo(t[j]), fl_widen_hi(t[j])};
        const fl_vd q_half[2] = {fl_widen_lo(probs[j]), fl_widen_hi(probs[j])};
        fl_vd g[2];
        for (int h = 0; h < 2; h++) {
            fl_vd a = fl_small_soft_coef(q_half[h], spec);
            if (spec->class_weight) a = a * spec->class_weight[j];
            const fl_vd g_h =
                fl_small_soft_grad(scale[h], slope[h], e_half[h], inv_sum[h], a);
            g[h] = fl_select_d(active[h], g_h, zero);
        }
        t[j] = fl_narrow(g[0], g[1]);
    }
    fl_small_store_f32(t, rows, c, p, grad);
}

/* Whether fl_small_soft_ce_c_f32 serves the spec. */
FL_INLINE int fl_small_soft_in_float(const fl_small_ce_spec* spec) {
    return spec->teacher_kind == FL_SOFT_PROBS && !spec->with_entropy &&
           spec->x_scale == 1.0 && spec->loss_factor == 1.0;
}

/* The entry for float rows (any number): blocks in float lanes where the spec allows
 * (fl_small_soft_in_float; logsumexp as fl_small_logsumexp_wide_f32 gives it),
 * else widened to double FL_ND rows at a time, the gradient rounded back to float. */
FL_INLINE void fl_small_soft_ce_f32(
    const float* x, const float* q, ptrdiff_t rows, ptrdiff_t row0,
    const fl_small_plan_f32* pf, const fl_small_plan_f64* p, const fl_small_ce_spec* spec,
    double* loss_out, double* lse_out, float* grad) {
    const int c = p->n_classes;
    if (fl_small_soft_in_float(spec)) {
        for (ptrdiff_t r0 = 0; r0 < rows; r0 += FL_NF) {
            const ptrdiff_t n = rows - r0 < FL_NF ? rows - r0 : FL_NF;
            if (lse_out) fl_small_logsumexp_wide_f32(x + r0 * c, n, pf, lse_out + r0);
            FL_SMALL_DISPATCH(c, fl_small_soft_ce_c_f32, x + r0 * c, q + r0 * c, n, C_,
                              row0 + r0, pf, spec, loss_out + r0,
                              grad ? grad + r0 * c : NULL);
        }
        return;
    }
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += FL_ND) {
        const ptrdiff_t n = rows - r0 < FL_ND ? rows - r0 : FL_ND;
        double wide_x[FL_ND * FL_SMALL_C], wide_q[FL_ND * FL_SMALL_C], wide_g[FL_ND * FL_SMALL_C];
        fl_small_widen(x + r0 * c, n * c, wide_x);
        fl_small_widen(q + r0 * c, n * c, wide_q);
        fl_small_soft_ce_f64(wide_x, wide_q, n, row0 + r0, p, spec, loss_out + r0,
                             lse_out ? lse_out + r0 : NULL, grad ? wide_g : NULL);
        if (grad) fl_small_narrow(wide_g, n * c, grad + r0 * c);
    }
}

/* The entropy of softmax(x) of each row, H = log S + sum_j e_j (m - x_j) / S with e_j =
 * exp(x_j - m), times unit into out[0:rows], and its gradient grad_scale p_j ((m - x_j) +
 * log S - H) into grad unless NULL (a class of probability 0 gets 0): the quantities of
 * _rows.pxd's softmax_entropy and scale_entropy_grad, in double lanes. */
FL_INLINE void fl_small_entropy_c_f64(const double* x, ptrdiff_t rows, const int c,
                                      const fl_small_plan_f64* p, double unit,
                                      double grad_scale, double* out, double* grad) {
    if (c < 1 || c > FL_SMALL_C) __builtin_unreachable();    /* for the unrolled loops */
    const fl_vd zero = {0};
    fl_vd t[FL_SMALL_C], x_minus[FL_SMALL_C], m, rest;
    const fl_vd log_sum = fl_small_load_stats_f64(x, rows, c, p, 1, t, x_minus, &m, &rest);
    fl_vd dot = zero;                   /* a -inf score's e_j = 0 adds 0 */
    FL_UNROLL for (int j = 0; j < c; j++)
        dot += fl_small_dot_term(t[j], m, x_minus[j]);
    const fl_vd inv_sum = 1 / (rest + 1);
    const fl_vd h = log_sum + dot * inv_sum;
    fl_small_put_f64(out, h * unit, rows);
    if (!grad) return;
    const fl_vd offset = log_sum - h, factor = grad_scale * inv_sum;
    FL_UNROLL for (int j = 0; j < c; j++)
        t[j] = fl_small_entropy_grad(factor, t[j], m, x_minus[j], offset);
    fl_small_store_f64(t, rows, c, p, grad);
}

static inline void fl_small_entropy_f64(const double* x, ptrdiff_t rows,
                                        const fl_small_plan_f64* p, double unit,
                                        double grad_scale, double* out, double* grad) {
    FL_SMALL_DISPATCH(p->n_classes, fl_small_entropy_c_f64, x, rows, C_, p, unit,
                      grad_scale, out, grad);
}

/* The same for float rows in float lanes (FL_NF rows a block): the exponentials, their
 * sum and its log as fl_small_stats_f32 forms them; the sum of e_j (m - x_j), H and the
 * gradient in double over the block's halves widened (1M x 10, one thread: 15 ms in
 * double lanes, 10 in these). */
FL_INLINE void fl_small_entropy_c_f32(const float* x, ptrdiff_t rows, const int c,
                                      const fl_small_plan_f32* p, double unit,
                                      double grad_scale, double* out, float* grad) {
    if (c < 1 || c > FL_SMALL_C) __builtin_unreachable();    /* for the unrolled loops */
    const fl_vd zero = {0};
    fl_vf t[FL_SMALL_C], x_minus[FL_SMALL_C], m, rest;
    const fl_vf log_sum = fl_small_load_stats_f32(x, rows, c, p, 1, t, x_minus, &m, &rest);
    /* per half of the block (rows [0, FL_ND) and the rest), in double */
    const fl_vd m_half[2] = {fl_widen_lo(m), fl_widen_hi(m)};
    const fl_vd log_sum_half[2] = {fl_widen_lo(log_sum), fl_widen_hi(log_sum)};
    const fl_vd inv_sum[2] = {1 / (fl_widen_lo(rest) + 1), 1 / (fl_widen_hi(rest) + 1)};
    fl_vd dot[2] = {zero, zero};        /* a -inf score's e_j = 0 adds 0 */
    FL_UNROLL for (int j = 0; j < c; j++) {
        const fl_vd e_half[2] = {fl_widen_lo(t[j]), fl_widen_hi(t[j])};
        const fl_vd x_half[2] = {fl_widen_lo(x_minus[j]), fl_widen_hi(x_minus[j])};
        for (int h = 0; h < 2; h++)
            dot[h] += fl_small_dot_term(e_half[h], m_half[h], x_half[h]);
    }
    fl_vd entropy[2];
    for (int h = 0; h < 2; h++) {
        entropy[h] = log_sum_half[h] + dot[h] * inv_sum[h];
        if (h * FL_ND < rows)
            fl_small_put_f64(out + h * FL_ND, entropy[h] * unit,
                             rows - h * FL_ND < FL_ND ? rows - h * FL_ND : FL_ND);
    }
    if (!grad) return;
    FL_UNROLL for (int j = 0; j < c; j++) {
        const fl_vd e_half[2] = {fl_widen_lo(t[j]), fl_widen_hi(t[j])};
        const fl_vd x_half[2] = {fl_widen_lo(x_minus[j]), fl_widen_hi(x_minus[j])};
        fl_vd g[2];
        for (int h = 0; h < 2; h++) {
            const fl_vd offset = log_sum_half[h] - entropy[h];
            const fl_vd factor = grad_scale * inv_sum[h];
            g[h] = fl_small_entropy_grad(factor, e_half[h], m_half[h], x_half[h], offset);
        }
        t[j] = fl_narrow(g[0], g[1]);
    }
    fl_small_store_f32(t, rows, c, p, grad);
}

static inline void fl_small_entropy_f32(const float* x, ptrdiff_t rows,
                                        const fl_small_plan_f32* p, double unit,
                                        double grad_scale, double* out, float* grad) {
    FL_SMALL_DISPATCH(p->n_classes, fl_small_entropy_c_f32, x, rows, C_, p, unit,
                      grad_scale, out, grad);
}

#endif  /* vector extensions */

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
