/* The row losses of losses/row_loss.h on every path of the engine: single rows and
 * streamed rows (fl_loss_row_T), batches of rows of one chunk (fl_loss_batch_T), and blocks
 * of rows of few classes (fl_small_ce_T for class targets, fl_small_soft_ce_T for target
 * rows and teachers).
 */
#ifndef FL_LOSSES_ROW_LOSS_PATHS_H
#define FL_LOSSES_ROW_LOSS_PATHS_H

#include "row_loss.h"
#include "kl_refined.h"

#define FL_TEMPLATE "losses/row_loss_t.h"
#include "../each_type.h"
#undef FL_TEMPLATE

#if FL_VECTORS
#include "../engine/blocks.h"

/* Blocks per call of the class-target block kernel (fl_small_ce_T) at C classes: a block
 * of few classes is one short chain of dependent steps, which leaves the core waiting
 * unless other blocks' chains interleave with it (docs/performance.md). */
#define FL_SMALL_CE_BLOCKS(c) ((c) <= 4 ? 4 : (c) <= 8 ? 2 : 1)

/* fl_small_ce_*'s switch case for C classes (a constant): FN (fl_small_ce_c_*) without
 * options or with, on one block for rows of one block, else on FL_SMALL_CE_BLOCKS(C). */
#define FL_SMALL_CE_CALL(FN, C, NK, PLAIN)                                                \
    FN(x, rows, (C), (NK), (PLAIN), y, row0, p, spec, loss_out, loss_sum, lse_out, grad)
#define FL_SMALL_CE_CASE(C, FN)                                                           \
    case C:                                                                               \
        if (plain && (FL_SMALL_CE_BLOCKS(C) == 1 || one))                                 \
            FL_SMALL_CE_CALL(FN, C, 1, 1);                                                \
        else if (plain)                                                                   \
            FL_SMALL_CE_CALL(FN, C, FL_SMALL_CE_BLOCKS(C), 1);                            \
        else if (FL_SMALL_CE_BLOCKS(C) == 1 || one)                                       \
            FL_SMALL_CE_CALL(FN, C, 1, 0);                                                \
        else                                                                              \
            FL_SMALL_CE_CALL(FN, C, FL_SMALL_CE_BLOCKS(C), 0);                            \
        break;

/* The same with the count c at run time: NK blocks, without options or with. */
#define FL_SMALL_CE_LOOPS_CASE(FN, NK)                                                    \
    case (NK) * 2 + 1: FL_SMALL_CE_CALL(FN, c, NK, 1); break;                            \
    case (NK) * 2: FL_SMALL_CE_CALL(FN, c, NK, 0); break;

#define FL_BLOCK_PER_TYPE 1
#define FL_BLOCK_TEMPLATE "losses/row_loss_blocks_t.h"
#include "../engine/block_instances.h"
#undef FL_BLOCK_TEMPLATE
#undef FL_BLOCK_PER_TYPE

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

#define FL_BLOCK_PER_TYPE 0
#define FL_BLOCK_TEMPLATE "losses/soft_blocks_t.h"
#include "../engine/block_instances.h"
#undef FL_BLOCK_TEMPLATE
#undef FL_BLOCK_PER_TYPE

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
