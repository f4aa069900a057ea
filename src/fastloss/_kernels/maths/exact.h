/* Error-free differences: x - m carried exactly as an unevaluated sum of two floats.
 *
 * A float row's exponentials exp(x - max) take x - max as d + lo (d = fl(x - max), lo its
 * rounding error): rounding the argument would cost |x - max| / 2 ulps of the result, and
 * rows of logits 1e4 apart would lose everything (Ogita, Rump and Oishi's TwoSum; Dekker's
 * Fast2Sum where the larger operand is known).
 */
#ifndef FL_MATHS_EXACT_H
#define FL_MATHS_EXACT_H

#include "../simd/vec.h"

/* How fl_shift_f finds the rounding error of x - sub: TwoSum (6 operations) for any x,
 * or Fast2Sum (3), exact where the operand of the larger exponent is known: sub's (every x
 * of the row below 2^(e + 1) in magnitude, sub in [2^e, 2^(e + 1))) or x's (sub <= 0, so
 * |x| >= |sub|). All three give the same bits where they apply. */
enum { FL_SHIFT_ANY, FL_SHIFT_SUB_WIDER, FL_SHIFT_X_WIDER };

/* (x - sub) s as d + lo, with d = fl(x - sub) and lo its rounding error, times s (the
 * product by s != 1 rounds once more). */
FL_INLINE fl_vf fl_shift_f(fl_vf x, float sub, float s, fl_vf* lo, int kind) {
    const fl_vf d = x - sub;
    if (kind == FL_SHIFT_SUB_WIDER) {
        *lo = (x - (d + sub)) * s;
    } else if (kind == FL_SHIFT_X_WIDER) {
        *lo = (-sub - (d - x)) * s;
    } else {
        const fl_vf x_seen = d + sub, sub_seen = x_seen - d;
        *lo = ((x - x_seen) + (sub_seen - sub)) * s;
    }
    return d * s;
}

/* The subtraction fl_shift_f may use for a row of max sub (a float) and least element
 * lowest (-inf where unknown). */
static inline int fl_shift_kind(float sub, double lowest) {
    if (sub <= 0.0f) return FL_SHIFT_X_WIDER;
    /* 2^e <= sub (0 for a subnormal sub: then never) from the exponent's bits */
    uint32_t bits;
    memcpy(&bits, &sub, sizeof bits);
    bits &= 0x7f800000u;
    float power;
    memcpy(&power, &bits, sizeof power);
    if (sub < INFINITY && lowest > -2.0 * power) return FL_SHIFT_SUB_WIDER;
    return FL_SHIFT_ANY;
}

/* (x - m) - log_sum lane by lane, x - m exact (float lanes: TwoSum). */
FL_INLINE fl_vf fl_sub_exact_f32(fl_vf x, fl_vf m, fl_vf log_sum) {
    const fl_vf d = x - m;
    const fl_vf x_seen = d + m, m_seen = x_seen - d;
    const fl_vf lo = (x - x_seen) + (m_seen - m);
    const fl_vf zero = {0};
    /* lo is NaN where x is -inf (d is -inf all the same) */
    return (d - log_sum) + fl_select_f(lo == lo, lo, zero);
}
FL_INLINE fl_vd fl_sub_exact_f64(fl_vd x, fl_vd m, fl_vd log_sum) {
    return (x - m) - log_sum;
}

#endif
