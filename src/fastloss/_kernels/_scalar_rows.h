/* The row primitives of _simd_rows.h in plain C, for compilers without GCC/Clang vector
 * extensions (MSVC), or with FASTLOSS_SCALAR defined (to test this file with GCC).
 *
 * Same functions, same contracts, one element at a time with libm's exp and log, in
 * double; slower, and not bit-identical to the SIMD builds (within their tolerances).
 * The blocks of few classes (_simd_small.h) are not available here: FL_SMALL_C is 0, so
 * the kernels never call them and rows of any length take the row primitives.
 */
#ifndef FASTLOSS_SCALAR_ROWS_H
#define FASTLOSS_SCALAR_ROWS_H

#include <math.h>
#include <stddef.h>

#define FL_INLINE static __inline

typedef struct {
    const double* class_weight;
    double alpha, beta, t_max, t_scale, t_shift;
    int exp_kind;
    int with_entropy;
    int weights_fit_float;      /* not used here (no float lanes) */
} fl_coef_spec;

FL_INLINE double fl_log1p_1(double z) { return log1p(z); }
FL_INLINE double fl_exp_1(double z) { return exp(z); }
FL_INLINE void fl_log1p_n(double* z, ptrdiff_t n) {
    ptrdiff_t i;
    for (i = 0; i < n; i++) z[i] = log1p(z[i]);
}
FL_INLINE void fl_exp_n(double* z, ptrdiff_t n) {
    ptrdiff_t i;
    for (i = 0; i < n; i++) z[i] = exp(z[i]);
}

#define FL_DEFINE_SCALAR(SUFFIX, T)                                                       \
FL_INLINE double fl_max_##SUFFIX(const T* x, ptrdiff_t n, double* lowest_out) {          \
    double best = -INFINITY, low = INFINITY;                                              \
    ptrdiff_t i;                                                                          \
    for (i = 0; i < n; i++) {                                                             \
        if (x[i] > best) best = x[i];                                                     \
        if (x[i] < low) low = x[i];                                                       \
    }                                                                                     \
    if (lowest_out) *lowest_out = low;                                                    \
    return best;                                                                          \
}                                                                                         \
FL_INLINE void fl_drain_##SUFFIX(const fl_drain* d, ptrdiff_t n) {                        \
    const T* src = (const T*)d->src;                                                      \
    T* dst = (T*)d->dst;                                                                  \
    ptrdiff_t j;                                                                          \
    for (j = 0; j < n; j++)                                                               \
        dst[j] = j == d->fix_at ? (T)d->fix_value : (T)(src[j] * d->factor);             \
}                                                                                         \
FL_INLINE double fl_exp_sum_##SUFFIX(const T* x, ptrdiff_t n, double sub, double s,       \
                                     T* out, double* self_dot, double* ones,              \
                                     double lowest, const fl_drain* drain) {              \
    double sum = 0.0, dot = 0.0, at_shift = 0.0;                                          \
    ptrdiff_t i;                                                                          \
    (void)lowest;                       /* no rounding error term in double */           \
    for (i = 0; i < n; i++) {                                                             \
        const double xi = x[i];         /* before a store in place overwrites it */       \
        const double e = exp((xi - sub) * s);                                             \
        if (out) out[i] = (T)e;                                                           \
        if (xi == sub) at_shift += 1.0;                                                   \
        else sum += e;                                                                    \
        if (e != 0.0) dot += e * (sub - xi);                                              \
    }                                                                                     \
    if (self_dot) *self_dot = dot;                                                        \
    *ones = at_shift;                                                                     \
    if (drain) fl_drain_##SUFFIX(drain, n);                                               \
    return sum;                                                                           \
}                                                                                         \
FL_INLINE void fl_scale_##SUFFIX(T* e, ptrdiff_t n, double factor) {                      \
    ptrdiff_t i;                                                                          \
    for (i = 0; i < n; i++) e[i] = (T)(e[i] * factor);                                    \
}                                                                                         \
FL_INLINE void fl_sub_shift_##SUFFIX(const T* x, ptrdiff_t n, double a, double b,         \
                                     T* out) {                                            \
    ptrdiff_t i;                                                                          \
    for (i = 0; i < n; i++) out[i] = (T)(((double)x[i] - a) - b);                         \
}                                                                                         \
FL_INLINE double fl_coef_at_##SUFFIX(const T* t, ptrdiff_t j, const fl_coef_spec* c) {    \
    double a;                                                                             \
    if (c->exp_kind) a = exp((t[j] - c->t_max) * c->t_scale - c->t_shift);               \
    else a = c->beta + (t ? c->alpha * t[j] : 0.0);                                       \
    if (c->class_weight) a *= c->class_weight[j];                                         \
    return a;                                                                             \
}                                                                                         \
FL_INLINE void fl_coef_sums_##SUFFIX(const T* x, const T* t, ptrdiff_t start,             \
                                     ptrdiff_t stop, double shift, const fl_coef_spec* c, \
                                     double* sum, double* dot, double* entropy) {         \
    /* eight interleaved accumulators, as the vector builds have lanes: a long row of  \
     * equal terms summed in one would lose n/2 ulps (2048 of them: 1.6e-14) */         \
    double s[8] = {0}, d[8] = {0}, h[8] = {0};                                            \
    ptrdiff_t j;                                                                          \
    int k;                                                                                \
    for (j = start; j < stop; j++) {                                                      \
        const double a = fl_coef_at_##SUFFIX(t, j, c);                                    \
        k = (int)((j - start) & 7);                                                       \
        s[k] += a;                                                                        \
        if (a != 0.0) {                                                                   \
            d[k] += a * (shift - x[j]);                                                   \
            if (c->with_entropy)                                                          \
                h[k] += a * (c->exp_kind ? (t[j] - c->t_max) * c->t_scale - c->t_shift \
                                         : log(a));                                       \
        }                                                                                 \
    }                                                                                     \
    for (k = 4; k > 0; k /= 2)                                                            \
        for (j = 0; j < k; j++) {                                                         \
            s[j] += s[j + k];                                                             \
            d[j] += d[j + k];                                                             \
            h[j] += h[j + k];                                                             \
        }                                                                                 \
    *sum = s[0];                                                                          \
    *dot = d[0];                                                                          \
    *entropy = h[0];                                                                      \
}                                                                                         \
FL_INLINE void fl_coef_scale_##SUFFIX(T* e, const T* t, ptrdiff_t start, ptrdiff_t stop,  \
                                      double factor, double coef_scale,                   \
                                      const fl_coef_spec* c) {                            \
    ptrdiff_t j;                                                                          \
    for (j = start; j < stop; j++)                                                        \
        e[j] = (T)(e[j] * factor - coef_scale * fl_coef_at_##SUFFIX(t, j, c));            \
}                                                                                         \
FL_INLINE void fl_entropy_grad_##SUFFIX(T* e, const T* x, ptrdiff_t n, double factor,     \
                                        double max, double offset) {                      \
    ptrdiff_t j;                                                                          \
    for (j = 0; j < n; j++) {                                                             \
        const double v = e[j];                                                            \
        e[j] = (T)(v != 0.0 ? v * factor * (offset + (max - (double)x[j])) : 0.0);        \
    }                                                                                     \
}

/* Streaming stores are ordinary ones here. */
FL_INLINE void fl_stream_fence(void) {}

FL_DEFINE_SCALAR(f32, float)
FL_DEFINE_SCALAR(f64, double)

/* A float row's logsumexp from its exponentials in double (see _simd_rows.h): here every
 * row's already are, so this is the row's own sum, for refined_lse. */
FL_INLINE double fl_lse_wide_f32(const float* x, ptrdiff_t n, double max) {
    double ones = 0.0, sum = 0.0, err = 0.0;
    ptrdiff_t i;
    for (i = 0; i < n; i++) {           /* compensated (Neumaier), as in _simd_rows.h */
        const double e = exp((double)x[i] - max);
        double t;
        if ((double)x[i] == max) {
            ones += 1.0;
            continue;
        }
        t = sum + e;
        err += fabs(sum) >= fabs(e) ? (sum - t) + e : (e - t) + sum;
        sum = t;
    }
    return max + log1p((ones - 1.0) + (sum + err));
}

#endif
