/* The elementwise losses: binary cross-entropy from probabilities or from logits, the
 * Kullback-Leibler divergence and the sigmoid focal loss, each with its derivative, over one block of at most
 * FL_EW_BLOCK elements (the driver: engine/elementwise_t.h). Each loss is its two stage
 * functions: (a) the transcendental functions of a vector, (b) the term and the derivative
 * from them. The AVX2 and AVX-512 builds fuse the multiply-adds that the maths names, so
 * the last bits of a result may differ from the baseline build's (each is within the
 * accuracy below).
 *
 * Two stages per chunk of FL_EW_CHUNK elements: (a) the transcendental functions of each
 * vector into a buffer in L1, (b) the rest. One fused loop is half as fast: the long
 * dependency chains of exp and log fill the out-of-order window.
 *
 * Order of the block sum. Element i of a block is added to accumulator i % 16 (16 double
 * lanes, as many vectors as the width needs), in order; the 16 accumulators are then added
 * in a fixed tree. The order depends on neither the vector width nor the thread count. The
 * unused lanes of the last, partial group (NaN) add -0.0, which changes no sum. The terms
 * do not depend on whether the derivative is stored.
 *
 * Precision. float64 is computed in double, exp and log within about 1 ulp. float32 is
 * computed in float where the error analysis allows, in double where a result cancels;
 * every float32 loss and derivative is within 4 ulps of the exact value (plus 16 float64
 * ulps of its parts where it cancels, as the tests take the float64 reference):
 * - BCE with logits: e = exp(-|x|), q = e / (1 + e) and log1p(e) in float. Without
 *   pos_weight or label smoothing, the loss (1 - t) x or -t x, plus log1p(e), and the
 *   derivative (1 - t) - q or q - t, in float: for targets 0 and 1, within 1.9 and 2.4 ulps
 *   for every float x (checked exhaustively). For other targets the derivative may cancel:
 *   where a bound of its error exceeds 3.4 ulps the lane takes e in double. With options,
 *   the derivative in double from the float e (within 2.4 units of rounding of q), e in
 *   double where |derivative| < L q / 1.4.
 * - BCE from probabilities: two non-negative parts, log p and log(1 - p) within 1 ulp,
 *   and the derivative in float: within 2.3 and 2.5 ulps (exhaustive over p for a few y).
 * - kl_div: p (log p - x) cancels where x is close to log p: log p is assembled in double
 *   from float parts, within 0.08 float units of rounding (absolute), and taken in double
 *   where |log p - x| < FL_EW_KL_CANCEL. With log_target, exp(log p) in double.
 * - sigmoid focal loss: in double lanes for both types (fl_ew_focal_d).
 * Terms and derivatives are weighted and scaled in double and rounded once.
 */
#ifndef FL_LOSSES_ELEMENTWISE_H
#define FL_LOSSES_ELEMENTWISE_H

#include "../maths/log.h"
#include "elementwise_spec.h"

#define FL_EW_GD (FL_EW_GROUP / FL_ND)      /* double vectors per group */


/* -|v|, by setting the sign bit (NaN stays NaN). */
FL_INLINE fl_vd fl_ew_neg_abs_d(fl_vd v) {
    return (fl_vd)((fl_vu)v | (((fl_vu){0}) + 0x8000000000000000ULL));
}


/* max(v, -100) that keeps NaN, as PyTorch's std::max. */
FL_INLINE fl_vf fl_ew_clamp_log_f(fl_vf v) {
    const fl_vf floor = ((fl_vf){0}) - 100.0f;
    return fl_select_f(v < floor, floor, v);
}
FL_INLINE fl_vd fl_ew_clamp_log_d(fl_vd v) {
    const fl_vd floor = ((fl_vd){0}) - 100.0;
    return fl_select_d(v < floor, floor, v);
}

/* 0, or x where x is NaN: a zero coefficient against x. */
FL_INLINE fl_vd fl_ew_zero_unless_nan(fl_vd x) {
    return fl_select_d(x != x, x, (fl_vd){0});
}

/* ---- the terms and derivatives of one vector of elements ----
 * float32: one float vector in, its two halves out as double vectors (term[h], deriv[h]),
 * unweighted. float64: one double vector. */

/* BCE with logits: (1 - t) x + L softplus(-x), derivative L sigmoid(x) - v t, with
 * L = 1 + (v - 1) t (v = pos_weight). With e = exp(-|x|), per sign of x both are sums of
 * non-negative parts:
 *   x >= 0: (1 - t) x + L log1p(e),   derivative (1 - t) - L e / (1 + e);
 *   x < 0:  -v t x + L log1p(e),      derivative L e / (1 + e) - v t. */
FL_INLINE void fl_ew_logits_tail(fl_vd x, fl_vd t, fl_vd v, int has_pw, fl_vd e, fl_vd inv,
                                 fl_vd soft, fl_vd* term, fl_vd* deriv, fl_vd* coef_q_out) {
    const fl_vd zero = {0};
    const fl_vd q = e * inv;
    const fl_vd one_t = 1.0 - t;
    fl_vd coef_q = q, coef_soft = soft, pt = t;
    if (has_pw) {
        const fl_vd coef = fl_fma_d(v - 1.0, t, zero + 1.0);
        coef_q = coef * q;
        coef_soft = coef * soft;
        pt = v * t;
    }
    const fl_vl positive = x >= zero;
    *term = fl_fma_d(fl_select_d(positive, one_t, zero - pt), x, coef_soft);
    *deriv = fl_select_d(positive, one_t - coef_q, coef_q - pt);
    *coef_q_out = coef_q;
}

/* float32, in two stages (see the driver): (a) in float, e = exp(-|x|) (within 1.2 ulp),
 * q = e / (1 + e) and log1p(e); (b) the loss and the derivative. */
FL_INLINE void fl_ew_logits_a(fl_vf x, fl_vf* stage) {
    const fl_vf a = (fl_vf)((fl_vui)x | (((fl_vui){0}) + 0x80000000u));     /* -|x| */
    const fl_vf e = fl_exp_neg_f(a, (fl_vf){0});
    stage[0] = e;
    stage[1] = e / (1.0f + e);
    stage[2] = fl_log1p_unit_f(e);
}

/* (b) without pos_weight or label smoothing, in float: the loss max(x, 0) - x t + log1p(e)
 * as (1 - t) x or -t x, plus log1p(e), both non-negative; the derivative (1 - t) - q or
 * q - t. For a target of 0 or 1 that is within 4 ulps of the exact derivative (checked for
 * every float x). For other targets the derivative may cancel: where its error bound
 * (those of q, 3.8 units of rounding, and of 1 - t) exceeds 3.4 |derivative| units, the
 * lane takes the double path of fl_ew_logits_tail with e in double. */
FL_INLINE void fl_ew_logits_plain_b(fl_vf x, fl_vf t, const fl_vf* stage, fl_vf* term,
                                    fl_vf* deriv) {
    const fl_vf zero = {0};
    const fl_vf q = stage[1];
    const fl_vi positive = (fl_vi)x >= (fl_vi){0};       /* sign bit clear (x = -0: q - t) */
    const fl_vf r = 1.0f - t;
    *term = fl_fma_f(fl_select_f(positive, r, zero - t), x, stage[2]);
    const fl_vf d = fl_select_f(positive, r - q, q - t);
    *deriv = d;
    const fl_vi soft = (t != zero) & (t != zero + 1.0f);
    if (!fl_any_i(soft)) return;                         /* hard labels: no cancellation */
    const fl_vf abs_d = (fl_vf)((fl_vui)d & 0x7fffffffu);
    const fl_vf r_err = fl_select_f(positive & ((1.0f - r) != t), r, zero);
    const fl_vi need = soft & (abs_d * 3.4f < fl_fma_f(q, zero + 3.8f, r_err));
    if (__builtin_expect(fl_any_i(need), 0)) {
        fl_vd dd[2];
        for (int h = 0; h < 2; h++) {
            const fl_vd xd = h ? fl_widen_hi(x) : fl_widen_lo(x);
            const fl_vd td = h ? fl_widen_hi(t) : fl_widen_lo(t);
            const fl_vd ep = fl_exp_neg_d(fl_ew_neg_abs_d(xd));
            fl_vd tp, cq;
            fl_ew_logits_tail(xd, td, (fl_vd){0}, 0, ep, 1.0 / (1.0 + ep), (fl_vd){0}, &tp,
                              &dd[h], &cq);
        }
        *deriv = fl_select_f(need, fl_narrow(dd[0], dd[1]), d);
    }
}

FL_INLINE void fl_ew_logits_b(fl_vf xf, fl_vf yf, fl_vf vf, int has_pw, int smooth,
                              double alpha, double beta, const fl_vf* stage, fl_vd* term,
                              fl_vd* deriv) {
    const fl_vd zero = {0};
    fl_vl need[2];
    fl_vd x[2], t[2], v[2] = {{0}};
    for (int h = 0; h < 2; h++) {
        x[h] = h ? fl_widen_hi(xf) : fl_widen_lo(xf);
        t[h] = h ? fl_widen_hi(yf) : fl_widen_lo(yf);
        if (smooth) t[h] = fl_fma_d(zero + alpha, t[h], zero + beta);
        if (has_pw) v[h] = h ? fl_widen_hi(vf) : fl_widen_lo(vf);
        const fl_vd ed = h ? fl_widen_hi(stage[0]) : fl_widen_lo(stage[0]);
        const fl_vd q0 = h ? fl_widen_hi(stage[1]) : fl_widen_lo(stage[1]);
        const fl_vd inv0 = 1.0 - q0;
        const fl_vd inv1 = inv0 * fl_fma_d(zero - (1.0 + ed), inv0, zero + 2.0); /* Newton */
        fl_vd coef_q;
        fl_ew_logits_tail(x[h], t[h], v[h], has_pw, ed, inv1,
                          h ? fl_widen_hi(stage[2]) : fl_widen_lo(stage[2]), &term[h],
                          &deriv[h], &coef_q);
        const fl_vd mag = fl_select_d(deriv[h] < 0.0, -deriv[h], deriv[h]);
        need[h] = mag * 1.4 < coef_q;
    }
    if (__builtin_expect(fl_any_l(need[0] | need[1]), 0)) {
        for (int h = 0; h < 2; h++) {
            const fl_vd ep = fl_exp_neg_d(fl_ew_neg_abs_d(x[h]));
            fl_vd tp, dp, cq;
            fl_ew_logits_tail(x[h], t[h], v[h], has_pw, ep, 1.0 / (1.0 + ep), (fl_vd){0},
                              &tp, &dp, &cq);
            deriv[h] = fl_select_d(need[h], dp, deriv[h]);
        }
    }
}

/* float64: (a) e = exp(-|x|), 1 / (1 + e), log1p(e); (b) the rest. */
FL_INLINE void fl_ew_logits_a64(fl_vd x, fl_vd* stage) {
    const fl_vd e = fl_exp_neg_d(fl_ew_neg_abs_d(x));
    const fl_vd inv = 1.0 / (1.0 + e);
    stage[0] = e;
    stage[1] = inv;
    stage[2] = fl_log1p_given_d(e, inv);
}

FL_INLINE void fl_ew_logits_b64(fl_vd x, fl_vd t, fl_vd v, int has_pw, int smooth,
                                double alpha, double beta, const fl_vd* stage, fl_vd* term,
                                fl_vd* deriv) {
    const fl_vd zero = {0};
    if (smooth) t = fl_fma_d(zero + alpha, t, zero + beta);
    fl_vd coef_q;
    fl_ew_logits_tail(x, t, v, has_pw, stage[0], stage[1], stage[2], term, deriv, &coef_q);
}

/* BCE from probabilities: -[y max(log p, -100) + (1 - y) max(log(1 - p), -100)], and its
 * derivative (p - y) / max(p (1 - p), eps) as PyTorch's backward computes it. */
FL_INLINE void fl_ew_bce_deriv(fl_vd p, fl_vd y, fl_vd log_p, fl_vd log_q, fl_vd* term,
                               fl_vd* deriv) {
    const fl_vd zero = {0};
    const fl_vd den = p * (1.0 - p);
    *deriv = (p - y) / fl_select_d(den < zero + FL_EW_PROB_EPS, zero + FL_EW_PROB_EPS, den);
    *term = fl_fma_d(y - 1.0, log_q, zero - y * log_p);
}

/* float32 (a): log p and log(1 - p), clamped. For a vector of hard labels only the one
 * that counts (log p against 1, log(1 - p) against 0) is computed; the other, whose
 * coefficient is 0, is replaced by -1 or 0 as it is negative or 0, so that the product
 * has its sign and the loss the same bits. */
FL_INLINE void fl_ew_bce_a(fl_vf p, fl_vf y, fl_vf* stage) {
    const fl_vf zero = {0};
    const fl_vi one = y == zero + 1.0f;
    if (!fl_any_i(~(one | (y == zero)))) {
        const fl_vf log_v = fl_ew_clamp_log_f(fl_log_either_f(p, one));
        stage[0] = fl_select_f(one, log_v, fl_select_f(p < zero + 1.0f, zero - 1.0f, zero));
        stage[1] = fl_select_f(one, fl_select_f(p > zero, zero - 1.0f, zero), log_v);
        return;
    }
    stage[0] = fl_ew_clamp_log_f(fl_log_unit_f(p));
    stage[1] = fl_ew_clamp_log_f(fl_log1m_unit_f(p));
}

/* float32 (b), in float: the loss adds two non-negative parts, each within about 1 ulp
 * (the logs) plus three roundings; the derivative is four roundings from exact. */
FL_INLINE void fl_ew_bce_b(fl_vf p, fl_vf y, const fl_vf* stage, fl_vf* term,
                           fl_vf* deriv) {
    const fl_vf zero = {0};
    const fl_vf den = p * (1.0f - p);
    const fl_vf eps = zero + (float)FL_EW_PROB_EPS;
    *deriv = (p - y) / fl_select_f(den < eps, eps, den);
    *term = fl_fma_f(y - 1.0f, stage[1], zero - y * stage[0]);
}

FL_INLINE void fl_ew_bce_a64(fl_vd p, fl_vd* stage) {
    stage[0] = fl_ew_clamp_log_d(fl_log_d(p));
    stage[1] = fl_ew_clamp_log_d(fl_log1p_given_d(-p, 1.0 / (1.0 - p)));
}

/* kl_div: p (log p - x), exactly 0 where p = 0 (unless x is NaN); derivative -p. log p of
 * a float p needs no subnormal or zero case (its double is normal, and p = 0 is selected
 * away), only inf. */
FL_INLINE void fl_ew_kl_finish(fl_vd x, fl_vd p, fl_vd log_p, fl_vd* term, fl_vd* deriv) {
    const fl_vd zero = {0};
    *term = fl_select_d(p == zero, fl_ew_zero_unless_nan(x), p * (log_p - x));
    *deriv = -p;                   /* -0.0 where p = 0, as PyTorch */
}

/* float32: log p to 0.08 float rounding units (absolute; 2^-24), in two stages.
 * (a) in float: p = 2^k (1 + f) with 1 + f in [sqrt(2)/2, sqrt(2)) (subnormals scaled by
 * 2^24), s = f / (2 + f) and T = s (f^2/2 + R(s^2)), fdlibm's logf terms;
 * (b) in double: log p = k ln2 + f - f^2/2 + T, every part but T exact or within 1e-16.
 * p (log p - x) then has that absolute error times p; where |log p - x| is under
 * FL_EW_KL_CANCEL, where that could exceed 3.4 float ulps of the term, the lane takes log p
 * in double. */
#define FL_EW_KL_CANCEL 0.03
FL_INLINE void fl_ew_kl_a(fl_vf p, fl_vf* stage) {
    const fl_vf zero = {0};
    const fl_vi tiny = p < 1.17549435e-38f;
    const fl_vf u = fl_select_f(tiny, p * 16777216.0f, p);
    /* unsigned bit arithmetic, as in fl_logf_parts */
    const fl_vi k = (fl_vi)((fl_vui)u - 0x3f3504f3u) >> 23;
    const fl_vf f = (fl_vf)((fl_vui)u - ((fl_vui)k << 23)) - 1.0f;
    const fl_vf s = f / (2.0f + f);
    const fl_vf z = s * s, w = z * z;
    const fl_vf t1 = w * fl_mla_f(zero + 0.24279078841f, w, 0.40000972152f);
    const fl_vf t2 = z * fl_mla_f(zero + 0.28498786688f, w, 0.66666662693f);
    stage[0] = f;
    stage[1] = s * (0.5f * f * f + (t2 + t1));
    stage[2] = __builtin_convertvector(k, fl_vf) - fl_select_f(tiny, zero + 24.0f, zero);
}

FL_INLINE void fl_ew_kl_b(fl_vf xf, fl_vf pf, const fl_vf* stage, fl_vd* term,
                          fl_vd* deriv) {
    const fl_vd zero = {0};
    fl_vl need[2];
    fl_vd p[2], x[2];
    for (int h = 0; h < 2; h++) {
        p[h] = h ? fl_widen_hi(pf) : fl_widen_lo(pf);
        x[h] = h ? fl_widen_hi(xf) : fl_widen_lo(xf);
        const fl_vd f = h ? fl_widen_hi(stage[0]) : fl_widen_lo(stage[0]);
        const fl_vd t = h ? fl_widen_hi(stage[1]) : fl_widen_lo(stage[1]);
        const fl_vd k = h ? fl_widen_hi(stage[2]) : fl_widen_lo(stage[2]);
        fl_vd log_p = ((k * 0.6931471805599453 + f) - 0.5 * (f * f)) + t;
        log_p = fl_select_d(p[h] < zero + INFINITY, log_p, p[h]);     /* inf, NaN */
        const fl_vd diff = log_p - x[h];
        const fl_vd mag = (fl_vd)((fl_vu)diff & 0x7fffffffffffffffULL);
        need[h] = (mag < zero + FL_EW_KL_CANCEL) & (p[h] != zero);
        fl_ew_kl_finish(x[h], p[h], log_p, &term[h], &deriv[h]);
    }
    if (__builtin_expect(fl_any_l(need[0] | need[1]), 0)) {
        for (int h = 0; h < 2; h++) {
            fl_vd tp, dp;
            fl_ew_kl_finish(x[h], p[h], fl_log_normal_d(p[h]), &tp, &dp);
            term[h] = fl_select_d(need[h], tp, term[h]);
        }
    }
}

/* kl_div with log_target: exp(log_p) (log_p - x), exactly 0 where exp(log_p) = 0 (unless
 * x is NaN); derivative -exp(log_p). Stage (a) takes p = exp(log_p) in double for either
 * dtype (the float32 term p (log_p - x) and its derivative -p need p beyond float's 2
 * ulps); (b) the rest. */
FL_INLINE void fl_ew_log_kl_b64(fl_vd x, fl_vd log_p, fl_vd p, fl_vd* term, fl_vd* deriv) {
    *term = fl_select_d(p == (fl_vd){0}, fl_ew_zero_unless_nan(x), p * (log_p - x));
    *deriv = -p;                   /* -0.0 where p = 0, as PyTorch */
}

/* Sigmoid focal loss (torchvision's sigmoid_focal_loss), in double lanes: with p =
 * sigmoid(x), the BCE with logits c = (1 - t) x + log1p(e) (x >= 0) or -t x + log1p(e)
 * (x < 0), e = exp(-|x|), and m = 1 - p_t = p (1 - t) + t (1 - p),
 *   term  = a_t m^g c,   a_t = a t + (1 - a)(1 - t)  (1 where a < 0),
 *   deriv = a_t [m^g (p - t) + g m^(g - 1) c (1 - 2 t) p (1 - p)].
 * p and 1 - p are e / (1 + e) and 1 / (1 + e), as x's sign says, so m is a sum of
 * non-negative parts for t in [0, 1]: nothing cancels where m is tiny (confident rows),
 * and for hard targets the two parts of deriv share a sign. m^g is exp(g log m), m m for
 * g = 2 (torchvision's default: exact but for one rounding), 1 for g = 0; where m = 0 the
 * second part of deriv is its limit, 0. */
FL_INLINE void fl_ew_focal_d(fl_vd x, fl_vd t, const fl_ew_opts* o, fl_vd* term,
                             fl_vd* deriv) {
    const fl_vd zero = {0}, one = zero + 1.0;
    const double a = o->focal_alpha, g = o->focal_gamma;
    const fl_vd e = fl_exp_neg_d(fl_ew_neg_abs_d(x));
    const fl_vd inv = 1.0 / (1.0 + e);
    const fl_vd q = e * inv;                            /* sigmoid(-|x|) */
    const fl_vl positive = x >= zero;
    const fl_vd p = fl_select_d(positive, inv, q), p_c = fl_select_d(positive, q, inv);
    const fl_vd one_t = 1.0 - t;
    const fl_vd bce = fl_fma_d(fl_select_d(positive, one_t, zero - t), x,
                               fl_log1p_given_d(e, inv));
    const fl_vd m = fl_fma_d(p, one_t, t * p_c);
    fl_vd m_g = one, m_g1 = zero;                       /* m^g and g m^(g - 1) */
    if (g == 2.0) {
        m_g = m * m, m_g1 = m + m;
    } else if (g == 1.0) {
        m_g = m, m_g1 = one;
    } else if (g != 0.0) {
        const fl_vl nonzero = m > zero;
        const fl_vd m_safe = fl_select_d(nonzero, m, one);
        const fl_vd pow_g1 = fl_exp_d((g - 1.0) * fl_log_d(m_safe));
        m_g = fl_select_d(nonzero, pow_g1 * m_safe, zero);
        m_g1 = fl_select_d(nonzero, g * pow_g1, zero);
    }
    const fl_vd d_bce = fl_select_d(positive, one_t - q, q - t);     /* p - t */
    const fl_vd d_m = (1.0 - (t + t)) * (p * p_c);
    /* g m^(g - 1) c dm: 0 where m = 0 (also where c is infinite: x = -inf against t = 0) */
    const fl_vd focus = fl_select_d(m_g1 != zero, m_g1 * bce * d_m, zero);
    fl_vd d = fl_fma_d(m_g, d_bce, focus), l = m_g * bce;
    if (a >= 0.0) {
        const fl_vd a_t = fl_fma_d(zero + a, t, (1.0 - a) * one_t);
        d = a_t * d, l = a_t * l;
    }
    *term = l;
    *deriv = d;
}

/* n (<= FL_EW_GROUP) values of a periodic array from index phase on, wrapping at period,
 * into buf. */
FL_INLINE const float* fl_ew_wrap_f32(const float* w, ptrdiff_t period, ptrdiff_t phase,
                                      float* buf) {
    if (phase + FL_EW_GROUP <= period) return w + phase;
    for (int k = 0; k < FL_EW_GROUP; k++) {
        buf[k] = w[phase];
        if (++phase == period) phase = 0;
    }
    return buf;
}
FL_INLINE const double* fl_ew_wrap_f64(const double* w, ptrdiff_t period, ptrdiff_t phase,
                                       double* buf) {
    if (phase + FL_EW_GROUP <= period) return w + phase;
    for (int k = 0; k < FL_EW_GROUP; k++) {
        buf[k] = w[phase];
        if (++phase == period) phase = 0;
    }
    return buf;
}

/* The 16 lanes of the accumulators, added in a fixed tree. */
FL_INLINE double fl_ew_lanes_sum(const fl_vd* acc) {
    double v[FL_EW_GROUP];
    memcpy(v, acc, sizeof v);
    for (int width = FL_EW_GROUP / 2; width >= 1; width /= 2)
        for (int k = 0; k < width; k++) v[k] = v[2 * k] + v[2 * k + 1];
    return v[0];
}

/* The two stages of one vector (stage: FL_EW_STAGES vectors of either type, the
 * same size). (a) the transcendental functions; (b) the rest, to double term and
 * derivative vectors (two for a float vector, its halves; one for a double vector). */
#define FL_EW_STAGES 3

FL_INLINE void fl_ew_a_f32(const int kind, fl_vf x, fl_vf y, fl_vf* st) {
    if (kind == FL_EW_LOGITS) fl_ew_logits_a(x, st);
    else if (kind == FL_EW_BCE) fl_ew_bce_a(x, y, st);
    else if (kind == FL_EW_KL) fl_ew_kl_a(y, st);
    else if (kind == FL_EW_FOCAL) (void)st;            /* all in stage (b) */
    else {
        st[0] = (fl_vf)fl_exp_d(fl_widen_lo(y));
        st[1] = (fl_vf)fl_exp_d(fl_widen_hi(y));
    }
}

/* (b) returns 1 where the derivative comes in float, in *dfloat (BCE, BCE with logits
 * without options, kl_div), else 0 and the derivative in deriv[]. */
FL_INLINE int fl_ew_b_f32(const int kind, const int has_pw, const int smooth,
                          const fl_ew_opts* o, fl_vf x, fl_vf y, fl_vf v, const fl_vf* st,
                          fl_vd* term, fl_vd* deriv, fl_vf* dfloat) {
    const double alpha = o->alpha, beta = o->beta;
    if ((kind == FL_EW_LOGITS && !has_pw && !smooth) || kind == FL_EW_BCE) {
        fl_vf tf;
        if (kind == FL_EW_BCE) fl_ew_bce_b(x, y, st, &tf, dfloat);
        else fl_ew_logits_plain_b(x, y, st, &tf, dfloat);
        term[0] = fl_widen_lo(tf), term[1] = fl_widen_hi(tf);
        return 1;
    }
    if (kind == FL_EW_LOGITS) fl_ew_logits_b(x, y, v, has_pw, smooth, alpha, beta, st, term,
                                             deriv);
    else if (kind == FL_EW_KL) {
        fl_ew_kl_b(x, y, st, term, deriv);
        *dfloat = -y;                                   /* -p, exact in float */
        return 1;
    }
    else if (kind == FL_EW_FOCAL) {
        fl_ew_focal_d(fl_widen_lo(x), fl_widen_lo(y), o, &term[0], &deriv[0]);
        fl_ew_focal_d(fl_widen_hi(x), fl_widen_hi(y), o, &term[1], &deriv[1]);
    }
    else {
        fl_ew_log_kl_b64(fl_widen_lo(x), fl_widen_lo(y), (fl_vd)st[0], &term[0], &deriv[0]);
        fl_ew_log_kl_b64(fl_widen_hi(x), fl_widen_hi(y), (fl_vd)st[1], &term[1], &deriv[1]);
    }
    return 0;
}

FL_INLINE void fl_ew_a_f64(const int kind, fl_vd x, fl_vd y, fl_vd* st) {
    if (kind == FL_EW_LOGITS) fl_ew_logits_a64(x, st);
    else if (kind == FL_EW_BCE) fl_ew_bce_a64(x, st);
    else if (kind == FL_EW_KL) st[0] = fl_log_d(y);
    else if (kind == FL_EW_FOCAL) (void)st;
    else st[0] = fl_exp_d(y);
}

FL_INLINE int fl_ew_b_f64(const int kind, const int has_pw, const int smooth,
                          const fl_ew_opts* o, fl_vd x, fl_vd y, fl_vd v, const fl_vd* st,
                          fl_vd* term, fl_vd* deriv, fl_vd* dfloat) {
    (void)dfloat;
    if (kind == FL_EW_LOGITS) fl_ew_logits_b64(x, y, v, has_pw, smooth, o->alpha, o->beta, st,
                                               term, deriv);
    else if (kind == FL_EW_FOCAL) fl_ew_focal_d(x, y, o, term, deriv);
    else if (kind == FL_EW_BCE) fl_ew_bce_deriv(x, y, st[0], st[1], term, deriv);
    else if (kind == FL_EW_KL) fl_ew_kl_finish(x, y, st[0], term, deriv);
    else fl_ew_log_kl_b64(x, y, st[0], term, deriv);
    return 0;
}

/* d * s for a float vector d and a double s = hi + lo (two floats), rounded once to float
 * but for a tie within 2^-40 of it: hi d carried exactly as p + e by a fused
 * multiply-subtract. Where FMA exists; elsewhere the product goes through double. */
#if defined(__FMA__) && (defined(__AVX512F__) || defined(__AVX2__))
#define FL_EW_FLOAT_SCALE 1
FL_INLINE fl_vf fl_ew_scale_f32(fl_vf d, float hi, float lo) {
    const fl_vf zero = {0};
    const fl_vf p = d * hi;
    const fl_vf e = fl_fma_f(d, zero + hi, zero - p);        /* exact: d hi - p */
    return p + fl_fma_f(d, zero + lo, e);
}
#else
#define FL_EW_FLOAT_SCALE 0
FL_INLINE fl_vf fl_ew_scale_f32(fl_vf d, float hi, float lo) {
    (void)hi, (void)lo;
    return d;
}
#endif

/* Elements per chunk of the two stages. */
#define FL_EW_CHUNK 256

/* The driver of one dtype (SUFFIX, T, its vector VT and lanes NL, stage functions, select
 * SEL, halves H: double vectors per VT).
 *
 * fl_ew_groups_SUFFIX: `groups` whole groups, of which the last has `valid` elements that
 * count (the others are padding, NaN: their terms add -0.0 and their values no extreme).
 * Adds the weighted terms to acc (lane i % 16 of element i) and, where rng is not NULL,
 * lowers/raises rng[0], rng[1] by the values of x and rng[2], rng[3] by those of y. w and
 * pw: one period of the weights, from *w_phase and *pw_phase on (both advanced).
 *
 * A chunk of elements goes through two loops: (a) the transcendental functions, into a
 * buffer in L1; (b) the rest. Fused into one loop, the long dependency chains of a vector
 * fill the out-of-order window and the loop runs at about half the speed.
 *
 * fl_ew_block_SUFFIX_impl: one block, n elements (x, y, loss_out, grad_out: the block's;
 * loss_out and grad_out may be NULL; grad_out may be x), the last partial group through
 * padded copies. Returns the block's weighted sum; writes the extremes of x and y (NaN
 * skipped; +inf, -inf if none) to range_out[0:4] unless it is NULL. */
#define FL_EW_CALL(KIND, HAS_W, HAS_PW, SMOOTH)                                   \
    return FL_SFX(fl_ew_block_impl)(KIND, HAS_W, HAS_PW, SMOOTH, x, y, w, w_period,    \
                                       w_phase, pw, pw_period, pw_phase, n, loss_out,     \
                                       grad_out, range_out, o)

#define FL_EW_LOWER(lo, v) ((lo) = FL_SEL((v) < (lo), (v), (lo)))
#define FL_EW_UPPER(hi, v) ((hi) = FL_SEL((v) > (hi), (v), (hi)))

/* What the driver's loop does differently for the two types: a vector's double halves
 * (two for float, the vector itself for double), back, and the float scaling. */
FL_INLINE fl_vd fl_ew_half_f32(fl_vf v, int h) { return h ? fl_widen_hi(v) : fl_widen_lo(v); }
FL_INLINE fl_vd fl_ew_half_f64(fl_vd v, int h) { (void)h; return v; }
FL_INLINE fl_vf fl_ew_join_f32(const fl_vd* d) { return fl_narrow(d[0], d[1]); }
FL_INLINE fl_vd fl_ew_join_f64(const fl_vd* d) { return d[0]; }
FL_INLINE fl_vd fl_ew_scale_f64(fl_vd d, float hi, float lo) {
    (void)hi, (void)lo;
    return d;
}

#define FL_TEMPLATE "engine/elementwise_t.h"
#include "../each_type.h"
#undef FL_TEMPLATE

/* One block of an elementwise loss: the loss and the flags that change its loop are
 * constants at each call of fl_ew_block_impl_T (one compiled copy each). */
#define FL_TEMPLATE "losses/elementwise_block_t.h"
#include "../each_type.h"
#undef FL_TEMPLATE

#endif
