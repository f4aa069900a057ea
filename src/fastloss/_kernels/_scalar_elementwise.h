/* The elementwise block kernel of _simd_elementwise.h in plain C, for compilers without
 * GCC/Clang vector extensions (MSVC), or with FASTLOSS_SCALAR defined (to test this file
 * with GCC), as _scalar_rows.h is for the row kernels.
 *
 * Same functions, same contracts (the block sum in the same order of 16 lanes, the same
 * extremes, the same special values), one element at a time in double with libm's exp,
 * log and log1p; slower, and not bit-identical to the SIMD builds (within their
 * tolerances). Included by _simd_elementwise.h, which defines fl_ew_opts and the loss
 * kinds first.
 */
#ifndef FASTLOSS_SCALAR_ELEMENTWISE_H
#define FASTLOSS_SCALAR_ELEMENTWISE_H

#include <math.h>
#include <stddef.h>

#define FL_EW_LANES 16          /* the lanes of the block sum, as FL_EW_GROUP */
#define FL_EW_PROB_EPS 9.999999960041972e-13        /* PyTorch's 1e-12f, BCE's floor */

/* max(v, -100) that keeps NaN, as PyTorch's std::max. */
static __inline double fl_ew_clamp_log(double v) {
    return v < -100.0 ? -100.0 : v;
}

/* The term of one element and its derivative (unweighted). */
static __inline double fl_ew_term(const fl_ew_opts* o, double x, double y, double v,
                                  double* deriv) {
    double term;
    if (o->kind == FL_EW_BCE) {
        const double log_p = fl_ew_clamp_log(log(x));
        const double log_q = fl_ew_clamp_log(log1p(-x));
        const double den = x * (1.0 - x);
        *deriv = (x - y) / (den < FL_EW_PROB_EPS ? FL_EW_PROB_EPS : den);
        term = (y - 1.0) * log_q - y * log_p;
    } else if (o->kind == FL_EW_LOGITS) {
        const double t = o->alpha * y + o->beta;
        const double e = exp(-fabs(x));
        const double q = e / (1.0 + e);
        const double coef = o->has_pos_weight ? 1.0 + (v - 1.0) * t : 1.0;
        const double pt = o->has_pos_weight ? v * t : t;
        if (x >= 0.0) {
            term = (1.0 - t) * x;
            *deriv = (1.0 - t) - coef * q;
        } else {
            term = -pt * x;
            *deriv = coef * q - pt;
        }
        term += coef * log1p(e);
    } else {
        const double p = o->kind == FL_EW_KL ? y : exp(y);
        const double log_p = o->kind == FL_EW_KL ? log(y) : y;
        term = p == 0.0 ? (x != x ? x : 0.0) : p * (log_p - x);
        *deriv = -p;
    }
    return term;
}

#define FL_EW_DEFINE_SCALAR(SUFFIX, T)                                                    \
static double fl_ew_block_##SUFFIX(                                                       \
    const T* x, const T* y, const T* w, ptrdiff_t w_period, ptrdiff_t w_phase,            \
    const T* pw, ptrdiff_t pw_period, ptrdiff_t pw_phase, ptrdiff_t n, T* loss_out,       \
    T* grad_out, double* range_out, const fl_ew_opts* o) {                                \
    double acc[FL_EW_LANES], lo_x = INFINITY, hi_x = -INFINITY, lo_y = INFINITY;          \
    double hi_y = -INFINITY;                                                              \
    ptrdiff_t i;                                                                          \
    int k, width;                                                                         \
    for (k = 0; k < FL_EW_LANES; k++) acc[k] = 0.0;                                       \
    for (i = 0; i < n; i++) {                                                             \
        const double xi = x[i], yi = y[i];  /* before a store in place overwrites x[i] */ \
        const double wi = o->has_weight ? (double)w[w_phase] : 1.0;                       \
        const double vi = o->has_pos_weight ? (double)pw[pw_phase] : 1.0;                 \
        double deriv;                                                                     \
        const double term = wi * fl_ew_term(o, xi, yi, vi, &deriv);                       \
        if (grad_out) grad_out[i] = (T)((wi * deriv) * o->grad_scale);                    \
        if (loss_out) loss_out[i] = (T)(term * o->loss_scale);                            \
        acc[i % FL_EW_LANES] += term;                                                     \
        if (xi < lo_x) lo_x = xi;                                                         \
        if (xi > hi_x) hi_x = xi;                                                         \
        if (yi < lo_y) lo_y = yi;                                                         \
        if (yi > hi_y) hi_y = yi;                                                         \
        if (++w_phase == w_period) w_phase = 0;                                           \
        if (++pw_phase == pw_period) pw_phase = 0;                                        \
    }                                                                                     \
    if (range_out) {                                                                      \
        range_out[0] = lo_x, range_out[1] = hi_x, range_out[2] = lo_y;                    \
        range_out[3] = hi_y;                                                              \
    }                                                                                     \
    for (width = FL_EW_LANES / 2; width >= 1; width /= 2)                                 \
        for (k = 0; k < width; k++) acc[k] = acc[2 * k] + acc[2 * k + 1];                 \
    return acc[0];                                                                        \
}                                                                                         \
                                                                                          \
static void fl_ew_range_##SUFFIX(const T* v, ptrdiff_t n, double* low, double* high,     \
                                  double* nan) {                                          \
    double l = INFINITY, h = -INFINITY;                                                   \
    int any_nan = 0;                                                                      \
    ptrdiff_t i;                                                                          \
    for (i = 0; i < n; i++) {                                                             \
        if (v[i] < l) l = v[i];                                                           \
        if (v[i] > h) h = v[i];                                                           \
        any_nan |= v[i] != v[i];                                                          \
    }                                                                                     \
    *low = l;                                                                             \
    *high = h;                                                                            \
    *nan = any_nan;                                                                       \
}
FL_EW_DEFINE_SCALAR(f32, float)
FL_EW_DEFINE_SCALAR(f64, double)

#endif
