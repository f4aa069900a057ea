/* The row losses of losses/row_loss.h on every path of the engine: single rows and
 * streamed rows (fl_loss_row_T), batches of rows of one chunk (fl_loss_batch_T), and blocks
 * of rows of few classes (fl_small_ce_T for class targets, fl_small_soft_ce_T for target
 * rows and teachers).
 */
#ifndef FL_LOSSES_ROW_LOSS_PATHS_H
#define FL_LOSSES_ROW_LOSS_PATHS_H

#include "row_loss.h"
#include "kl_refined.h"

#define FL_T float
#define FL_SFX(name) name##_f32
#include "row_loss_t.h"
#undef FL_T
#undef FL_SFX
#define FL_T double
#define FL_SFX(name) name##_f64
#include "row_loss_t.h"
#undef FL_T
#undef FL_SFX

#if FL_VECTORS
#include "../engine/blocks.h"

/* Blocks per call of the class-target block kernel (fl_small_ce_T) at C classes: a block
 * of few classes is one short chain of dependent steps, which leaves the core waiting
 * unless other blocks' chains interleave with it (docs/performance.md). */
#define FL_SMALL_CE_BLOCKS(c) ((c) <= 4 ? 4 : (c) <= 8 ? 2 : 1)

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

#define FL_T float
#define FL_VT fl_vf
#define FL_IT fl_vi
#define FL_L FL_NF
#define FL_SEL fl_select_f
#define FL_VMAX fl_vmax_f
#define FL_SFX(name) name##_f32
#include "row_loss_blocks_t.h"
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
#include "row_loss_blocks_t.h"
#undef FL_T
#undef FL_VT
#undef FL_IT
#undef FL_L
#undef FL_SEL
#undef FL_VMAX
#undef FL_SFX

/* Terms of the double-lane formulas below, for their double and float kernels. */
/* a_j (m - x_j), or 0 where a_j is (even at x_j = -inf): a term of sum_j a_j (m - x_j) */
FL_INLINE fl_vd fl_small_dot_term(fl_vd a, fl_vd m, fl_vd x) {
    const fl_vd zero = {0};
    return fl_select_d(a != zero, a * (m - x), zero);
}
/* A probability target's coefficient a_j = (1 - eps) q_j + eps / C (before its weight). */
FL_INLINE fl_vd fl_small_soft_coef(fl_vd q, const fl_block_loss* spec) {
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
 * distillation), in double lanes for both storage types: the quantities of
 * losses/row_loss.h with coefficients a_j, whose sums the row kernel also forms in
 * double. Row losses (sample weight included) into loss_out, logsumexp into lse_out, the
 * gradient into grad and each row's three loss terms (for fl_kl_terms_cancel) into terms
 * (FL_ND each), each unless NULL. */
FL_INLINE void fl_small_soft_ce_c_f64(
    const double* x, const double* q, ptrdiff_t rows, const int c, ptrdiff_t row0,
    const fl_small_plan_f64* p, const fl_block_loss* spec, double* loss_out,
    double* lse_out, double* grad, double* terms) {
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
    if (terms) {
        fl_small_put_f64(terms, coef_dot * s, rows);
        fl_small_put_f64(terms + FL_ND, coef_sum * log_sum, rows);
        fl_small_put_f64(terms + 2 * FL_ND, entropy, rows);
    }
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

/* fl_small_soft_ce_c_f64 on rows <= FL_ND rows; a distillation row whose terms cancel
 * (fl_kl_terms_cancel) is computed again by fl_kl_refined (x is intact: the drivers give
 * a distillation in place a copy of its rows). */
static inline void fl_small_soft_ce_f64(
    const double* x, const double* q, ptrdiff_t rows, ptrdiff_t row0,
    const fl_small_plan_f64* p, const fl_block_loss* spec, double* loss_out,
    double* lse_out, double* grad) {
    const int c = p->n_classes;
    double terms[3 * FL_ND];
    FL_SMALL_DISPATCH(c, fl_small_soft_ce_c_f64, x, q, rows, C_, row0, p, spec, loss_out,
                      lse_out, grad, spec->with_entropy ? terms : NULL);
    if (!spec->with_entropy) return;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const double weight = spec->sample_weight ? spec->sample_weight[row0 + r] : 1.0;
        if (weight == 0.0 ||
            !fl_kl_terms_cancel(terms[r], terms[FL_ND + r], terms[2 * FL_ND + r]))
            continue;
        const double scale = weight * (spec->grad_scale * spec->loss_factor * spec->x_scale);
        const double kl = fl_kl_refined_f64(x + r * c, q + r * c, c,
                                            (fl_target_kind)(FL_TEACHER_PROBS +
                                                             spec->teacher_kind),
                                            spec->x_scale, grad ? grad + r * c : NULL, scale);
        loss_out[r] = weight * (kl * spec->loss_factor);
    }
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
    const fl_small_plan_f32* p, const fl_block_loss* spec, double* loss_out,
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
FL_INLINE int fl_small_soft_in_float(const fl_block_loss* spec) {
    return spec->teacher_kind == FL_SOFT_PROBS && !spec->with_entropy &&
           spec->x_scale == 1.0 && spec->loss_factor == 1.0;
}

/* The entry for float rows (any number): blocks in float lanes where the spec allows
 * (fl_small_soft_in_float; logsumexp as fl_small_logsumexp_wide_f32 gives it),
 * else widened to double FL_ND rows at a time, the gradient rounded back to float. */
FL_INLINE void fl_small_soft_ce_f32(
    const float* x, const float* q, ptrdiff_t rows, ptrdiff_t row0,
    const fl_small_plan_f32* pf, const fl_small_plan_f64* p, const fl_block_loss* spec,
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

#endif  /* FL_VECTORS */

#endif
