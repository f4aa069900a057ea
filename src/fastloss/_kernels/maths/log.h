/* Logarithms, written once against the vector types of simd/vec.h.
 *
 * Each function opens with its contract (lanes, the largest error in ulps of the result,
 * the valid arguments). The method: v = 2^k m with m in [sqrt(2)/2, sqrt(2)), so that
 * log v = k ln2 + log(1 + f) with |f| < 0.42, ln2 in two parts (k ln2_hi is exact) and
 * log(1 + f) by a polynomial; no branches. The bit arithmetic on the exponent is unsigned
 * where a negative argument (a wrong value, but computed) would make a signed difference
 * or shift undefined.
 */
#ifndef FL_MATHS_LOG_H
#define FL_MATHS_LOG_H

#include "exp.h"

/* fl_log_normal_d: log(v) of double lanes.
 *   lanes: FL_ND;  error: 1 ulp;  valid: positive, finite, normal v (anything else gives a
 *   wrong finite value).
 * fdlibm's algorithm without branches: s = f / (2 + f), log(1 + f) = f - f^2/2 +
 * s (f^2/2 + R(s^2)); k goes to double through the exponent field (AVX2 has no int64
 * conversion). */
FL_INLINE fl_vd fl_log_normal_d(fl_vd v) {
    const fl_vu ix = (fl_vu)v + (0x3ff0000000000000ULL - 0x3fe6a09e00000000ULL);
    const fl_vd k = (fl_vd)((ix >> 52) | 0x4330000000000000ULL) - (4503599627370496.0 + 1023.0);
    const fl_vd f = (fl_vd)((ix & 0x000fffffffffffffULL) + 0x3fe6a09e00000000ULL) - 1.0;
    const fl_vd hfsq = 0.5 * f * f;
    const fl_vd s = f / (2.0 + f);
    const fl_vd z = s * s, w = z * z;
    const fl_vd zero = {0};
    const fl_vd t1 = w * fl_mla_d(fl_mla_d(zero + 1.531383769920937332e-01, w,
                                           2.222219843214978396e-01), w,
                                  3.999999999940941908e-01);
    const fl_vd t2 = z * fl_mla_d(fl_mla_d(fl_mla_d(zero + 1.479819860511658591e-01, w,
                                                    1.818357216161805012e-01), w,
                                           2.857142874366239149e-01), w,
                                  6.666666666666735130e-01);
    return fl_fma_d(k, zero + FL_LN2_HI,
                    (fl_fma_d(s, hfsq + (t2 + t1), k * FL_LN2_LO) - hfsq) + f);
}

/* fl_log_d: log(v) of double lanes.
 *   lanes: FL_ND;  error: 1 ulp;  valid: any v: -inf at 0, inf at inf, NaN for NaN and
 *   v < 0; a subnormal v is scaled by 2^54 first. */
FL_INLINE fl_vd fl_log_d(fl_vd v) {
    const fl_vd zero = {0};
    const fl_vl tiny = v < 2.2250738585072014e-308;
    const fl_vd r = fl_log_normal_d(fl_select_d(tiny, v * 18014398509481984.0, v));
    fl_vd out = fl_select_d(tiny, r - 54.0 * FL_LN2_HI - 54.0 * FL_LN2_LO, r);
    out = fl_select_d(v == zero, zero - INFINITY, out);
    out = fl_select_d(v < zero + INFINITY, out, v);          /* inf stays inf, NaN NaN */
    return fl_select_d(v < zero, zero + NAN, out);
}

/* fl_log1p_f64: log(1 + z) of double lanes.
 *   lanes: FL_ND;  error: 1 ulp;  valid: z >= -1 (-inf at -1; NaN and +inf pass through).
 * The rounding of 1 + z corrected: log(u) + (z - (u - 1)) / u. */
FL_INLINE fl_vd fl_log1p_f64(fl_vd z) {
    const fl_vd zero = {0};
    const fl_vd u = z + 1.0;
    fl_vd r = fl_log_normal_d(u) + (z - (u - 1.0)) / u;
    r = fl_select_d(u == zero, zero - INFINITY, r);
    return fl_select_d(u == zero + INFINITY, u, r);
}

/* fl_log1p_given_d: log(1 + u) of double lanes, given inv = 1 / (1 + u) (rounded).
 *   lanes: FL_ND;  error: 1 ulp;  valid: -1 <= u <= 1, or NaN.
 * The log of the rounded w = 1 + u plus its rounding error (exact, Fast2Sum) over w. */
FL_INLINE fl_vd fl_log1p_given_d(fl_vd u, fl_vd inv) {
    const fl_vd zero = {0};
    const fl_vd w = 1.0 + u;
    const fl_vd r = fl_log_normal_d(w) + (u - (w - 1.0)) * inv;
    return fl_select_d(w == zero, zero - INFINITY, r);
}

/* fl_log1p_1: log(1 + z) of one double, fl_log1p_f64's lane 0 (a row's log S, on the row's
 * critical path, where the C library's scalar log1p is slow).
 *   error: 1 ulp;  valid: z >= -1. */
FL_INLINE double fl_log1p_1(double z) {
    const fl_vd zero = {0};
    return fl_log1p_f64(zero + z)[0];
}

/* fl_log1p_n: z[i] <- log1p(z[i]) for i < n, a vector at a time, each the same bits as
 * fl_log1p_1. */
FL_INLINE void fl_log1p_n(double* z, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i += FL_ND) {
        const ptrdiff_t m = n - i < FL_ND ? n - i : FL_ND;
        fl_store_d_f64(z + i, fl_log1p_f64(fl_load_d_f64(z + i, m)), m);
    }
}

/* fl_logf_parts: the parts of log(u) of float lanes, u = 2^k m: returns log(1 + f) less its
 * leading term f (Cephes' logf polynomial), and f and k.
 *   lanes: FL_NF;  error: 1 ulp once assembled as (f + r) + k ln2;  valid: positive
 *   normal u. */
FL_INLINE fl_vf fl_logf_parts(fl_vf u, fl_vf* f_out, fl_vf* k_out) {
    const fl_vi k = (fl_vi)((fl_vui)u - 0x3f3504f3u) >> 23;
    const fl_vf f = (fl_vf)((fl_vui)u - ((fl_vui)k << 23)) - 1.0f;
    const fl_vf zero = {0};
    const fl_vf f2 = f * f;
    fl_vf p = fl_mla_f(zero + 7.0376836292e-2f, f, -1.1514610310e-1f);
    p = fl_mla_f(p, f, 1.1676998740e-1f);
    p = fl_mla_f(p, f, -1.2420140846e-1f);
    p = fl_mla_f(p, f, 1.4249322787e-1f);
    p = fl_mla_f(p, f, -1.6668057665e-1f);
    p = fl_mla_f(p, f, 2.0000714765e-1f);
    p = fl_mla_f(p, f, -2.4999993993e-1f);
    p = fl_mla_f(p, f, 3.3333331174e-1f);
    *f_out = f;
    *k_out = __builtin_convertvector(k, fl_vf);
    return fl_fma_f(f2 * f, p, zero - 0.5f * f2);
}

/* fl_log1p_f32: log(1 + z) of float lanes.
 *   lanes: FL_NF;  error: 2 ulp;  valid: z >= -1 (-inf at -1, NaN and +inf pass through).
 * fl_logf_parts with the rounding of 1 + z corrected. */
FL_INLINE fl_vf fl_log1p_f32(fl_vf z) {
    const fl_vf zero = {0};
    const fl_vf u = z + 1.0f;
    fl_vf f, k;
    fl_vf r = fl_logf_parts(u, &f, &k);      /* sets f and k: a statement of its own */
    r = fl_fma_f(k, zero - 2.12194440e-4f, r);
    r = r + (z - (u - 1.0f)) / u;
    r = fl_fma_f(k, zero + 0.693359375f, f + r);
    const fl_vi finite = (u > zero) & (u < zero + INFINITY);
    return fl_select_f(finite, r, fl_select_f(u == zero, zero - INFINITY, u));
}

/* fl_log1p_unit_f: log(1 + e) of float lanes, without a logarithm.
 *   lanes: FL_NF;  error: 1.0 ulp with FMA, 1.4 without (every float e checked);  valid:
 *   e in [0, 1], or NaN (log1p(0) = 0).
 * e + e h(2e - 1), h a degree-10 polynomial fitted at Chebyshev nodes to log1p(e)/e - 1,
 * which has no singularity closer than e = -1. */
FL_INLINE fl_vf fl_log1p_unit_f(fl_vf e) {
    const fl_vf zero = {0};
    const fl_vf s = fl_mla_f(zero + 2.0f, e, -1.0f);
    fl_vf h = fl_mla_f(zero + 1.989932116e-06f, s, -6.360114185e-06f);
    h = fl_mla_f(h, s, 1.554648952e-05f);
    h = fl_mla_f(h, s, -5.267939923e-05f);
    h = fl_mla_f(h, s, 1.852294808e-04f);
    h = fl_mla_f(h, s, -6.428624620e-04f);
    h = fl_mla_f(h, s, 2.288162941e-03f);
    h = fl_mla_f(h, s, -8.460951038e-03f);
    h = fl_mla_f(h, s, 3.315244615e-02f);
    h = fl_mla_f(h, s, -1.442635506e-01f);
    h = fl_mla_f(h, s, -1.890697777e-01f);
    return fl_fma_f(e, h, e);
}

/* fl_log_unit_f: log(p) of float lanes.
 *   lanes: FL_NF;  error: 1 ulp;  valid: p in [0, 1] or NaN (-inf at 0; a subnormal p is
 *   scaled by 2^24 first). */
FL_INLINE fl_vf fl_log_unit_f(fl_vf p) {
    const fl_vf zero = {0};
    const fl_vi tiny = p < 1.17549435e-38f;
    const fl_vf u = fl_select_f(tiny, p * 16777216.0f, p);
    fl_vf f, k;
    fl_vf r = fl_logf_parts(u, &f, &k);
    k = k - fl_select_f(tiny, zero + 24.0f, zero);
    r = fl_fma_f(k, zero + 0.693359375f, f + fl_fma_f(k, zero - 2.12194440e-4f, r));
    r = fl_select_f(p == zero, zero - INFINITY, r);
    return fl_select_f(p == p, r, p);                 /* NaN stays NaN */
}

/* fl_log1m_unit_f: log(1 - p) of float lanes.
 *   lanes: FL_NF;  error: 1 ulp;  valid: p in [0, 1] or NaN (-inf at 1).
 * u = 1 - p rounded, and the error of that difference (exact, Fast2Sum) over u added: u
 * is 1 - a for a in [0, 1/2) where the error is not 0, so 1/u = 1 + a + a^2 + ... is
 * taken as 1 + a (1 + a), within a^3. */
FL_INLINE fl_vf fl_log1m_unit_f(fl_vf p) {
    const fl_vf zero = {0};
    const fl_vf u = 1.0f - p;
    const fl_vf a = 1.0f - u;                        /* exact: u in [1/2, 1] or 0 */
    const fl_vf err = (zero - p) - (u - 1.0f);       /* exact */
    fl_vf f, k;
    fl_vf r = fl_logf_parts(fl_select_f(u == zero, zero + 1.0f, u), &f, &k);
    r = fl_fma_f(k, zero - 2.12194440e-4f, r);
    r = fl_fma_f(err, fl_fma_f(a, 1.0f + a, zero + 1.0f), r);
    r = fl_fma_f(k, zero + 0.693359375f, f + r);
    return fl_select_f(u == zero, zero - INFINITY, r);   /* NaN p: NaN through err */
}

/* fl_log_either_f: log(p) where m is set, log(1 - p) elsewhere, of float lanes.
 *   lanes: FL_NF;  error: 1 ulp;  valid: p in [0, 1] or NaN.
 * The operations of fl_log_unit_f and fl_log1m_unit_f on each side (the same bits), in
 * one evaluation of the logarithm. */
FL_INLINE fl_vf fl_log_either_f(fl_vf p, fl_vi m) {
    const fl_vf zero = {0};
    const fl_vf q = 1.0f - p;
    const fl_vf u = fl_select_f(m, p, q);
    const fl_vf a = 1.0f - u;
    const fl_vf err = fl_select_f(m, zero, (zero - p) - (q - 1.0f));
    const fl_vi tiny = u < 1.17549435e-38f;          /* subnormal p, or 0 */
    fl_vf f, k;
    fl_vf r = fl_logf_parts(fl_select_f(tiny, u * 16777216.0f, u), &f, &k);
    k = k - fl_select_f(tiny & m, zero + 24.0f, zero);
    r = fl_fma_f(k, zero - 2.12194440e-4f, r);
    r = fl_fma_f(err, fl_fma_f(a, 1.0f + a, zero + 1.0f), r);
    r = fl_fma_f(k, zero + 0.693359375f, f + r);
    r = fl_select_f(u == zero, zero - INFINITY, r);
    return fl_select_f(p == p, r, p);                 /* NaN stays NaN */
}

#endif
