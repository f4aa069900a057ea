/* The statistics of a row of C scores, and its second pass: the row engine's core.
 *
 * A row is processed in chunks of FL_ROW_CHUNK elements so that it is read from memory
 * once: each chunk is scanned for its max and then exponentiated while it is still in L1
 * (two passes over the chunk, one over memory). The chunk sums are merged into a running
 * (max, sum of exponentials) pair, the online softmax of Milakov and Gimelshein (2018),
 * which keeps exp from overflowing without a separate max pass over the row. Every other
 * sum over the row is kept relative to the running max in the same way.
 *
 * The scores of a row are x_j s with s = fl_row_spec.x_scale > 0 (1 / temperature): the max
 * and the shifts are in units of x, the exponentials are exp((x_j - shift) s). Every
 * formula here accumulates in double, whatever the storage type.
 */
#ifndef FL_ENGINE_ROW_STATS_H
#define FL_ENGINE_ROW_STATS_H

#include <stdlib.h>

#include "../simd/features.h"
#if FL_VECTORS
#include "rows.h"
#else
#include "rows_scalar.h"
#endif

#include "chunks.h"

typedef struct {
    double max;           /* the shift: max of the finite-or-+inf x, -inf if none */
    double sumexp;        /* S = sum_j exp((x_j - max) s) = ones + rest */
    double ones;          /* the count of terms at the max (each exactly 1) */
    double rest;          /* the sum of the others: S - 1 = (ones - 1) + rest, exactly */
    double coef_sum;      /* A = sum_j a_j (0 without coefficients) */
    double coef_dot;      /* sum_j a_j (max - x_j) (0 without coefficients) */
    double coef_entropy;  /* sum_j a_j log a_j (0 unless the coefficients' with_entropy) */
    double self_dot;      /* sum_j exp((x_j - max) s) (max - x_j) (0 unless self_dot) */
} fl_row_stats;

/* What the statistics of a row include. */
typedef struct {
    fl_coef_spec coefs;   /* the coefficients a_j, from a target row passed beside */
    int with_coefs;       /* else no coefficients */
    double x_scale;       /* s: the scores are x s */
    int self_dot;         /* also sum_j exp((x_j - max) s) (max - x_j): softmax's entropy */
} fl_row_spec;

/* A row whose second pass waits for the next row's first (streamed rows): what
 * fl_scale_stored_exp_T and the target's fix would do to it. */
typedef struct {
    const void* exp;      /* its stored exponentials (NULL: no row waits) */
    void* grad;           /* its gradient row, aligned as exp modulo 64 bytes */
    const double* shift;  /* its chunk shifts */
    fl_row_stats st;
    double x_scale;
    double scale;
    ptrdiff_t fix_at;     /* the index whose gradient is fix_value (the target), or -1 */
    double fix_value;
} fl_row_drain;

/* Chunks a row of n_cols is split into (at least 1). */
static inline ptrdiff_t fl_row_chunks(ptrdiff_t n_cols) {
    return n_cols <= FL_ROW_CHUNK ? 1 : (n_cols + FL_ROW_CHUNK - 1) / FL_ROW_CHUNK;
}

/* Doubles between two threads' scratch: n_chunks rounded up to a 64-byte line, plus a line
 * of gap, so that no two threads ever write the same cache line. */
static inline ptrdiff_t fl_scratch_stride(ptrdiff_t n) { return (n + 7) / 8 * 8 + 8; }

/* log S, as log1p(S - 1) with S - 1 = (ones - 1) + rest exact: a small loss log S keeps
 * its relative accuracy, which log(S) would round away. */
static inline double fl_stats_log_sum(fl_row_stats st) {
    return fl_log1p_1((st.ones - 1.0) + st.rest);
}

/* log(sum_j exp(x_j s)) of the row. */
static inline double fl_stats_lse(fl_row_stats st, double s) {
    return st.max * s + fl_stats_log_sum(st);
}

/* The fl_row_stats that the second passes use, of a row of one chunk, from a batch's max
 * and S; the sums they do not use are NaN. */
static inline fl_row_stats fl_chunk_stats(double max, double sumexp) {
    fl_row_stats st = {max, sumexp, NAN, NAN, NAN, NAN, NAN, NAN};
    return st;
}

/* exp((shift_k - max) s) / S: turns chunk k's stored exponentials into softmax.
 * exp(-inf - max) = 0 zeroes a masked chunk; the chunk of the max needs no exp. */
static inline double fl_chunk_factor(const double* shift, ptrdiff_t k, fl_row_stats st,
                                     double s) {
    if (shift[k] == st.max) return 1.0 / st.sumexp;
    return fl_exp_1((shift[k] - st.max) * s) / st.sumexp;
}

/* H(softmax(x)) = lse - sum_j q_j x_j = log S + self_dot / S (statistics with self_dot,
 * s = 1). */
static inline double fl_softmax_entropy(fl_row_stats st) {
    return fl_stats_log_sum(st) + st.self_dot / st.sumexp;
}

/* The per-type engine (row_stats_t.h). */
#define FL_TEMPLATE "engine/row_stats_t.h"
#include "../each_type.h"
#undef FL_TEMPLATE

#endif
