/* Exponentials, written once against the vector types of simd/vec.h.
 *
 * Each function opens with its contract: lanes, the largest error measured in units in
 * the last place (ulp) of the result, and the arguments it is valid for. All are free of
 * branches, exp(-inf) = 0 and exp(NaN) = NaN. The method throughout: x = n ln2 + r with
 * |r| <= ln2 / 2 (ln2 in two parts, Cody and Waite: n ln2_hi is exact), exp(x) = 2^n p(r)
 * with p a polynomial, the scaling by 2^n rounding a subnormal result once
 * (fl_scalef_*).
 */
#ifndef FL_MATHS_EXP_H
#define FL_MATHS_EXP_H

#include "../simd/vec.h"

#define FL_LN2_HI 6.93147180369123816490e-01    /* n * LN2_HI exact for |n| < 2^20 */
#define FL_LN2_LO 1.90821492927058770002e-10

/* exp(r) - 1 by Taylor's series from its r^8 term on, given p = the sum of the terms from
 * r^8 up divided by r^8 (1/8! where they stop at r^8). */
FL_INLINE fl_vd fl_expm1_taylor_d(fl_vd p, fl_vd r) {
    p = fl_mla_d(p, r, 1.9841269841269841e-4);
    p = fl_mla_d(p, r, 1.3888888888888889e-3);
    p = fl_mla_d(p, r, 8.3333333333333333e-3);
    p = fl_mla_d(p, r, 4.1666666666666667e-2);
    p = fl_mla_d(p, r, 1.6666666666666667e-1);
    p = fl_mla_d(p, r, 0.5);
    p = fl_mla_d(p, r, 1.0);
    return p * r;
}

/* fl_exp_poly_d: exp(x) of double lanes.
 *   lanes: FL_ND;  error: 1 ulp;  valid: -746 <= x <= 710, or NaN.
 * Taylor's polynomial of degree 13 on |r| <= ln2/2. */
FL_INLINE fl_vd fl_exp_poly_d(fl_vd x) {
    const fl_vd zero = {0};
    const double round = 6755399441055744.0;                /* 1.5 * 2^52 */
    const fl_vd t = fl_fma_d(x, zero + 1.4426950408889634, zero + round);
    const fl_vd n = t - round;
    fl_vd r = fl_fma_d(n, zero - FL_LN2_HI, x);             /* exact: ln2's high 32 bits */
    r = fl_fma_d(n, zero - FL_LN2_LO, r);
    fl_vd p = fl_mla_d(zero + 1.6059043836821613e-10, r, 2.0876756987868099e-9);
    p = fl_mla_d(p, r, 2.5052108385441718e-8);
    p = fl_mla_d(p, r, 2.7557319223985893e-7);
    p = fl_mla_d(p, r, 2.7557319223985888e-6);
    p = fl_mla_d(p, r, 2.4801587301587302e-5);
    p = fl_expm1_taylor_d(p, r) + 1.0;
    return fl_scalef_d(p, n, t);
}

/* fl_exp_range_d: exp(x) of double lanes.
 *   lanes: FL_ND;  error: 1.01 ulp;  valid: -746 <= x <= 710, or NaN.
 * Where a table of 8 doubles fits one register (AVX-512): x = (8m + k) ln2/8 + r with
 * |r| <= ln2/16, exp(x) = 2^m 2^(k/8) exp(r), exp(r) - 1 to 1e-18 by a Taylor polynomial
 * of degree 8: five multiply-adds fewer than fl_exp_poly_d. Elsewhere fl_exp_poly_d. */
FL_INLINE fl_vd fl_exp_range_d(fl_vd x) {
#if FL_HAS_PERMUTE_TABLE
    const fl_vd zero = {0};
    const double round = 6755399441055744.0;                /* 1.5 * 2^52 */
    const fl_vd table = {1.0, 1.090507732665257659207011, 1.1892071150027210667175,
                         1.296839554651009665933754, 1.414213562373095048801689,
                         1.542210825407940823612292, 1.681792830507429086062251,
                         1.834008086409342463487083};
    const fl_vd t = fl_fma_d(x, zero + 8 * 1.4426950408889634, zero + round);
    const fl_vd n = t - round;                              /* 8m + k */
    const fl_vl k = (fl_vl)t & 7;                           /* n mod 8, from t's low bits */
    fl_vd r = fl_fma_d(n, zero - FL_LN2_HI / 8, x);         /* exact: |n| < 2^14 */
    r = fl_fma_d(n, zero - FL_LN2_LO / 8, r);
    const fl_vd scale = fl_lookup8_d(table, k);
    /* 2^(k/8) exp(r), rounded once */
    const fl_vd p = fl_fma_d(fl_expm1_taylor_d(zero + 2.4801587301587302e-5, r), scale, scale);
    const fl_vd m = (n - __builtin_convertvector(k, fl_vd)) * 0.125;      /* exact */
    return fl_scalef_d(p, m, zero);
#else
    return fl_exp_poly_d(x);
#endif
}

/* fl_exp_d: exp(x) of double lanes.
 *   lanes: FL_ND;  error: 1.01 ulp;  valid: any x (0 below -746, inf above 710). */
FL_INLINE fl_vd fl_exp_d(fl_vd x) {
    const fl_vd zero = {0};
    x = fl_vmax_d(zero - 746.0, x);                         /* NaN stays NaN */
    return fl_exp_range_d(fl_select_d(x > zero + 710.0, zero + 710.0, x));
}

/* fl_exp_neg_d: exp(x) of double lanes, for the exponentials of a row relative to its max.
 *   lanes: FL_ND;  error: 1.01 ulp;  valid: x <= 710, or NaN (no overflow clamp: a fifth
 *   of the float64 exponentials' time). */
FL_INLINE fl_vd fl_exp_neg_d(fl_vd x) {
    const fl_vd zero = {0};
    return fl_exp_range_d(fl_vmax_d(zero - 746.0, x));     /* NaN stays NaN */
}

/* fl_exp_neg_f: exp(d + lo) of float lanes, the argument an unevaluated sum.
 *   lanes: FL_NF;  error: 2 ulp (0.65-0.96 2^-23 relative, by build, on every float d in
 *   [-87, 0]);  valid: d <= 64 and |lo| <= ulp(d), or NaN (lo NaN where d is -inf).
 * d is clamped where the result underflows (exp(-104) rounds to 0), and lo, where d is
 * not, joins the reduced argument: rounding d + lo would cost |d| / 2 ulps of the result.
 * A degree-6 polynomial on |r| <= ln2/2. */
FL_INLINE fl_vf fl_exp_neg_f(fl_vf d, fl_vf lo) {
    const fl_vf zero = {0};
    const float round = 12582912.0f;                         /* 1.5 * 2^23 */
    const fl_vf clamped = fl_vmax_f(zero - 104.0f, d);
    lo = fl_select_f(d == clamped, lo, zero);
    d = clamped;
    const fl_vf t = fl_fma_f(d, zero + 1.44269504f, zero + round);
    const fl_vf n = t - round;
    fl_vf r = fl_fma_f(n, zero - 0.693359375f, d);           /* ln2's high part: exact */
    r = fl_fma_f(n, zero + 2.12194440e-4f, r);
    r = r + lo;
    fl_vf p = fl_mla_f(zero + 1.38146130920354e-3f, r, 8.368709831816333e-3f);
    p = fl_mla_f(p, r, 4.1668387364721171e-2f);
    p = fl_mla_f(p, r, 1.6666520689750436e-1f);
    p = fl_mla_f(p, r, 4.9999993451691255e-1f);
    p = fl_mla_f(p, r, 1.0f);
    p = fl_mla_f(p, r, 1.0f);
    return fl_scalef_f(p, n, t);
}

/* fl_exp_1: exp(z) of one double, fl_exp_d's lane 0 (a row's target probability: libm's
 * scalar exp is several times slower, on the row's critical path).
 *   error: 1.01 ulp;  valid: any z. */
FL_INLINE double fl_exp_1(double z) {
    const fl_vd zero = {0};
    return fl_exp_d(zero + z)[0];
}

/* fl_exp_n: z[i] <- exp(z[i]) for i < n, a vector at a time, each the same bits as
 * fl_exp_1 (the rows of a batch: one call, not one per row). */
FL_INLINE void fl_exp_n(double* z, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i += FL_ND) {
        const ptrdiff_t m = n - i < FL_ND ? n - i : FL_ND;
        fl_store_d_f64(z + i, fl_exp_d(fl_load_d_f64(z + i, m)), m);
    }
}

#endif
