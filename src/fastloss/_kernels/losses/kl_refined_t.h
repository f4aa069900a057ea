/* fl_kl_refined for one element type: included once per type by losses/kl_refined.h, with
 * FL_T and FL_SFX(name). (No include guard: it is meant to be included twice.)
 */

/* Element j of a row, given the row's constants: log q_j, p_j (but for a teacher's logits,
 * whose P is 1) and u_j = log p_j - log q_j
 * (-inf where p_j = 0). For a teacher's logits u_j is (t_j - x_j) s - shift, so that the
 * rounding of log p_j and log q_j (of the size of log C) does not enter it (of the size of
 * 1 / T; t_j - x_j is exact where they are close): only the shift's, the same for every
 * j, which z measures. */
static inline double FL_SFX(fl_kl_element)(FL_T x, FL_T t, const fl_kl_row* row,
                                           double* log_q, double* p) {
    *log_q = ((double)x - row->x_max) * row->s - row->x_log_sum;
    if (row->kind == FL_TEACHER_LOGITS) {
        *p = 0.0;       /* not needed: P = 1 */
        return ((double)t - (double)x) * row->s - row->shift;
    }
    const double log_p = row->kind == FL_TEACHER_LOG_PROBS ? (double)t : log((double)t);
    *p = row->kind == FL_TEACHER_LOG_PROBS ? exp(log_p) : (double)t;
    return log_p == -INFINITY ? -INFINITY : log_p - *log_q - row->shift;
}

/* z = sum_j q_j expm1(u_j) (P - 1 for exact u_j) and, unless NULL, sum_j q_j psi(u_j) and
 * P - 1, each compensated; -1 if some p_j > 0 where q_j = 0 (an infinite KL). */
static double FL_SFX(fl_kl_sums)(const FL_T* x, const FL_T* t, ptrdiff_t n,
                                 const fl_kl_row* row, double* psi_sum, double* p_minus_1) {
    fl_kl_sum z = {0.0, 0.0}, psi = {0.0, 0.0}, p_sum = {-1.0, 0.0};
    for (ptrdiff_t j = 0; j < n; j++) {
        double log_q, p;
        const double u = FL_SFX(fl_kl_element)(x[j], t[j], row, &log_q, &p);
        const double q = exp(log_q);
        fl_kl_add(&p_sum, p);
        if (u == -INFINITY) {           /* p_j = 0: psi(-inf) = 1, expm1(-inf) = -1 */
            fl_kl_add(&psi, q);
            fl_kl_add(&z, -q);
            continue;
        }
        if (q == 0.0) return -1.0;
        if (psi_sum != NULL) fl_kl_add(&psi, q * fl_kl_psi(u));
        fl_kl_add(&z, q * expm1(u));
    }
    if (psi_sum != NULL) *psi_sum = psi.sum + psi.err;
    if (p_minus_1 != NULL) *p_minus_1 = p_sum.sum + p_sum.err;
    return z.sum + z.err;
}

/* KL(p || softmax(x s)) of one row of n classes whose teacher row t is of the given kind
 * (probabilities, log-probabilities, or logits taken at scale s too), by the form of
 * losses/kl_refined.h; unscaled (no loss factor, no weight). With grad, also its gradient
 * times grad_scale, grad_scale (P q_j - p_j), into grad (which must not be x). */
static double FL_SFX(fl_kl_refined)(const FL_T* x, const FL_T* t, ptrdiff_t n,
                                    fl_target_kind kind, double s, FL_T* grad,
                                    double grad_scale) {
    fl_kl_row row = {kind, s, -INFINITY, 0.0, -INFINITY, 0.0, 0.0};
    for (ptrdiff_t j = 0; j < n; j++) {
        row.x_max = (double)x[j] > row.x_max ? (double)x[j] : row.x_max;
        if (kind == FL_TEACHER_LOGITS)
            row.t_max = (double)t[j] > row.t_max ? (double)t[j] : row.t_max;
    }
    double x_sum = 0.0, t_sum = 0.0;
    for (ptrdiff_t j = 0; j < n; j++) {
        x_sum += exp(((double)x[j] - row.x_max) * s);
        if (kind == FL_TEACHER_LOGITS) t_sum += exp(((double)t[j] - row.t_max) * s);
    }
    row.x_log_sum = log(x_sum);
    if (kind == FL_TEACHER_LOGITS) {
        row.t_log_sum = log(t_sum);
        row.shift = (row.t_max - row.x_max) * s + (row.t_log_sum - row.x_log_sum);
    }
    double p_minus_1, psi_sum;
    double z = FL_SFX(fl_kl_sums)(x, t, n, &row, &psi_sum, &p_minus_1);
    if (z == -1.0) return INFINITY;
    if (kind == FL_TEACHER_LOGITS) p_minus_1 = 0.0;     /* 1 by definition */
    /* The shift's error c shows in z = P e^c - 1, and the closed form below takes it out
     * but for a part of order c^2 / 2: where that may reach 2^-40 of the KL (at
     * temperatures of 1e8 and more), the shift is corrected and the sums formed again. */
    const double c = log1p(z) - log1p(p_minus_1);
    if (c * c > 0x1p-40 * psi_sum) {
        row.shift += c;
        z = FL_SFX(fl_kl_sums)(x, t, n, &row, &psi_sum, NULL);
    }
    const double big_p = 1.0 + p_minus_1;
    const double kl = big_p / (1.0 + z) * psi_sum + big_p * fl_kl_shift_term(z) +
                      (p_minus_1 == 0.0 ? 0.0 : big_p * log1p(p_minus_1));
    if (grad == NULL) return kl;
    /* P q_j - p_j = P q_j (1 - e^u_j / (1 + z)) = P q_j (z - expm1(u_j)) / (1 + z) */
    const double factor = grad_scale * big_p / (1.0 + z);
    for (ptrdiff_t j = 0; j < n; j++) {
        double log_q, p;
        const double u = FL_SFX(fl_kl_element)(x[j], t[j], &row, &log_q, &p);
        grad[j] = (FL_T)(factor * exp(log_q) * (z - expm1(u)));
    }
    return kl;
}
