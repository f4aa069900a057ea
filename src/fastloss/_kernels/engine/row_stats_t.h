/* The row engine for one element type: included once per type by engine/row_stats.h, with
 * FL_T (float or double), FL_SFX(name) (name##_f32 or name##_f64) and FL_IS_F32.
 * (No include guard: it is meant to be included twice.)
 */

/* Max of x[0:n], and for float rows the least element into *lowest (it lets the float
 * exponentials take a cheaper exact subtraction), else -inf. */
FL_INLINE double FL_SFX(fl_chunk_max)(const FL_T* x, ptrdiff_t n, double* lowest) {
#if FL_IS_F32
    return fl_max_f32(x, n, lowest);
#else
    *lowest = -INFINITY;
    return fl_max_f64(x, n, NULL);
#endif
}

/* The coefficients' sums over x[start:stop] (coefs_t.h; float lanes where they serve). */
FL_INLINE void FL_SFX(fl_coef_chunk)(const FL_T* x, const FL_T* t, const fl_coef_spec* c,
                                     ptrdiff_t start, ptrdiff_t stop, double shift,
                                     double* coef_sum, double* coef_dot, double* coef_entropy) {
    FL_SFX(fl_coef_sums)(x, t, start, stop, shift, c, coef_sum, coef_dot, coef_entropy);
}

/* Chunk k, [start, stop), of a waiting row (exp: its exponentials), as fl_drain. */
FL_INLINE fl_drain FL_SFX(fl_chunk_drain)(const fl_row_drain* row, const FL_T* exp,
                                          ptrdiff_t k, ptrdiff_t start, ptrdiff_t stop) {
    fl_drain d;
    d.src = exp + start;
    d.dst = (FL_T*)row->grad + start;
    d.factor = fl_chunk_factor(row->shift, k, row->st, row->x_scale) * row->scale;
    d.fix_at = start <= row->fix_at && row->fix_at < stop ? row->fix_at - start : -1;
    d.fix_value = row->fix_value;
    return d;
}

/* The row's max and sums (fl_row_stats), storing the exponentials in exp_out unless it is
 * NULL (exp_out may be x; shift_out, one double per chunk, gets the chunk shifts), and
 * (prev unless NULL) another row of n drained to its gradient chunk by chunk, inside the
 * loops that compute these exponentials (streamed rows). t is the target row of the
 * coefficients (may be NULL); spec NULL means s = 1, no coefficients, no self dot.
 *
 * Storing or not, the sums are formed by the same operations in the same order, so a loss
 * is the same bits whether or not a gradient is computed. A term whose coefficient is 0
 * contributes 0, even where x_j is -inf (0 log 0 = 0). */
static inline fl_row_stats FL_SFX(fl_row_stats)(const FL_T* x, ptrdiff_t n, FL_T* exp_out,
                                                double* shift_out, const FL_T* t,
                                                const fl_row_spec* spec,
                                                const fl_row_drain* prev) {
    fl_row_stats st = {-INFINITY, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    const double s = spec == NULL ? 1.0 : spec->x_scale;
    const int with_coefs = spec != NULL && spec->with_coefs;
    const int with_self_dot = spec != NULL && spec->self_dot;
    fl_drain drain;
    ptrdiff_t start = 0, k = 0;
    while (start < n) {
        const ptrdiff_t stop = start + FL_ROW_CHUNK < n ? start + FL_ROW_CHUNK : n;
        double lowest, ccount, cdot, cent, cones, csd = 0.0;
        const double shift = FL_SFX(fl_chunk_max)(x + start, stop - start, &lowest);
        /* A chunk of -inf (and NaN) has no shift: exp(x - 0) gives its 0 (or NaN) terms. */
        const double sub = shift != -INFINITY ? shift : 0.0;
        if (with_coefs) {
            /* Before the exponentials, which may overwrite x in place. */
            FL_SFX(fl_coef_chunk)(x, t, &spec->coefs, start, stop, sub, &ccount, &cdot, &cent);
            /* Terms so far were relative to st.max; rebase them when the max grows. */
            if (shift > st.max && st.coef_sum != 0.0)
                st.coef_dot = st.coef_dot + (shift - st.max) * st.coef_sum;
            if (shift != -INFINITY && shift < st.max)
                cdot = cdot + (st.max - shift) * ccount;
            st.coef_dot = st.coef_dot + cdot;
            st.coef_sum = st.coef_sum + ccount;
            st.coef_entropy = st.coef_entropy + cent;
        }
        if (prev != NULL) drain = FL_SFX(fl_chunk_drain)(prev, (const FL_T*)prev->exp, k, start, stop);
        double crest = FL_SFX(fl_exp_sum)(x + start, stop - start, sub, s,
                                          exp_out != NULL ? exp_out + start : NULL,
                                          with_self_dot ? &csd : NULL, &cones, lowest,
                                          prev != NULL ? &drain : NULL);
        if (shift == INFINITY) crest = NAN;     /* exp(inf - inf): no count makes it finite */
        const double csum = cones + crest;
        if (exp_out != NULL) shift_out[k] = shift;
        k++;
        if (shift == -INFINITY) {
            st.rest = st.rest + crest;          /* adds 0, or NaN */
            st.self_dot = st.self_dot + csd;
        } else if (shift > st.max) {
            /* exp(-inf) = 0 for the first chunk, without the call */
            const double rescale = st.max != -INFINITY ? fl_exp_1((st.max - shift) * s) : 0.0;
            const double total = st.ones + st.rest;
            if (with_self_dot && total != 0.0)
                st.self_dot = rescale * (st.self_dot + (shift - st.max) * total);
            st.self_dot = st.self_dot + csd;
            st.rest = total * rescale + crest;  /* the old terms are below 1 now */
            st.ones = cones;
            st.max = shift;
        } else if (shift == st.max) {
            st.ones = st.ones + cones;
            st.rest = st.rest + crest;
            st.self_dot = st.self_dot + csd;
        } else {
            const double rescale = fl_exp_1((shift - st.max) * s);
            st.rest = st.rest + csum * rescale;
            if (with_self_dot) st.self_dot = st.self_dot + rescale * (csd + (st.max - shift) * csum);
        }
        start = stop;
    }
    st.sumexp = st.ones + st.rest;
    return st;
}

/* fl_row_stats_T and log S of a batch of rows of one chunk each (n <= FL_ROW_CHUNK),
 * phase by phase: the rows are independent, so their latency chains (max, exp sum, log1p)
 * overlap, and log S goes a vector of rows at a time. The same operations as
 * fl_row_stats_T on one chunk: the same bits. Per row r: maxs[r] (the shift), sums[r] = S,
 * log_sums[r] = log S, self_dots[r] (unless self_dots is NULL); with coefs (NULL: none)
 * coef_sums, coef_dots, coef_entropies from the target rows t (n_rows x n); t_maxs and
 * t_shifts (NULL: coefs's) give each row's teacher max and log-sum. */
static inline void FL_SFX(fl_batch_row_stats)(
    const FL_T* x, ptrdiff_t n_rows, ptrdiff_t n, double s, FL_T* exp_out, double* maxs,
    double* sums, double* log_sums, double* self_dots, const fl_coef_spec* coefs,
    const FL_T* t, const double* t_maxs, const double* t_shifts, double* coef_sums,
    double* coef_dots, double* coef_entropies) {
    for (ptrdiff_t r = 0; r < n_rows; r++) {
        const FL_T* row = x + r * n;
        double lowest, ones, rest, self_dot = 0.0;
        const double shift = FL_SFX(fl_chunk_max)(row, n, &lowest);
        const double sub = shift != -INFINITY ? shift : 0.0;
        if (coefs != NULL) {
            /* Before the exponentials, which may overwrite x in place. */
            fl_coef_spec row_coefs = *coefs;
            if (t_maxs != NULL) {
                row_coefs.t_max = t_maxs[r];
                row_coefs.t_shift = t_shifts[r];
            }
            FL_SFX(fl_coef_chunk)(row, t != NULL ? t + r * n : NULL, &row_coefs, 0, n, sub,
                                  &coef_sums[r], &coef_dots[r], &coef_entropies[r]);
        }
        FL_T* out = exp_out != NULL ? exp_out + r * n : NULL;
        /* A literal NULL where there is no self dot: the sum's code without it. */
        if (self_dots == NULL)
            rest = FL_SFX(fl_exp_sum)(row, n, sub, s, out, NULL, &ones, lowest, NULL);
        else
            rest = FL_SFX(fl_exp_sum)(row, n, sub, s, out, &self_dot, &ones, lowest, NULL);
        if (shift == INFINITY) rest = NAN;      /* exp(inf - inf): no count makes it finite */
        if (shift == -INFINITY) ones = 0.0;     /* (fl_row_stats keeps no count of a -inf chunk) */
        maxs[r] = shift;
        sums[r] = ones + rest;
        log_sums[r] = (ones - 1.0) + rest;
        if (self_dots != NULL) self_dots[r] = self_dot;
    }
    fl_log1p_n(log_sums, n_rows);
}

/* A waiting row's whole second pass (the last of a thread's streamed rows). */
static inline void FL_SFX(fl_drain_row)(const fl_row_drain* row, const FL_T* exp, ptrdiff_t n) {
    ptrdiff_t start = 0, k = 0;
    while (start < n) {
        const ptrdiff_t stop = start + FL_ROW_CHUNK < n ? start + FL_ROW_CHUNK : n;
        const fl_drain d = FL_SFX(fl_chunk_drain)(row, exp, k, start, stop);
        FL_SFX(fl_drain)(&d, stop - start);
        k++;
        start = stop;
    }
}

/* Second pass: e_j <- scale softmax(x s)_j - coef_scale a_j, chunk by chunk, from what
 * fl_row_stats_T stored (e, shift). t and spec as in fl_row_stats_T. */
static inline void FL_SFX(fl_scale_stored_exp)(FL_T* e, ptrdiff_t n, const double* shift,
                                               fl_row_stats st, double scale, const FL_T* t,
                                               const fl_row_spec* spec, double coef_scale) {
    const double s = spec == NULL ? 1.0 : spec->x_scale;
    const int with_coefs = spec != NULL && spec->with_coefs;
    ptrdiff_t start = 0, k = 0;
    while (start < n) {
        const ptrdiff_t stop = start + FL_ROW_CHUNK < n ? start + FL_ROW_CHUNK : n;
        const double factor = fl_chunk_factor(shift, k, st, s) * scale;
        if (with_coefs) FL_SFX(fl_coef_scale)(e, t, start, stop, factor, coef_scale, &spec->coefs);
        else FL_SFX(fl_scale)(e + start, stop - start, factor);
        k++;
        start = stop;
    }
}

/* Both passes of a row: scale softmax(x) into out (may alias x), reading x once. */
static inline fl_row_stats FL_SFX(fl_scaled_softmax_row)(const FL_T* x, ptrdiff_t n, FL_T* out,
                                                         double* shift, double scale) {
    const fl_row_stats st = FL_SFX(fl_row_stats)(x, n, out, shift, NULL, NULL, NULL);
    FL_SFX(fl_scale_stored_exp)(out, n, shift, st, scale, NULL, NULL, 0.0);
    return st;
}

/* Second pass for H(softmax(x)): e_j <- scale q_j (lse - x_j - H), with lse - x_j =
 * (max - x_j) + log S, max - x_j exact for nearby values. A class of probability 0 gets
 * gradient 0. */
static inline void FL_SFX(fl_scale_entropy_grad)(FL_T* e, const FL_T* x, ptrdiff_t n,
                                                 const double* shift, fl_row_stats st,
                                                 double log_sum, double entropy, double scale) {
    const double offset = log_sum - entropy;
    ptrdiff_t start = 0, k = 0;
    while (start < n) {
        const ptrdiff_t stop = start + FL_ROW_CHUNK < n ? start + FL_ROW_CHUNK : n;
        const double factor = fl_chunk_factor(shift, k, st, 1.0) * scale;
        FL_SFX(fl_entropy_grad)(e + start, x + start, stop - start, factor, st.max, offset);
        k++;
        start = stop;
    }
}

/* A row's logsumexp lse = max + log S (S = sumexp, relative to max; s = 1), for a float
 * row recomputed with its exponentials in double lanes (fl_lse_wide_f32) where the float
 * exponentials' error, 2^-22 (S - 1) / S of log S at most, may exceed two float ulps of
 * lse: where max < 0 cancels log S. Elsewhere lse >= log S >= (S - 1) / S and the error
 * stays within two ulps. x must still hold the row. */
static inline double FL_SFX(fl_refined_lse)(const FL_T* x, ptrdiff_t n, double max,
                                            double sumexp, double lse) {
#if FL_IS_F32
    if (max < 0.0 && max > -INFINITY && (sumexp - 1.0) > fabs(lse) * sumexp)
        return fl_lse_wide_f32(x, n, max);
#else
    (void)x, (void)n, (void)max, (void)sumexp;
#endif
    return lse;
}
