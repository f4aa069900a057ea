/* A row's coefficient terms in double lanes, the same code for float and double rows:
 * included once per element type by engine/rows.h (FL_T, FL_SFX as in rows_t.h).
 *
 * A loss that is a weighted sum of -log softmax(x s)_j has coefficients a_j (the losses
 * say how they are formed: fl_coef_spec); these functions form them FL_ND elements at a
 * time and sum the terms that the loss needs, or subtract them from a gradient.
 * (No include guard: it is meant to be included twice.)
 */

/* a_j of the m (<= FL_ND) elements from j, 0 past them, and log a_j into *log_a where
 * log_a is not NULL (exact for the exponential kind). */
FL_INLINE fl_vd FL_SFX(fl_coef_lanes)(const FL_T* t, ptrdiff_t j, ptrdiff_t m,
                                      const fl_coef_spec* c, fl_vd* log_a) {
    const fl_vd zero = {0};
    fl_vl valid;
    for (int k = 0; k < FL_ND; k++) valid[k] = k < m ? -1 : 0;
    fl_vd a;
    if (c->exp_kind) {
        const fl_vd arg = (FL_SFX(fl_load_d)(t + j, m) - c->t_max) * c->t_scale - c->t_shift;
        a = fl_exp_d(arg);
        if (log_a) *log_a = arg;
    } else {
        a = zero + c->beta;
        if (t) a = fl_fma_d(zero + c->alpha, FL_SFX(fl_load_d)(t + j, m), a);
    }
    if (c->class_weight) a = a * fl_load_d_f64(c->class_weight + j, m);
    a = fl_select_d(valid, a, zero);
    /* log of a normal a is all that counts: a 0 or subnormal a_j's a_j log a_j is 0 or
     * below 1e-305, whatever log gives */
    if (log_a && !c->exp_kind) *log_a = fl_log_normal_d(a);
    return a;
}

/* a_j of one element. */
FL_INLINE double FL_SFX(fl_coef_at)(const FL_T* t, ptrdiff_t j, const fl_coef_spec* c) {
    return FL_SFX(fl_coef_lanes)(t, j, 1, c, NULL)[0];
}

/* The terms of the m (<= FL_ND) elements from j into the accumulators s, d, h. */
FL_INLINE void FL_SFX(fl_coef_terms)(const FL_T* x, const FL_T* t, ptrdiff_t j, ptrdiff_t m,
                                     double shift, const fl_coef_spec* c, fl_vd* s,
                                     fl_vd* d, fl_vd* h) {
    const fl_vd zero = {0};
    fl_vd log_a;
    const fl_vd a = FL_SFX(fl_coef_lanes)(t, j, m, c, c->with_entropy ? &log_a : NULL);
    const fl_vl used = a != zero;
    *s += a;
    *d += fl_select_d(used, a * (shift - FL_SFX(fl_load_d)(x + j, m)), zero);
    if (c->with_entropy) *h += fl_select_d(used, a * log_a, zero);
}

/* Over j in [start, stop): sum_j a_j, sum_j a_j (shift - x_j) and (with_entropy)
 * sum_j a_j log a_j; a zero a_j adds 0, even against x_j = -inf. Four interleaved
 * accumulators, added in an order set by the positions alone. */
FL_INLINE void FL_SFX(fl_coef_sums_wide)(const FL_T* x, const FL_T* t, ptrdiff_t start,
                                         ptrdiff_t stop, double shift, const fl_coef_spec* c,
                                         double* sum, double* dot, double* entropy) {
    fl_vd s[4] = {{0}}, d[4] = {{0}}, h[4] = {{0}};
    ptrdiff_t j = start;
    for (; j + 4 * FL_ND <= stop; j += 4 * FL_ND)       /* whole vectors: no masks */
        for (int q = 0; q < 4; q++)
            FL_SFX(fl_coef_terms)(x, t, j + q * FL_ND, FL_ND, shift, c, &s[q], &d[q], &h[q]);
    for (int q = 0; j < stop; j += FL_ND, q++)
        FL_SFX(fl_coef_terms)(x, t, j, stop - j, shift, c, &s[q], &d[q], &h[q]);
    *sum = fl_hsum((s[0] + s[1]) + (s[2] + s[3]));
    *dot = fl_hsum((d[0] + d[1]) + (d[2] + d[3]));
    *entropy = fl_hsum((h[0] + h[1]) + (h[2] + h[3]));
}

/* e_j <- e_j factor - coef_scale a_j over j in [start, stop), in double. */
FL_INLINE void FL_SFX(fl_coef_scale_lanes)(FL_T* e, const FL_T* t, ptrdiff_t j, ptrdiff_t m,
                                           double factor, double coef_scale,
                                           const fl_coef_spec* c) {
    const fl_vd a = FL_SFX(fl_coef_lanes)(t, j, m, c, NULL);
    const fl_vd zero = {0};
    FL_SFX(fl_store_d)(e + j, fl_fma_d(FL_SFX(fl_load_d)(e + j, m), zero + factor,
                                       zero - coef_scale * a), m);
}
FL_INLINE void FL_SFX(fl_coef_scale_wide)(FL_T* e, const FL_T* t, ptrdiff_t start,
                                          ptrdiff_t stop, double factor, double coef_scale,
                                          const fl_coef_spec* c) {
    ptrdiff_t j = start;
    for (; j + FL_ND <= stop; j += FL_ND)
        FL_SFX(fl_coef_scale_lanes)(e, t, j, FL_ND, factor, coef_scale, c);
    if (j < stop) FL_SFX(fl_coef_scale_lanes)(e, t, j, stop - j, factor, coef_scale, c);
}

/* The entropy gradient from stored exponentials and the row x beside them: e_j <- e_j
 * factor (offset + (max - x_j)), 0 where e_j is 0 (x_j = -inf). */
FL_INLINE void FL_SFX(fl_entropy_grad_lanes)(FL_T* e, const FL_T* x, ptrdiff_t m,
                                             double factor, double max, double offset) {
    const fl_vd zero = {0};
    const fl_vd v = FL_SFX(fl_load_d)(e, m);
    const fl_vd g = v * factor * (offset + (max - FL_SFX(fl_load_d)(x, m)));
    FL_SFX(fl_store_d)(e, fl_select_d(v != zero, g, zero), m);
}
FL_INLINE void FL_SFX(fl_entropy_grad_wide)(FL_T* e, const FL_T* x, ptrdiff_t n,
                                            double factor, double max, double offset) {
    ptrdiff_t j = 0;
    for (; j + FL_ND <= n; j += FL_ND)
        FL_SFX(fl_entropy_grad_lanes)(e + j, x + j, FL_ND, factor, max, offset);
    if (j < n) FL_SFX(fl_entropy_grad_lanes)(e + j, x + j, n - j, factor, max, offset);
}
