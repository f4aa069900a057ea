/* The elementwise block and the extremes in plain C for one element type: included once
 * per type by losses/elementwise_scalar.h, with FL_T and FL_SFX(name).
 * (No include guard: it is meant to be included twice.)
 */
static double FL_SFX(fl_ew_block)(
    const FL_T* x, const FL_T* y, const FL_T* w, ptrdiff_t w_period, ptrdiff_t w_phase,
    const FL_T* pw, ptrdiff_t pw_period, ptrdiff_t pw_phase, ptrdiff_t n, FL_T* loss_out,
    FL_T* grad_out, double* range_out, const fl_ew_opts* o) {
    double acc[FL_EW_LANES], lo_x = INFINITY, hi_x = -INFINITY, lo_y = INFINITY;
    double hi_y = -INFINITY;
    ptrdiff_t i;
    int k, width;
    for (k = 0; k < FL_EW_LANES; k++) acc[k] = 0.0;
    for (i = 0; i < n; i++) {
        const double xi = x[i], yi = y[i];  /* before a store in place overwrites x[i] */
        const double wi = o->has_weight ? (double)w[w_phase] : 1.0;
        const double vi = o->has_pos_weight ? (double)pw[pw_phase] : 1.0;
        double deriv;
        const double term = wi * fl_ew_term(o, xi, yi, vi, &deriv);
        if (grad_out) grad_out[i] = (FL_T)((wi * deriv) * o->grad_scale);
        if (loss_out) loss_out[i] = (FL_T)(term * o->loss_scale);
        acc[i % FL_EW_LANES] += term;
        if (xi < lo_x) lo_x = xi;
        if (xi > hi_x) hi_x = xi;
        if (yi < lo_y) lo_y = yi;
        if (yi > hi_y) hi_y = yi;
        if (++w_phase == w_period) w_phase = 0;
        if (++pw_phase == pw_period) pw_phase = 0;
    }
    if (range_out) {
        range_out[0] = lo_x, range_out[1] = hi_x, range_out[2] = lo_y;
        range_out[3] = hi_y;
    }
    for (width = FL_EW_LANES / 2; width >= 1; width /= 2)
        for (k = 0; k < width; k++) acc[k] = acc[2 * k] + acc[2 * k + 1];
    return acc[0];
}

static void FL_SFX(fl_ew_range)(const FL_T* v, ptrdiff_t n, double* low, double* high,
                                  double* nan) {
    double l = INFINITY, h = -INFINITY;
    int any_nan = 0;
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        if (v[i] < l) l = v[i];
        if (v[i] > h) h = v[i];
        any_nan |= v[i] != v[i];
    }
    *low = l;
    *high = h;
    *nan = any_nan;
}
