/* The structs the row primitives take, one declaration for the vector (engine/rows.h) and
 * the plain-C (engine/rows_scalar.h) builds. */
#ifndef FL_ENGINE_ROW_TYPES_H
#define FL_ENGINE_ROW_TYPES_H

#include <stddef.h>

/* Streamed rows (gradients beyond the caches): a row's second pass runs
 * inside the next row's first. For each group of exponentials the first pass computes, a
 * group of the previous row's (kept in per-thread scratch) is rescaled and sent to its
 * gradient by streaming stores, so that memory takes the gradient while the core computes
 * exp, and the gradient's lines are never read for ownership. One chunk of that row: */
typedef struct {
    const void* src;    /* its exponentials, aligned as dst modulo 64 bytes */
    void* dst;          /* its gradient */
    double factor;      /* their factor (the engine's chunk factor: the same products) */
    ptrdiff_t fix_at;   /* an index whose gradient is fix_value instead, or -1 */
    double fix_value;
} fl_drain;

/* ---- the coefficient terms of a row (soft targets, smoothing, distillation) ----
 * A loss that is a weighted sum of -log softmax(x s)_j has coefficients a_j from a target
 * row t (NULL: none) and class weights w (NULL: 1): a_j = (alpha t_j + beta) w_j, or
 * a_j = exp((t_j - t_max) t_scale - t_shift) w_j for teacher log-probabilities or logits
 * (t_j - t_max exact for nearby values: 1e4 logits lose nothing). They are computed in
 * double lanes (coefs_t.h), the linear ones of float rows in float lanes
 * (fl_coef_in_float). */
typedef struct {
    const double* class_weight;
    double alpha, beta, t_max, t_scale, t_shift;
    int exp_kind;                   /* a_j = exp((t_j - t_max) t_scale - t_shift) w_j */
    int with_entropy;               /* also sum_j a_j log a_j */
    int weights_fit_float;          /* each w_j 0 or within [2^-100, 2^64] */
} fl_coef_spec;

#endif
