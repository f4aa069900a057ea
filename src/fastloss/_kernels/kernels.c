/* The kernels for one instruction set: setup.py compiles this file once per entry of
 * instruction_sets.py, with that entry's flags and FL_ISA defined to its name, and the
 * table it defines (fl_kernels_<name>) is the only symbol it exports. Everything below
 * the table is static, so the copies do not clash.
 *
 * The layers, each in its folder: simd/ (the instruction set's primitives), maths/ (exp,
 * log), engine/ (row statistics, blocks of few classes, the choice of path), losses/ (each
 * loss's formulas over the engine), and here the drivers: the loops of each call over its
 * rows, parallel with OpenMP.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "api.h"

/* GCC cannot see that a block's loads read only its rows * C elements (the tails are
 * masked), nor that the blocks a call interleaves are each initialised before use, and
 * warns of the rest of the arrays they come from. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "simd/features.h"
#define FL_HAS_BLOCKS FL_VECTORS      /* the blocks of few classes (engine/chunks.h) */
#include "losses/entropy.h"
#include "losses/row_loss_paths.h"
#if FL_VECTORS
#include "engine/range.h"
#include "losses/elementwise.h"
#else
/* Compilers without vector extensions (MSVC), and FASTLOSS_SCALAR builds: the engine's
 * primitives in plain C (engine/rows_scalar.h), no blocks of few classes. */
#include "losses/elementwise_scalar.h"
#endif
#include "engine/strategy.h"

#ifndef FL_ISA
#error "FL_ISA must name the instruction set (setup.py defines it)"
#endif
#define FL_CAT2(a, b) a##b
#define FL_CAT(a, b) FL_CAT2(a, b)
#define FL_STR2(a) #a
#define FL_STR(a) FL_STR2(a)

/* The calling thread's index in the team (0 in a serial build). */
static inline int fl_thread(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Rows gathered per tile by the strided kernel (fl_tiles_loss): 16 float32 = one 64-byte
 * line, and at most FL_ROW_BATCH (a tile of rows of one chunk is one batch). */
#define FL_LANES 16

/* ---- the drivers of each element type ---- */

#if FL_HAS_BLOCKS
static inline void fl_small_logsumexp_out_f32(const float* x, ptrdiff_t rows,
                                              const fl_small_plan_f32* p, float* out) {
    fl_small_logsumexp_narrow_f32(x, rows, p, out);
}
static inline void fl_small_logsumexp_out_f64(const double* x, ptrdiff_t rows,
                                              const fl_small_plan_f64* p, double* out) {
    fl_small_logsumexp_f64(x, rows, p, out);
}
#endif

#define FL_TEMPLATE "drivers_t.h"
#include "each_type.h"
#undef FL_TEMPLATE

/* ---- the entry points: by dtype ---- */

static int fl_rows_entry(fl_rows_op op, fl_dtype dtype, const void* x, ptrdiff_t n_rows,
                         ptrdiff_t n_cols, void* out, int n_threads) {
    if (dtype == FL_FLOAT32)
        return fl_rows_f32(op, (const float*)x, n_rows, n_cols, (float*)out, n_threads);
    return fl_rows_f64(op, (const double*)x, n_rows, n_cols, (double*)out, n_threads);
}

static int fl_entropy_entry(fl_dtype dtype, const void* p, ptrdiff_t n_rows, ptrdiff_t n_cols,
                            double* out, double unit, int n_threads) {
    if (dtype == FL_FLOAT32)
        return fl_entropy_f32((const float*)p, n_rows, n_cols, out, unit, n_threads);
    return fl_entropy_f64((const double*)p, n_rows, n_cols, out, unit, n_threads);
}

static int fl_entropy_from_logits_entry(fl_dtype dtype, const void* x, ptrdiff_t n_rows,
                                        ptrdiff_t n_cols, double* out, void* grad,
                                        double grad_scale, double unit, int n_threads) {
    if (dtype == FL_FLOAT32)
        return fl_entropy_from_logits_f32((const float*)x, n_rows, n_cols, out, (float*)grad,
                                          grad_scale, unit, n_threads);
    return fl_entropy_from_logits_f64((const double*)x, n_rows, n_cols, out, (double*)grad,
                                      grad_scale, unit, n_threads);
}

static int fl_row_loss_entry(const fl_row_loss_call* call, double* total) {
    if (call->dtype == FL_FLOAT32) return fl_row_loss_f32(call, total);
    return fl_row_loss_f64(call, total);
}

static int fl_elementwise_entry(const fl_elementwise_call* call) {
    if (call->n == 0) return 0;
    if (call->dtype == FL_FLOAT32) return fl_elementwise_f32(call);
    return fl_elementwise_f64(call);
}

static int fl_value_range_entry(fl_dtype dtype, const void* v, ptrdiff_t n, double* lows,
                                double* highs, double* nans, int n_threads) {
    if (dtype == FL_FLOAT32)
        return fl_value_range_f32((const float*)v, n, lows, highs, nans, n_threads);
    return fl_value_range_f64((const double*)v, n, lows, highs, nans, n_threads);
}

/* Rows per partial sum of check_class_targets' denominator. */
#define FL_TARGET_BLOCK 4096

static int fl_class_targets_entry(const ptrdiff_t* target, ptrdiff_t n, ptrdiff_t n_classes,
                                  ptrdiff_t ignore_index, const double* cw, const double* sw,
                                  int n_threads, ptrdiff_t* first_bad_out,
                                  double* denominator) {
    const ptrdiff_t n_blocks = (n + FL_TARGET_BLOCK - 1) / FL_TARGET_BLOCK;
    *denominator = 0.0;
    *first_bad_out = -1;
    if (n == 0) return 0;
    double* sums = (double*)malloc(sizeof(double) * n_blocks);
    ptrdiff_t* first = (ptrdiff_t*)malloc(sizeof(ptrdiff_t) * n_blocks);
    if (sums == NULL || first == NULL) {
        free(sums);
        free(first);
        return FL_ENOMEM;
    }
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (ptrdiff_t b = 0; b < n_blocks; b++) {
        const ptrdiff_t stop = (b + 1) * FL_TARGET_BLOCK < n ? (b + 1) * FL_TARGET_BLOCK : n;
        double total = 0.0;
        ptrdiff_t bad = -1;
        if (cw == NULL && sw == NULL) {
            /* Without weights: a count and an "any out of range", loops without branches
             * that the compiler vectorises. */
            ptrdiff_t count = 0;
            size_t out_of_range = 0;
            for (ptrdiff_t i = b * FL_TARGET_BLOCK; i < stop; i++) {
                const ptrdiff_t y = target[i];
                count = count + (y != ignore_index);
                out_of_range = out_of_range |
                               (((size_t)y >= (size_t)n_classes) & (y != ignore_index));
            }
            sums[b] = (double)count;
            first[b] = -1;
            if (out_of_range == 0) continue;
        }
        for (ptrdiff_t i = b * FL_TARGET_BLOCK; i < stop; i++) {
            const ptrdiff_t y = target[i];
            if (y == ignore_index) continue;
            if (y < 0 || y >= n_classes) {
                if (bad < 0) bad = i;
                continue;
            }
            double weight = cw != NULL ? cw[y] : 1.0;
            if (sw != NULL) weight = weight * sw[i];
            total = total + weight;
        }
        sums[b] = total;
        first[b] = bad;
    }
    for (ptrdiff_t b = 0; b < n_blocks; b++) {
        *denominator += sums[b];
        if (*first_bad_out < 0 && first[b] >= 0) *first_bad_out = first[b];
    }
    free(sums);
    free(first);
    return 0;
}

const fl_kernels FL_CAT(fl_kernels_, FL_ISA) = {
    FL_STR(FL_ISA),
    fl_rows_entry,
    fl_entropy_entry,
    fl_entropy_from_logits_entry,
    fl_row_loss_entry,
    fl_class_targets_entry,
    fl_elementwise_entry,
    fl_value_range_entry,
};
