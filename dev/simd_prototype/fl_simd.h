/* fastloss SIMD row primitives: the hot loops of a row (max, exp + store + sum, rescale)
 * in GCC/Clang vector extensions, so that one source compiles to SSE2, AVX2 or AVX-512
 * code according to the flags of the translation unit that includes it.
 *
 * exp is a branch-free polynomial (Cody-Waite reduction, degree 6 in float32 and 12 in
 * float64): at most 2 ulp in float32 and 1e-15 relative in float64 over the normal range,
 * exp(-inf) = 0, exp(NaN) = NaN, overflow to +inf. No -ffast-math is involved: every
 * operation is an IEEE one the compiler may not reorder.
 */
#ifndef FL_SIMD_H
#define FL_SIMD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#define FL_WIDTH 64
#elif defined(__AVX__)
#define FL_WIDTH 32
#else
#define FL_WIDTH 16
#endif
#define FL_NF (FL_WIDTH / 4)        /* float lanes */
#define FL_ND (FL_WIDTH / 8)        /* double lanes */

typedef float fl_vf __attribute__((vector_size(FL_WIDTH), aligned(4)));
typedef int32_t fl_vi __attribute__((vector_size(FL_WIDTH), aligned(4)));
typedef double fl_vd __attribute__((vector_size(FL_WIDTH), aligned(8)));
typedef int64_t fl_vl __attribute__((vector_size(FL_WIDTH), aligned(8)));
/* FL_NF doubles, to accumulate float lanes in double */
typedef double fl_vfd __attribute__((vector_size(FL_WIDTH * 2), aligned(8)));

/* select(mask, a, b) lane-wise, without branches */
static inline fl_vf fl_self(fl_vi m, fl_vf a, fl_vf b) {
    return (fl_vf)((m & (fl_vi)a) | (~m & (fl_vi)b));
}
static inline fl_vd fl_seld(fl_vl m, fl_vd a, fl_vd b) {
    return (fl_vd)((m & (fl_vl)a) | (~m & (fl_vl)b));
}

/* ---- exp, float32 ---- */
static inline fl_vf fl_expf_v(fl_vf x) {
    const fl_vf zero = {0}, lo = zero - 104.0f, hi = zero + 89.0f;
    x = fl_self(x < lo, lo, x);          /* exp(-104) rounds to 0; NaN compares false */
    x = fl_self(x > hi, hi, x);          /* exp(89) overflows to +inf */
    fl_vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* round(x/ln2) */
    fl_vf r = x - n * 0.693359375f;      /* exact: ln2_hi has 9 significant bits */
    r = r - n * -2.12194440e-4f;
    fl_vf p = r * 1.38146130920354e-3f + 8.368709831816333e-3f;
    p = p * r + 4.1668387364721171e-2f;
    p = p * r + 1.6666520689750436e-1f;
    p = p * r + 4.9999993451691255e-1f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    fl_vi ni = __builtin_convertvector(n, fl_vi);
    fl_vi n1 = ni >> 1, n2 = ni - n1;    /* 2^n in halves: subnormal results round once */
    return p * (fl_vf)((n1 + 127) << 23) * (fl_vf)((n2 + 127) << 23);
}

static inline float fl_expf(float x) {
    fl_vf v = {0};
    v[0] = x;
    return fl_expf_v(v)[0];
}

/* ---- exp, float64 ---- */
static inline fl_vd fl_exp_v(fl_vd x) {
    const fl_vd zero = {0}, lo = zero - 746.0, hi = zero + 710.0;
    x = fl_seld(x < lo, lo, x);
    x = fl_seld(x > hi, hi, x);
    const double magic = 6755399441055744.0;            /* 1.5 * 2^52 */
    fl_vd t = x * 1.4426950408889634 + magic;
    fl_vd n = t - magic;                                 /* round(x / ln2) */
    fl_vd r = x - n * 0.6931471803691238;                /* ln2_hi: 32 significant bits */
    r = r - n * 1.9082149292705877e-10;                  /* ln2_lo */
    fl_vd p = r * 2.0876756987868099e-9 + 2.5052108385441718e-8;
    p = p * r + 2.7557319223985893e-7;
    p = p * r + 2.7557319223985888e-6;
    p = p * r + 2.4801587301587302e-5;
    p = p * r + 1.9841269841269841e-4;
    p = p * r + 1.3888888888888889e-3;
    p = p * r + 8.3333333333333333e-3;
    p = p * r + 4.1666666666666667e-2;
    p = p * r + 1.6666666666666667e-1;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    fl_vl ni = (fl_vl)t - (fl_vl)(zero + magic);         /* n from t's low bits */
    fl_vl n1 = ni >> 1, n2 = ni - n1;
    return p * (fl_vd)((n1 + 1023) << 52) * (fl_vd)((n2 + 1023) << 52);
}

static inline double fl_exp(double x) {
    fl_vd v = {0};
    v[0] = x;
    return fl_exp_v(v)[0];
}

/* ---- row primitives, one per dtype through a macro (one formula, two types) ----
 * FL_ROW_MAX(x, n): max of x[0:n] as double, NaN skipped (never wins a comparison),
 *   -inf when there is none.
 * FL_EXP_SUM(x, n, sub, s, out): sum_i exp((x_i - sub) s) in double, storing each
 *   exponential in out[i] when out != NULL (out may be x: each x_i is read before it is
 *   overwritten). The sum's order depends on n alone, so storing or not gives the same
 *   bits.
 * FL_SCALE(e, n, factor): e_i <- e_i * factor, the product formed in double.
 */
#define FL_DEFINE_ROW_PRIMITIVES(T, SUFFIX, VT, VM, NL, VACC, EXPV, SEL)                   \
static inline double fl_row_max_##SUFFIX(const T* x, long n) {                           \
    VT m;                                                                                \
    for (int k = 0; k < NL; k++) m[k] = -INFINITY;                                        \
    long i = 0;                                                                          \
    for (; i + NL <= n; i += NL) {                                                       \
        VT v;                                                                            \
        memcpy(&v, x + i, sizeof v);                                                     \
        m = SEL(v > m, v, m);                                                            \
    }                                                                                    \
    double best = -INFINITY;                                                             \
    for (int k = 0; k < NL; k++) if (m[k] > best) best = m[k];                           \
    for (; i < n; i++) if (x[i] > best) best = x[i];                                     \
    return best;                                                                         \
}                                                                                        \
static inline double fl_exp_sum_##SUFFIX(const T* x, long n, T sub, T s, T* out) {       \
    VACC acc0 = {0}, acc1 = {0};                                                         \
    long i = 0;                                                                          \
    for (; i + 2 * NL <= n; i += 2 * NL) {                                               \
        VT v0, v1;                                                                       \
        memcpy(&v0, x + i, sizeof v0);                                                   \
        memcpy(&v1, x + i + NL, sizeof v1);                                              \
        VT e0 = EXPV((v0 - sub) * s), e1 = EXPV((v1 - sub) * s);                         \
        if (out) {                                                                       \
            memcpy(out + i, &e0, sizeof e0);                                             \
            memcpy(out + i + NL, &e1, sizeof e1);                                        \
        }                                                                                \
        acc0 += __builtin_convertvector(e0, VACC);                                       \
        acc1 += __builtin_convertvector(e1, VACC);                                       \
    }                                                                                    \
    for (; i < n; i += NL) {          /* the tail, in lanes padded with -inf (exp 0) */  \
        VT v;                                                                            \
        long m = n - i < NL ? n - i : NL;                                                \
        for (int k = 0; k < NL; k++) v[k] = k < m ? x[i + k] : -INFINITY;                \
        VT e = EXPV((v - sub) * s);                                                      \
        if (out) for (int k = 0; k < m; k++) out[i + k] = e[k];                          \
        acc0 += __builtin_convertvector(e, VACC);                                        \
    }                                                                                    \
    acc0 += acc1;                                                                        \
    double total = 0.0;                                                                  \
    for (int k = 0; k < NL; k++) total += acc0[k];                                       \
    return total;                                                                        \
}                                                                                        \
static inline void fl_scale_##SUFFIX(T* e, long n, double factor) {                      \
    long i = 0;                                                                          \
    for (; i + NL <= n; i += NL) {                                                       \
        VT v;                                                                            \
        memcpy(&v, e + i, sizeof v);                                                     \
        v = __builtin_convertvector(__builtin_convertvector(v, VACC) * factor, VT);      \
        memcpy(e + i, &v, sizeof v);                                                     \
    }                                                                                    \
    for (; i < n; i++) e[i] = (T)(e[i] * factor);                                        \
}

typedef double fl_vdd __attribute__((vector_size(FL_WIDTH), aligned(8)));
FL_DEFINE_ROW_PRIMITIVES(float, f32, fl_vf, fl_vi, FL_NF, fl_vfd, fl_expf_v, fl_self)
FL_DEFINE_ROW_PRIMITIVES(double, f64, fl_vd, fl_vl, FL_ND, fl_vdd, fl_exp_v, fl_seld)

#endif
