/* Entropies: of probability rows, -sum_j p_j log p_j; and of softmax(x), with its
 * gradient, H = lse - sum_j q_j x_j = log S + sum_j e_j (max - x_j) / S and
 * dH/dx_j = q_j (lse - x_j - H), from one read of each row (the row engine's self dot).
 * Over rows and batches (the drivers, with engine/row_stats.h) and over blocks of rows of
 * few classes (below).
 */
#ifndef FL_LOSSES_ENTROPY_H
#define FL_LOSSES_ENTROPY_H

#include "row_loss_paths.h"

#if FL_VECTORS

#define FL_BLOCK_PER_TYPE 0
#define FL_BLOCK_TEMPLATE "losses/entropy_blocks_t.h"
#include "../engine/block_instances.h"
#undef FL_BLOCK_TEMPLATE
#undef FL_BLOCK_PER_TYPE

static inline void fl_small_entropy_f64(const double* x, ptrdiff_t rows,
                                        const fl_small_plan_f64* p, double unit,
                                        double grad_scale, double* out, double* grad) {
    FL_SMALL_DISPATCH(p->n_classes, fl_small_entropy_c_f64, x, rows, C_, p, unit,
                      grad_scale, out, grad);
}

static inline void fl_small_entropy_f32(const float* x, ptrdiff_t rows,
                                        const fl_small_plan_f32* p, double unit,
                                        double grad_scale, double* out, float* grad) {
    FL_SMALL_DISPATCH(p->n_classes, fl_small_entropy_c_f32, x, rows, C_, p, unit,
                      grad_scale, out, grad);
}

#endif  /* FL_VECTORS */

#endif
