/* The row primitives in plain C for one element type: included once per type by
 * engine/rows_scalar.h, with FL_T and FL_SFX(name).
 * (No include guard: it is meant to be included twice.)
 */
FL_INLINE double FL_SFX(fl_max)(const FL_T* x, ptrdiff_t n, double* lowest_out) {
    double best = -INFINITY, low = INFINITY;
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        if (x[i] > best) best = x[i];
        if (x[i] < low) low = x[i];
    }
    if (lowest_out) *lowest_out = low;
    return best;
}
FL_INLINE void FL_SFX(fl_drain)(const fl_drain* d, ptrdiff_t n) {
    const FL_T* src = (const FL_T*)d->src;
    FL_T* dst = (FL_T*)d->dst;
    ptrdiff_t j;
    for (j = 0; j < n; j++)
        dst[j] = j == d->fix_at ? (FL_T)d->fix_value : (FL_T)(src[j] * d->factor);
}
FL_INLINE double FL_SFX(fl_exp_sum)(const FL_T* x, ptrdiff_t n, double sub, double s,
                                     FL_T* out, double* self_dot, double* ones,
                                     double lowest, const fl_drain* drain) {
    double sum = 0.0, dot = 0.0, at_shift = 0.0;
    ptrdiff_t i;
    (void)lowest;                       /* no rounding error term in double */
    for (i = 0; i < n; i++) {
        const double xi = x[i];         /* before a store in place overwrites it */
        const double e = exp((xi - sub) * s);
        if (out) out[i] = (FL_T)e;
        if (xi == sub) at_shift += 1.0;
        else sum += e;
        if (e != 0.0) dot += e * (sub - xi);
    }
    if (self_dot) *self_dot = dot;
    *ones = at_shift;
    if (drain) FL_SFX(fl_drain)(drain, n);
    return sum;
}
FL_INLINE void FL_SFX(fl_scale)(FL_T* e, ptrdiff_t n, double factor) {
    ptrdiff_t i;
    for (i = 0; i < n; i++) e[i] = (FL_T)(e[i] * factor);
}
FL_INLINE void FL_SFX(fl_sub_shift)(const FL_T* x, ptrdiff_t n, double a, double b,
                                     FL_T* out) {
    ptrdiff_t i;
    for (i = 0; i < n; i++) out[i] = (FL_T)(((double)x[i] - a) - b);
}
FL_INLINE double FL_SFX(fl_coef_at)(const FL_T* t, ptrdiff_t j, const fl_coef_spec* c) {
    double a;
    if (c->exp_kind) a = exp((t[j] - c->t_max) * c->t_scale - c->t_shift);
    else a = c->beta + (t ? c->alpha * t[j] : 0.0);
    if (c->class_weight) a *= c->class_weight[j];
    return a;
}
FL_INLINE void FL_SFX(fl_coef_sums)(const FL_T* x, const FL_T* t, ptrdiff_t start,
                                     ptrdiff_t stop, double shift, const fl_coef_spec* c,
                                     double* sum, double* dot, double* entropy) {
    /* eight interleaved accumulators, as the vector builds have lanes: a long row of
     * equal terms summed in one would lose n/2 ulps (2048 of them: 1.6e-14) */
    double s[8] = {0}, d[8] = {0}, h[8] = {0};
    ptrdiff_t j;
    int k;
    for (j = start; j < stop; j++) {
        const double a = FL_SFX(fl_coef_at)(t, j, c);
        k = (int)((j - start) & 7);
        s[k] += a;
        if (a != 0.0) {
            d[k] += a * (shift - x[j]);
            if (c->with_entropy)
                h[k] += a * (c->exp_kind ? (t[j] - c->t_max) * c->t_scale - c->t_shift
                                         : log(a));
        }
    }
    for (k = 4; k > 0; k /= 2)
        for (j = 0; j < k; j++) {
            s[j] += s[j + k];
            d[j] += d[j + k];
            h[j] += h[j + k];
        }
    *sum = s[0];
    *dot = d[0];
    *entropy = h[0];
}
FL_INLINE void FL_SFX(fl_coef_scale)(FL_T* e, const FL_T* t, ptrdiff_t start, ptrdiff_t stop,
                                      double factor, double coef_scale,
                                      const fl_coef_spec* c) {
    ptrdiff_t j;
    for (j = start; j < stop; j++)
        e[j] = (FL_T)(e[j] * factor - coef_scale * FL_SFX(fl_coef_at)(t, j, c));
}
FL_INLINE void FL_SFX(fl_entropy_grad)(FL_T* e, const FL_T* x, ptrdiff_t n, double factor,
                                        double max, double offset) {
    ptrdiff_t j;
    for (j = 0; j < n; j++) {
        const double v = e[j];
        e[j] = (FL_T)(v != 0.0 ? v * factor * (offset + (max - (double)x[j])) : 0.0);
    }
}
