/* Blocks of rows of few classes for one element type: included by engine/blocks.h once
 * per type and per compilation of the block kernels (FL_BLK, FL_UNROLL: see there), with
 * FL_T (float or double), FL_VT its vector, FL_IT the integer vector of its lane width,
 * FL_L its lanes (rows per block), FL_SEL its select, FL_VMAX its NaN-skipping max and
 * FL_SFX(name) (name##_f32 or name##_f64). The entry points (FL_BLOCK_ENTRIES) come
 * with the second compilation. (No include guard: it is meant to be included again.)
 */

/* The block of `rows` rows at x into class vectors t[0:C]. */
FL_INLINE void FL_BLK(FL_SFX(fl_small_load))(const FL_T* x, ptrdiff_t rows, const int c,
                                             const FL_SFX(fl_small_plan)* p, FL_VT* t) {
    const ptrdiff_t n = rows * c;
    FL_VT v[FL_SMALL_C];
    FL_UNROLL for (int i = 0; i < c; i++) {
        const ptrdiff_t m = n - i * FL_L;
        if (m >= FL_L) memcpy(&v[i], x + i * FL_L, sizeof v[i]);
        else v[i] = FL_SFX(fl_load_tail)(x + i * FL_L, m > 0 ? (int)m : 0);
    }
    FL_UNROLL for (int j = 0; j < c; j++) {
        FL_VT col = v[0];
        FL_UNROLL for (int a = 0; 2 * a < c; a++) {
            const FL_VT pair = FL_SHUFFLE2(v[2 * a], v[2 * a + 1 < c ? 2 * a + 1 : 2 * a],
                                        p->to_cols[j][a]);
            col = FL_SEL(p->cols_take[j][a], pair, col);
        }
        t[j] = col;
    }
}

/* Class vectors t[0:C] back into the block of `rows` rows at out. */
FL_INLINE void FL_BLK(FL_SFX(fl_small_store))(const FL_VT* t, ptrdiff_t rows, const int c,
                                              const FL_SFX(fl_small_plan)* p, FL_T* out) {
    const ptrdiff_t n = rows * c;
    for (int i = 0; i < c && i * FL_L < n; i++) {
        FL_VT v = t[0];
        FL_UNROLL for (int b = 0; 2 * b < c; b++) {
            const FL_VT pair = FL_SHUFFLE2(t[2 * b], t[2 * b + 1 < c ? 2 * b + 1 : 2 * b],
                                        p->to_rows[i][b]);
            v = FL_SEL(p->rows_take[i][b], pair, v);
        }
        const ptrdiff_t m = n - i * FL_L;
        if (m >= FL_L) memcpy(out + i * FL_L, &v, sizeof v);
        else FL_SFX(fl_store_tail)(out + i * FL_L, v, (int)m);
    }
}

/* The statistics of the rows of nk blocks, t[k][0:C] for k < nk: their max m[k] (the
 * shift; 0 where a row is all -inf), t[k][j] <- exp(t[k][j] - m[k]) where keep_exp,
 * S - 1 into rest[k] and log S into log_sum[k], for S = sum_j exp(t_kj - m_k). Each
 * step runs over the blocks in turn: their chains of dependent steps interleave. */
FL_INLINE void FL_BLK(FL_SFX(fl_small_stats_k))(FL_VT (*t)[FL_SMALL_C], const int nk, int c,
                                                int keep_exp, FL_VT* shift, FL_VT* rest,
                                                FL_VT* log_sum) {
    const FL_VT zero = {0};
    FL_VT m[FL_SMALL_K], rest0[FL_SMALL_K], rest1[FL_SMALL_K];
    FL_IT ones[FL_SMALL_K];
    FL_UNROLL for (int k = 0; k < nk; k++) m[k] = zero - INFINITY;
    FL_UNROLL for (int j = 0; j < c; j++)
        FL_UNROLL for (int k = 0; k < nk; k++) m[k] = FL_VMAX(t[k][j], m[k]);
    FL_UNROLL for (int k = 0; k < nk; k++) {
        m[k] = FL_SEL(m[k] == zero - INFINITY, zero, m[k]);
        rest0[k] = rest1[k] = zero;
        ones[k] = (FL_IT){0};
    }
    FL_UNROLL for (int j = 0; j < c; j++)
        FL_UNROLL for (int k = 0; k < nk; k++) {
            FL_IT at_max;
            const FL_VT e = FL_SFX(fl_small_exp)(t[k][j], m[k], &at_max);
            ones[k] -= at_max;
            const FL_VT e_rest = FL_SEL(at_max, zero, e);
            if (j & 1) rest1[k] += e_rest;
            else rest0[k] += e_rest;
            if (keep_exp) t[k][j] = e;
        }
    FL_UNROLL for (int k = 0; k < nk; k++) {
        shift[k] = m[k];
        /* S - 1 = (ones - 1) + the others: exact while the others are small */
        rest[k] = (__builtin_convertvector(ones[k], FL_VT) - 1) + (rest0[k] + rest1[k]);
        rest[k] = FL_SEL(m[k] == zero + INFINITY, zero + NAN, rest[k]);  /* exp(inf - inf) */
    }
    FL_UNROLL for (int k = 0; k < nk; k++) log_sum[k] = FL_SFX(fl_log1p)(rest[k]);
}

/* The same for one block t[0:C]; returns log S. */
FL_INLINE FL_VT FL_BLK(FL_SFX(fl_small_stats))(FL_VT* t, int c, int keep_exp, FL_VT* shift,
                                               FL_VT* rest) {
    FL_VT log_sum;
    FL_BLK(FL_SFX(fl_small_stats_k))((FL_VT(*)[FL_SMALL_C])t, 1, c, keep_exp, shift, rest,
                              &log_sum);
    return log_sum;
}

/* The block of `rows` rows at x into class vectors t, a copy of them (the scores) into
 * scores, and their statistics as fl_small_stats_* forms them; returns log S. */
FL_INLINE FL_VT FL_BLK(FL_SFX(fl_small_load_stats))(const FL_T* x, ptrdiff_t rows, const int c,
                                                    const FL_SFX(fl_small_plan)* p, int keep_exp,
                                                    FL_VT* t, FL_VT* scores, FL_VT* shift, FL_VT* rest) {
    FL_BLK(FL_SFX(fl_small_load))(x, rows, c, p, t);
    FL_UNROLL for (int j = 0; j < c; j++) scores[j] = t[j];
    return FL_BLK(FL_SFX(fl_small_stats))(t, c, keep_exp, shift, rest);
}

FL_INLINE void FL_BLK(FL_SFX(fl_small_softmax_c))(const FL_T* x, ptrdiff_t rows, const int c,
                                                  const FL_SFX(fl_small_plan)* p, FL_T* out) {
    FL_VT t[FL_SMALL_C], m, rest;
    FL_BLK(FL_SFX(fl_small_load))(x, rows, c, p, t);
    FL_BLK(FL_SFX(fl_small_stats))(t, c, 1, &m, &rest);
    const FL_VT inv_sum = 1 / (rest + 1);
    FL_UNROLL for (int j = 0; j < c; j++) t[j] = t[j] * inv_sum;
    FL_BLK(FL_SFX(fl_small_store))(t, rows, c, p, out);
}

FL_INLINE void FL_BLK(FL_SFX(fl_small_log_softmax_c))(const FL_T* x, ptrdiff_t rows, const int c,
                                                      const FL_SFX(fl_small_plan)* p, FL_T* out) {
    FL_VT t[FL_SMALL_C], x_minus[FL_SMALL_C], m, rest;
    const FL_VT log_sum =
        FL_BLK(FL_SFX(fl_small_load_stats))(x, rows, c, p, 0, t, x_minus, &m, &rest);
    FL_UNROLL for (int j = 0; j < c; j++) x_minus[j] = FL_SFX(fl_sub_exact)(x_minus[j], m, log_sum);
    FL_BLK(FL_SFX(fl_small_store))(x_minus, rows, c, p, out);
}

/* logsumexp of the rows, as double, into out[0:rows]. */
FL_INLINE void FL_BLK(FL_SFX(fl_small_logsumexp_c))(const FL_T* x, ptrdiff_t rows, const int c,
                                                    const FL_SFX(fl_small_plan)* p,
                                                    double* out) {
    FL_VT t[FL_SMALL_C], m, rest;
    FL_BLK(FL_SFX(fl_small_load))(x, rows, c, p, t);
    const FL_VT log_sum = FL_BLK(FL_SFX(fl_small_stats))(t, c, 0, &m, &rest);
    FL_SFX(fl_small_put)(out, m + log_sum, rows);
}

#if FL_BLOCK_ENTRIES
/* The entry points: the class count a compile-time constant where it is a common one, so
 * that the compiler keeps the class vectors in registers. */
static inline void FL_SFX(fl_small_softmax)(const FL_T* x, ptrdiff_t rows,
                                             const FL_SFX(fl_small_plan)* p, FL_T* out) {
    FL_SMALL_DISPATCH(p->n_classes, FL_SFX(fl_small_softmax_c), x, rows, C_, p,
                      out);
}
static inline void FL_SFX(fl_small_log_softmax)(const FL_T* x, ptrdiff_t rows,
                                                 const FL_SFX(fl_small_plan)* p,
                                                 FL_T* out) {
    FL_SMALL_DISPATCH(p->n_classes, FL_SFX(fl_small_log_softmax_c), x, rows, C_, p,
                      out);
}
static inline void FL_SFX(fl_small_logsumexp)(const FL_T* x, ptrdiff_t rows,
                                               const FL_SFX(fl_small_plan)* p,
                                               double* out) {
    FL_SMALL_DISPATCH(p->n_classes, FL_SFX(fl_small_logsumexp_c), x, rows, C_, p,
                      out);
}
#endif
