/* Distillation's KL recomputed where the row formula cancels.
 *
 * The row formula (losses/row_loss.h) forms KL(p || q), q = softmax(x s), as
 * sum_j p_j (lse - x_j s) + sum_j p_j log p_j: terms of the size of log C whose difference
 * is the KL. Where the teacher and the student nearly agree, above all at a high
 * temperature (KL ~ 1/T^2, and distillation multiplies it by T^2), the terms' rounding
 * errors are the result. Such a row is computed again here, in the form
 *
 *   KL = sum_j q_j psi(u_j) + (P - 1),   u_j = log p_j - log q_j,   psi(u) = e^u (u - 1) + 1,
 *
 * (P = sum_j p_j: 1 for a teacher's logits) whose terms are all >= 0 (psi(u) ~ u^2 / 2), so
 * nothing cancels. The u_j are formed with this row's own logsumexp, whose rounding error c
 * shifts them all alike; the sum z = sum_j q_j expm1(u_j) (0 for exact u_j) measures that
 * shift, and the closed form below removes it, so the result's relative error stays within
 * a few units of double rounding at any temperature (test_distill_entropy.py checks it
 * against 50-digit arithmetic up to T = 1e12).
 *
 * Scalar double code with the C library's exp, expm1 and log: the rows it serves are few
 * (the rule is fl_kl_cancels), and it reads its row again instead of asking the paths for
 * their statistics, so every path (rows, batches, blocks, tiles) calls it alike.
 */
#ifndef FL_LOSSES_KL_REFINED_H
#define FL_LOSSES_KL_REFINED_H

#include <math.h>

#include "row_loss.h"

/* psi(u) = e^u (u - 1) + 1 >= 0: by its series sum_{n>=2} (n - 1) u^n / n! for |u| < 1
 * (the closed form loses half its digits near 0), else the closed form; psi(-inf) = 1. */
static inline double fl_kl_psi(double u) {
    static const double c[19] = {
        1.0 / 2, 1.0 / 3, 1.0 / 8, 1.0 / 30, 1.0 / 144, 1.0 / 840, 1.0 / 5760, 1.0 / 45360,
        1.0 / 403200, 1.0 / 3991680, 1.0 / 43545600, 1.0 / 518918400, 1.0 / 6706022400.0,
        1.0 / 93405312000.0, 1.0 / 1394852659200.0, 1.0 / 22230464256000.0,
        1.0 / 376610217984000.0, 1.0 / 6758061133824000.0, 1.0 / 128047474114560000.0};
    if (u == -INFINITY) return 1.0;
    if (fabs(u) >= 1.0) return exp(u) * (u - 1.0) + 1.0;
    double sum = c[18];
    for (int k = 17; k >= 0; k--) sum = sum * u + c[k];
    return sum * u * u;
}

/* z / (1 + z) - log1p(z), by its series -z^2/2 + 2z^3/3 - 3z^4/4 + ... for |z| < 1/64. */
static inline double fl_kl_shift_term(double z) {
    if (fabs(z) >= 1.0 / 64) return z / (1.0 + z) - log1p(z);
    double sum = 0.0;
    for (int n = 12; n >= 2; n--) sum = sum * z + (n % 2 ? 1.0 : -1.0) * (double)(n - 1) / n;
    return sum * z * z;
}

/* A row's constants: the teacher's kind, the scale s = 1 / T, the maxima and log-sums
 * of the student's scores (and of a teacher's logits), and the shift of u_j. */
typedef struct {
    fl_target_kind kind;
    double s;
    double x_max, x_log_sum;
    double t_max, t_log_sum;
    double shift;
} fl_kl_row;

/* A compensated sum (Neumaier): its error does not grow with the number of terms. */
typedef struct {
    double sum, err;
} fl_kl_sum;

static inline void fl_kl_add(fl_kl_sum* a, double v) {
    const double sum = a->sum + v;
    a->err += fabs(a->sum) >= fabs(v) ? (a->sum - sum) + v : (v - sum) + a->sum;
    a->sum = sum;
}

#define FL_TEMPLATE "losses/kl_refined_t.h"
#include "../each_type.h"
#undef FL_TEMPLATE

#endif
