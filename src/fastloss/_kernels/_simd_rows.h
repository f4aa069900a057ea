/* The hot loops of a row (max; exp + store + sum; rescale), written once in GCC/Clang
 * vector extensions for float and double.
 *
 * One source serves every instruction set: the lanes are a fixed logical width of 64 bytes
 * (16 floats or 8 doubles) which the compiler maps onto SSE2, AVX2 or AVX-512 registers by
 * the flags of the extension that includes this file (setup.py's SIMD_VARIANTS). Every
 * lane does the same IEEE operations in the same order on every instruction set (the
 * extensions are compiled with -ffp-contract=off: no fused multiply-add), so the portable,
 * AVX2 and AVX-512 builds give the same bits. -fno-trapping-math lets the compiler turn
 * the NaN-preserving clamps below into selects; results are unchanged.
 *
 * exp is branch-free: exp(x) = 2^n p(r), x = n ln2 + r, |r| <= ln2 / 2, the reduction in
 * two steps (Cody-Waite) and p a polynomial (degree 6 for float, within 2 ulp; degree 13
 * for double, within 1e-15 relative); 2^n is applied in two halves so that subnormal
 * results round once. exp(-inf) = 0, exp(+inf) = inf, exp(NaN) = NaN.
 *
 * Sums over the lanes are formed in double, in a fixed order that depends on n alone.
 */
#ifndef FASTLOSS_SIMD_ROWS_H
#define FASTLOSS_SIMD_ROWS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Inlined always: a vector argument of a call that is not inlined goes through memory. */
#define FL_INLINE static inline __attribute__((always_inline))

/* Vectors as wide as the machine's registers (GCC splits wider generic vectors badly). */
#if defined(__AVX512F__)
#define FL_WIDTH 64
#define FL_LO 0, 1, 2, 3, 4, 5, 6, 7
#define FL_HI 8, 9, 10, 11, 12, 13, 14, 15
#elif defined(__AVX__)
#define FL_WIDTH 32
#define FL_LO 0, 1, 2, 3
#define FL_HI 4, 5, 6, 7
#else
#define FL_WIDTH 16
#define FL_LO 0, 1
#define FL_HI 2, 3
#endif
#define FL_NF (FL_WIDTH / 4)    /* float lanes */
#define FL_ND (FL_WIDTH / 8)    /* double lanes */

typedef float fl_vf __attribute__((vector_size(FL_WIDTH)));
typedef int32_t fl_vi __attribute__((vector_size(FL_WIDTH)));
typedef double fl_vd __attribute__((vector_size(FL_WIDTH)));
typedef int64_t fl_vl __attribute__((vector_size(FL_WIDTH)));
/* Half a float vector: as many floats as a double vector has doubles. */
typedef float fl_vh __attribute__((vector_size(FL_WIDTH / 2)));

/* Lane-wise select without branches: m ? a : b (m all ones or all zeros). */
FL_INLINE fl_vf fl_select_f(fl_vi m, fl_vf a, fl_vf b) {
    return (fl_vf)((m & (fl_vi)a) | (~m & (fl_vi)b));
}
FL_INLINE fl_vd fl_select_d(fl_vl m, fl_vd a, fl_vd b) {
    return (fl_vd)((m & (fl_vl)a) | (~m & (fl_vl)b));
}

/* ---- exp ---- */
FL_INLINE fl_vd fl_exp_d(fl_vd x) {
    const fl_vd zero = {0};
    const double round = 6755399441055744.0;                /* 1.5 * 2^52 */
    x = fl_select_d(x < zero - 746.0, zero - 746.0, x);
    x = fl_select_d(x > zero + 710.0, zero + 710.0, x);
    const fl_vd t = x * 1.4426950408889634 + round;
    const fl_vd n = t - round;
    fl_vd r = x - n * 0.6931471803691238;                   /* ln2's high part: 32 bits */
    r = r - n * 1.9082149292705877e-10;
    fl_vd p = r * 1.6059043836821613e-10 + 2.0876756987868099e-9;
    p = p * r + 2.5052108385441718e-8;
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
    const fl_vl ni = (fl_vl)t - (fl_vl)(zero + round);      /* n, from t's low bits */
    const fl_vl n1 = ni >> 1, n2 = ni - n1;
    return p * (fl_vd)((n1 + 1023) << 52) * (fl_vd)((n2 + 1023) << 52);
}

/* ---- float lanes in double: the low and high halves of a float vector, exactly ---- */
FL_INLINE fl_vd fl_widen_lo(fl_vf v) {
    return __builtin_convertvector(__builtin_shufflevector(v, v, FL_LO), fl_vd);
}
FL_INLINE fl_vd fl_widen_hi(fl_vf v) {
    return __builtin_convertvector(__builtin_shufflevector(v, v, FL_HI), fl_vd);
}
FL_INLINE fl_vf fl_narrow(fl_vd lo, fl_vd hi) {
    const fl_vh a = __builtin_convertvector(lo, fl_vh), b = __builtin_convertvector(hi, fl_vh);
    return __builtin_shufflevector(a, b, FL_LO, FL_HI);
}

/* exp((x - sub) s) of float lanes. The argument and its reduction x - sub = n ln2 + r
 * are formed in double: in float, x - sub would round, and each ulp of the argument is
 * |x - sub| ulps of the result. Only r, |r| <= ln2 / 2, goes to float for the polynomial. */
FL_INLINE fl_vd fl_reduce_d(fl_vd a, fl_vd* n) {
    const fl_vd zero = {0};
    const double round = 6755399441055744.0;                /* 1.5 * 2^52 */
    /* a <= 0 or NaN (x <= sub, s > 0): only underflow needs a clamp */
    a = fl_select_d(a < zero - 104.0, zero - 104.0, a);     /* exp(-104) rounds to 0 */
    const fl_vd t = a * 1.4426950408889634 + round;
    *n = t - round;
    return a - *n * 0.6931471805599453;
}

FL_INLINE fl_vf fl_exp_shifted_f(fl_vf x, double sub, double s) {
    fl_vd n_lo, n_hi;
    const fl_vd r_lo = fl_reduce_d((fl_widen_lo(x) - sub) * s, &n_lo);
    const fl_vd r_hi = fl_reduce_d((fl_widen_hi(x) - sub) * s, &n_hi);
    const fl_vf r = fl_narrow(r_lo, r_hi), n = fl_narrow(n_lo, n_hi);
    fl_vf p = r * 1.38146130920354e-3f + 8.368709831816333e-3f;
    p = p * r + 4.1668387364721171e-2f;
    p = p * r + 1.6666520689750436e-1f;
    p = p * r + 4.9999993451691255e-1f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const fl_vi ni = __builtin_convertvector(n, fl_vi);
    const fl_vi n1 = ni >> 1, n2 = ni - n1;    /* 2^n in halves: subnormals round once */
    return p * (fl_vf)((n1 + 127) << 23) * (fl_vf)((n2 + 127) << 23);
}

/* Sum of a double vector's lanes, in lane order. */
FL_INLINE double fl_hsum(fl_vd v) {
    double s = 0.0;
    for (int k = 0; k < FL_ND; k++) s += v[k];
    return s;
}

/* ---- the row primitives ----
 * fl_max_T(x, n): max of x[0:n] as double; NaN never wins a comparison, so it is skipped
 *   (exp(NaN) = NaN catches it in the sum); -inf when there is no other value.
 * fl_exp_sum_T(x, n, sub, s, out, self_dot): sum_i exp((x_i - sub) s) for x_i <= sub
 *   (sub is the max of x, or above it) and s > 0, storing each
 *   exponential in out[i] unless out is NULL (out may be x: x_i is read before out[i] is
 *   written). Unless self_dot is NULL it also returns sum_i e_i (sub - x_i) over e_i != 0
 *   there (entropy; x_i = -inf has e_i = 0 and adds 0).
 * fl_scale_T(e, n, factor): e_i <- e_i * factor, the product formed in double.
 * fl_sub_shift_T(x, n, a, b, out): out_i <- (x_i - a) - b, in double (log_softmax: x - a is
 *   exact for x near the max a, so large logits lose nothing).
 * The tail of a row is processed in one more vector with -inf in its unused lanes, so that
 * the order of the sums depends on n only. */

/* The first m < lanes elements of a row's tail: loads padded with -inf (whose exp is 0)
 * and stores of the first m lanes. AVX-512 masks them, without touching memory past the
 * row; elsewhere they go lane by lane. */
#if defined(__AVX512F__)
#include <immintrin.h>
FL_INLINE fl_vf fl_load_tail_f32(const float* x, int m) {
    return (fl_vf)_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), (__mmask16)((1u << m) - 1), x);
}
FL_INLINE void fl_store_tail_f32(float* out, fl_vf v, int m) {
    _mm512_mask_storeu_ps(out, (__mmask16)((1u << m) - 1), (__m512)v);
}
FL_INLINE fl_vd fl_load_tail_f64(const double* x, int m) {
    return (fl_vd)_mm512_mask_loadu_pd(_mm512_set1_pd(-INFINITY), (__mmask8)((1u << m) - 1), x);
}
FL_INLINE void fl_store_tail_f64(double* out, fl_vd v, int m) {
    _mm512_mask_storeu_pd(out, (__mmask8)((1u << m) - 1), (__m512d)v);
}
#else
#define FL_DEFINE_TAIL(SUFFIX, T, VT, NL)                                                 \
    FL_INLINE VT fl_load_tail_##SUFFIX(const T* x, int m) {                               \
        VT v;                                                                             \
        for (int k = 0; k < (NL); k++) v[k] = k < m ? x[k] : -INFINITY;                   \
        return v;                                                                         \
    }                                                                                     \
    FL_INLINE void fl_store_tail_##SUFFIX(T* out, VT v, int m) {                          \
        for (int k = 0; k < m; k++) out[k] = v[k];                                        \
    }
FL_DEFINE_TAIL(f32, float, fl_vf, FL_NF)
FL_DEFINE_TAIL(f64, double, fl_vd, FL_ND)
#endif

/* Rows of at most FL_SHORT_ROW elements (small C, or the last chunk of a row) go through a
 * scalar loop with libm's exp in double: a vector exp's latency (about 130 cycles with the
 * sum of its lanes) costs more than a few scalar exps, and there is nothing to overlap it
 * with inside one row. Measured on Zen 4: 4M x 2 float32 softmax 95 ms scalar, 286 ms in
 * one vector. */
#define FL_SHORT_ROW 16
#define FL_SHORT_EXP_SUM(x, n, sub, s, out, self_dot)                                       \
    __extension__({                                                                       \
        double sum_ = 0.0, dot_ = 0.0;                                                    \
        for (ptrdiff_t i_ = 0; i_ < (n); i_++) {                                          \
            const double xi_ = (x)[i_];     /* before a store in place overwrites it */   \
            const double e_ = exp((xi_ - (sub)) * (s));                                   \
            if (out) (out)[i_] = e_;                                                      \
            sum_ += e_;                                                                   \
            if ((self_dot) && e_ != 0.0) dot_ += e_ * ((sub) - xi_);                      \
        }                                                                                 \
        if (self_dot) *(self_dot) = dot_;                                                 \
        sum_;                                                                             \
    })

/* fl_max_f32 and fl_max_f64: one definition for both types (T, its vector VT, lanes NL,
 * lane-wise select SEL). */
#define FL_DEFINE_MAX(SUFFIX, T, VT, NL, SEL)                                             \
    FL_INLINE double fl_max_##SUFFIX(const T* x, ptrdiff_t n) {                           \
        double best = -INFINITY;                                                          \
        ptrdiff_t i = 0;                                                                  \
        if (n >= 2 * (NL)) {            /* else no vector: skip the lanes' reduction */   \
            VT m0, m1;                                                                    \
            for (int k = 0; k < (NL); k++) m0[k] = m1[k] = -INFINITY;                     \
            for (; i + 2 * (NL) <= n; i += 2 * (NL)) {                                    \
                VT a, b;                                                                  \
                memcpy(&a, x + i, sizeof a);                                              \
                memcpy(&b, x + i + (NL), sizeof b);                                       \
                m0 = SEL(a > m0, a, m0);                                                  \
                m1 = SEL(b > m1, b, m1);                                                  \
            }                                                                             \
            m0 = SEL(m1 > m0, m1, m0);                                                    \
            for (int k = 0; k < (NL); k++) if (m0[k] > best) best = m0[k];                \
        }                                                                                 \
        for (; i < n; i++) if (x[i] > best) best = x[i];                                  \
        return best;                                                                      \
    }
FL_DEFINE_MAX(f32, float, fl_vf, FL_NF, fl_select_f)
FL_DEFINE_MAX(f64, double, fl_vd, FL_ND, fl_select_d)

/* One vector of float exponentials into the double accumulators (and the self dot). */
FL_INLINE void fl_accumulate_f32(fl_vf v, double sub, double s, float* out, int m,
                                  fl_vd* acc, fl_vd* dot) {
    const fl_vf e = fl_exp_shifted_f(v, sub, s);
    if (out) {
        if (m == FL_NF) memcpy(out, &e, sizeof e);
        else fl_store_tail_f32(out, e, m);
    }
    const fl_vd e_lo = fl_widen_lo(e), e_hi = fl_widen_hi(e);
    acc[0] += e_lo;
    acc[1] += e_hi;
    if (dot) {
        const fl_vd zero = {0};
        dot[0] += fl_select_d(e_lo != zero, e_lo * (sub - fl_widen_lo(v)), zero);
        dot[1] += fl_select_d(e_hi != zero, e_hi * (sub - fl_widen_hi(v)), zero);
    }
}

FL_INLINE double fl_exp_sum_f32(const float* x, ptrdiff_t n, double sub, double s,
                                float* out, double* self_dot) {
    if (n <= FL_SHORT_ROW) return FL_SHORT_EXP_SUM(x, n, sub, s, out, self_dot);
    fl_vd acc[4] = {{0}}, dot[4] = {{0}};
    ptrdiff_t i = 0;
    for (; i + 2 * FL_NF <= n; i += 2 * FL_NF) {
        fl_vf a, b;
        memcpy(&a, x + i, sizeof a);
        memcpy(&b, x + i + FL_NF, sizeof b);
        fl_accumulate_f32(a, sub, s, out ? out + i : NULL, FL_NF, acc, self_dot ? dot : NULL);
        fl_accumulate_f32(b, sub, s, out ? out + i + FL_NF : NULL, FL_NF, acc + 2,
                          self_dot ? dot + 2 : NULL);
    }
    for (; i < n; i += FL_NF) {
        const int m = n - i < FL_NF ? (int)(n - i) : FL_NF;
        const fl_vf v = fl_load_tail_f32(x + i, m);
        fl_accumulate_f32(v, sub, s, out ? out + i : NULL, m, acc, self_dot ? dot : NULL);
    }
    if (self_dot) *self_dot = fl_hsum((dot[0] + dot[2]) + (dot[1] + dot[3]));
    return fl_hsum((acc[0] + acc[2]) + (acc[1] + acc[3]));
}

FL_INLINE void fl_accumulate_f64(fl_vd v, double sub, double s, double* out, int m,
                                     fl_vd* acc, fl_vd* dot) {
    const fl_vd e = fl_exp_d((v - sub) * s);
    if (out) {
        if (m == FL_ND) memcpy(out, &e, sizeof e);
        else fl_store_tail_f64(out, e, m);
    }
    acc[0] += e;
    if (dot) {
        const fl_vd zero = {0};
        dot[0] += fl_select_d(e != zero, e * (sub - v), zero);
    }
}

FL_INLINE double fl_exp_sum_f64(const double* x, ptrdiff_t n, double sub, double s,
                                    double* out, double* self_dot) {
    if (n <= FL_SHORT_ROW) return FL_SHORT_EXP_SUM(x, n, sub, s, out, self_dot);
    fl_vd acc[2] = {{0}}, dot[2] = {{0}};
    ptrdiff_t i = 0;
    for (; i + 2 * FL_ND <= n; i += 2 * FL_ND) {
        fl_vd a, b;
        memcpy(&a, x + i, sizeof a);
        memcpy(&b, x + i + FL_ND, sizeof b);
        fl_accumulate_f64(a, sub, s, out ? out + i : NULL, FL_ND, acc, self_dot ? dot : NULL);
        fl_accumulate_f64(b, sub, s, out ? out + i + FL_ND : NULL, FL_ND, acc + 1,
                          self_dot ? dot + 1 : NULL);
    }
    for (; i < n; i += FL_ND) {
        const int m = n - i < FL_ND ? (int)(n - i) : FL_ND;
        const fl_vd v = fl_load_tail_f64(x + i, m);
        fl_accumulate_f64(v, sub, s, out ? out + i : NULL, m, acc, self_dot ? dot : NULL);
    }
    if (self_dot) *self_dot = fl_hsum(dot[0] + dot[1]);
    return fl_hsum(acc[0] + acc[1]);
}

FL_INLINE void fl_scale_f32(float* e, ptrdiff_t n, double factor) {
    ptrdiff_t i = 0;
    for (; i + FL_NF <= n; i += FL_NF) {
        fl_vf v;
        memcpy(&v, e + i, sizeof v);
        v = fl_narrow(fl_widen_lo(v) * factor, fl_widen_hi(v) * factor);
        memcpy(e + i, &v, sizeof v);
    }
    for (; i < n; i++) e[i] = (float)(e[i] * factor);
}

FL_INLINE void fl_scale_f64(double* e, ptrdiff_t n, double factor) {
    ptrdiff_t i = 0;
    for (; i + FL_ND <= n; i += FL_ND) {
        fl_vd v;
        memcpy(&v, e + i, sizeof v);
        v = v * factor;
        memcpy(e + i, &v, sizeof v);
    }
    for (; i < n; i++) e[i] = e[i] * factor;
}

FL_INLINE void fl_sub_shift_f32(const float* x, ptrdiff_t n, double a, double b,
                                    float* out) {
    ptrdiff_t i = 0;
    for (; i + FL_NF <= n; i += FL_NF) {
        fl_vf v;
        memcpy(&v, x + i, sizeof v);
        v = fl_narrow((fl_widen_lo(v) - a) - b, (fl_widen_hi(v) - a) - b);
        memcpy(out + i, &v, sizeof v);
    }
    for (; i < n; i++) out[i] = (float)(((double)x[i] - a) - b);
}

FL_INLINE void fl_sub_shift_f64(const double* x, ptrdiff_t n, double a, double b,
                                    double* out) {
    ptrdiff_t i = 0;
    for (; i + FL_ND <= n; i += FL_ND) {
        fl_vd v;
        memcpy(&v, x + i, sizeof v);
        v = (v - a) - b;
        memcpy(out + i, &v, sizeof v);
    }
    for (; i < n; i++) out[i] = (x[i] - a) - b;
}

#endif
