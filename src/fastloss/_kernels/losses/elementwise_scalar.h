/* The elementwise losses of losses/elementwise.h in plain C, for compilers without vector
 * extensions (MSVC), or with FASTLOSS_SCALAR defined (to test this file with GCC).
 *
 * Same functions, same contracts (the block sum in the same order of 16 lanes, the same
 * extremes, the same special values), one element at a time in double with libm's exp,
 * log and log1p; slower, and not bit-identical to the vector builds (within their
 * tolerances).
 */
#ifndef FL_LOSSES_ELEMENTWISE_SCALAR_H
#define FL_LOSSES_ELEMENTWISE_SCALAR_H

#include "elementwise_spec.h"

#include <math.h>
#include <stddef.h>

#define FL_EW_LANES 16          /* the lanes of the block sum, as FL_EW_GROUP */

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
    } else if (o->kind == FL_EW_FOCAL) {
        /* as losses/elementwise.h's fl_ew_focal_d */
        const double e = exp(-fabs(x)), inv = 1.0 / (1.0 + e), q = e * inv;
        const double p = x >= 0.0 ? inv : q, p_c = x >= 0.0 ? q : inv;
        const double g = o->focal_gamma;
        const double m = p * (1.0 - y) + y * p_c;
        const double m_g = g == 0.0 ? 1.0 : m > 0.0 ? pow(m, g) : 0.0;
        const double m_g1 = g == 0.0 ? 0.0 : m > 0.0 ? g * pow(m, g - 1.0) : 0.0;
        const double d_bce = x >= 0.0 ? (1.0 - y) - q : q - y;
        const double bce = (x >= 0.0 ? (1.0 - y) * x : -y * x) + log1p(e);
        const double a_t = o->focal_alpha >= 0.0
                               ? o->focal_alpha * y + (1.0 - o->focal_alpha) * (1.0 - y)
                               : 1.0;
        const double focus = m_g1 != 0.0 ? m_g1 * bce * ((1.0 - 2.0 * y) * (p * p_c)) : 0.0;
        term = a_t * (m_g * bce);
        *deriv = a_t * (m_g * d_bce + focus);
    } else {
        const double p = o->kind == FL_EW_KL ? y : exp(y);
        const double log_p = o->kind == FL_EW_KL ? log(y) : y;
        term = p == 0.0 ? (x != x ? x : 0.0) : p * (log_p - x);
        *deriv = -p;
    }
    return term;
}

#define FL_TEMPLATE "losses/elementwise_scalar_t.h"
#include "../each_type.h"
#undef FL_TEMPLATE

#endif
