/* Cross-entropy against probability rows over blocks of rows of few classes, in double
 * lanes (fl_small_soft_ce_c_f64) and in float lanes (fl_small_soft_ce_c_f32): a block
 * template, compiled by losses/row_loss_paths.h as engine/block_instances.h says.
 * (No include guard: it is meant to be included again.)
 */
/* Cross-entropy against probability rows q (soft targets; with_entropy: KL(a || softmax),
 * distillation), in double lanes for both storage types: the quantities of
 * losses/row_loss.h with coefficients a_j, whose sums the row kernel also forms in
 * double. Row losses (sample weight included) into loss_out, logsumexp into lse_out, the
 * gradient into grad and each row's three loss terms (for fl_kl_terms_cancel) into terms
 * (FL_ND each), each unless NULL. */
FL_INLINE void FL_BLK(fl_small_soft_ce_c_f64)(
    const double* x, const double* q, ptrdiff_t rows, const int c, ptrdiff_t row0,
    const fl_small_plan_f64* p, const fl_block_loss* spec, double* loss_out,
    double* lse_out, double* grad, double* terms) {
    if (c < 1 || c > FL_SMALL_C) __builtin_unreachable();    /* for the unrolled loops */
    const fl_vd zero = {0};
    fl_vd t[FL_SMALL_C], a[FL_SMALL_C], x_minus[FL_SMALL_C] = {{0}}, m, rest;
    FL_BLK(fl_small_load_f64)(x, rows, c, p, t);
    FL_BLK(fl_small_load_f64)(q, rows, c, p, a);
    /* fl_small_get_f64 gives 0 past the end: those rows are inactive */
    const fl_vd weight = spec->sample_weight ? fl_small_get_f64(spec->sample_weight + row0, rows)
                                             : zero + 1.0;
    fl_vl past = {0};
    for (int k = 0; k < FL_ND; k++) past[k] = k >= rows ? -1 : 0;
    const fl_vl active = (weight != zero) & ~past;
    fl_vd coef_sum = zero, coef_dot = zero, entropy = zero;
    const double s = spec->x_scale;
    fl_vd log_a[FL_SMALL_C];            /* exact for a teacher's logits or log-probs */
    if (spec->teacher_kind != FL_SOFT_PROBS) {
        /* log a_j = (q_j - max q) s - log sum_k exp((q_k - max q) s) (logits; q_j - max q
         * exact for nearby values) or q_j (log-probabilities), as the row kernel forms it */
        FL_UNROLL for (int j = 0; j < c; j++) log_a[j] = a[j];
        if (spec->teacher_kind == FL_SOFT_LOGITS) {
            fl_vd q_max = zero - INFINITY, q_shift, q_rest;
            FL_UNROLL for (int j = 0; j < c; j++) q_max = fl_vmax_d(a[j], q_max);
            FL_UNROLL for (int j = 0; j < c; j++) log_a[j] = (a[j] - q_max) * s;
            const fl_vd q_log_sum = FL_BLK(fl_small_stats_f64)(log_a, c, 0, &q_shift, &q_rest);
            FL_UNROLL for (int j = 0; j < c; j++) log_a[j] = log_a[j] - q_log_sum;
        }
        FL_UNROLL for (int j = 0; j < c; j++) a[j] = fl_exp_d(log_a[j]);
    }
    FL_UNROLL for (int j = 0; j < c; j++) {
        x_minus[j] = t[j];
        if (spec->teacher_kind == FL_SOFT_PROBS)
            a[j] = fl_small_soft_coef(a[j], spec);
        if (spec->class_weight) a[j] = a[j] * spec->class_weight[j];
    }
    fl_vd x_max = zero;
    if (s != 1.0) {
        /* the scores (x - max) s, as the row kernel forms them: their max is then 0 */
        x_max = zero - INFINITY;
        FL_UNROLL for (int j = 0; j < c; j++) x_max = fl_vmax_d(t[j], x_max);
        x_max = fl_select_d(x_max == zero - INFINITY, zero, x_max);
        FL_UNROLL for (int j = 0; j < c; j++) t[j] = (t[j] - x_max) * s;
    }
    const fl_vd log_sum = FL_BLK(fl_small_stats_f64)(t, c, grad != NULL, &m, &rest);
    if (s != 1.0) m = x_max;
    FL_UNROLL for (int j = 0; j < c; j++) {      /* a zero a_j adds 0, even at x = -inf */
        const fl_vl nonzero = a[j] != zero;
        coef_sum += a[j];
        coef_dot += fl_small_dot_term(a[j], m, x_minus[j]);
        if (spec->with_entropy)
            entropy += fl_select_d(nonzero, a[j] * (spec->teacher_kind == FL_SOFT_PROBS
                                                    ? fl_log_d(a[j]) : log_a[j]), zero);
    }
    const fl_vd lse = m * s + log_sum;
    fl_vd loss = (coef_dot * s + coef_sum * log_sum + entropy) * spec->loss_factor;
    if (terms) {
        fl_small_put_f64(terms, coef_dot * s, rows);
        fl_small_put_f64(terms + FL_ND, coef_sum * log_sum, rows);
        fl_small_put_f64(terms + 2 * FL_ND, entropy, rows);
    }
    if (spec->z_loss != 0.0) loss = loss + spec->z_loss * lse * lse;
    fl_small_put_f64(loss_out, fl_select_d(active, weight * loss, zero), rows);
    if (lse_out) fl_small_put_f64(lse_out, lse, rows);
    if (!grad) return;
    /* grad_j = w / D f s ((A + 2 z lse / f) p_j - a_j) */
    const fl_vd scale = weight * (spec->grad_scale * spec->loss_factor * s);
    const fl_vd slope = coef_sum + (2.0 * spec->z_loss / spec->loss_factor) * lse;
    const fl_vd inv_sum = 1 / (rest + 1);
    FL_UNROLL for (int j = 0; j < c; j++)
        t[j] = fl_select_d(active, fl_small_soft_grad(scale, slope, t[j], inv_sum, a[j]),
                           zero);
    FL_BLK(fl_small_store_f64)(t, rows, c, p, grad);
}

/* The same for float rows and probability targets (teachers' probabilities without their
 * entropy, no temperature: cross_entropy), in float lanes: FL_NF rows a block, the
 * exponentials, their sum and its log as fl_small_stats_f32 forms them (the class-target
 * kernel's); the coefficients a_j, their sums A and sum_j a_j (m - x_j), the loss and the
 * gradient in double over the block's halves widened (the gradient's terms may nearly
 * cancel: its error is then a few ulps of the exponential, as the row kernel's). Twice
 * the lanes of double, and no conversions of the scores (docs/performance.md). */
FL_INLINE void FL_BLK(fl_small_soft_ce_c_f32)(
    const float* x, const float* q, ptrdiff_t rows, const int c, ptrdiff_t row0,
    const fl_small_plan_f32* p, const fl_block_loss* spec, double* loss_out,
    float* grad) {
    if (c < 1 || c > FL_SMALL_C) __builtin_unreachable();    /* for the unrolled loops */
    const fl_vd zero = {0};
    fl_vf t[FL_SMALL_C], probs[FL_SMALL_C], x_minus[FL_SMALL_C], m, rest;
    const fl_vf log_sum =
        FL_BLK(fl_small_load_stats_f32)(x, rows, c, p, grad != NULL, t, x_minus, &m, &rest);
    FL_BLK(fl_small_load_f32)(q, rows, c, p, probs);
    /* per half h of the block (rows [0, FL_ND) and the rest), in double */
    const fl_vd m_half[2] = {fl_widen_lo(m), fl_widen_hi(m)};
    const fl_vd log_sum_half[2] = {fl_widen_lo(log_sum), fl_widen_hi(log_sum)};
    ptrdiff_t n[2];                     /* the half's rows */
    fl_vd weight[2], coef_sum[2] = {zero, zero}, coef_dot[2] = {zero, zero};
    fl_vl active[2];
    for (int h = 0; h < 2; h++) {
        const ptrdiff_t left = rows - h * FL_ND;
        n[h] = left < 0 ? 0 : left > FL_ND ? FL_ND : left;
        /* fl_small_get_f64 gives 0 past the end: those rows are inactive */
        weight[h] = spec->sample_weight
                        ? fl_small_get_f64(spec->sample_weight + row0 + h * FL_ND, n[h])
                        : zero + 1.0;
        fl_vl past = {0};
        for (int k = 0; k < FL_ND; k++) past[k] = k >= n[h] ? -1 : 0;
        active[h] = (weight[h] != zero) & ~past;
    }
    FL_UNROLL for (int j = 0; j < c; j++) {
        const fl_vd q_half[2] = {fl_widen_lo(probs[j]), fl_widen_hi(probs[j])};
        const fl_vd x_half[2] = {fl_widen_lo(x_minus[j]), fl_widen_hi(x_minus[j])};
        for (int h = 0; h < 2; h++) {
            fl_vd a = fl_small_soft_coef(q_half[h], spec);
            if (spec->class_weight) a = a * spec->class_weight[j];
            coef_sum[h] += a;
            coef_dot[h] += fl_small_dot_term(a, m_half[h], x_half[h]);
        }
    }
    fl_vd lse[2];
    for (int h = 0; h < 2; h++) {       /* the rows' losses */
        lse[h] = m_half[h] + log_sum_half[h];
        fl_vd loss = coef_dot[h] + coef_sum[h] * log_sum_half[h];
        if (spec->z_loss != 0.0) loss = loss + spec->z_loss * lse[h] * lse[h];
        if (n[h]) fl_small_put_f64(loss_out + h * FL_ND,
                                   fl_select_d(active[h], weight[h] * loss, zero), n[h]);
    }
    if (!grad) return;
    /* grad_j = w / D ((A + 2 z lse) p_j - a_j) */
    fl_vd scale[2], slope[2], inv_sum[2] = {1 / (fl_widen_lo(rest) + 1),
                                            1 / (fl_widen_hi(rest) + 1)};
    for (int h = 0; h < 2; h++) {
        scale[h] = weight[h] * spec->grad_scale;
        slope[h] = coef_sum[h] + (2.0 * spec->z_loss) * lse[h];
    }
    FL_UNROLL for (int j = 0; j < c; j++) {
        const fl_vd e_half[2] = {fl_widen_lo(t[j]), fl_widen_hi(t[j])};
        const fl_vd q_half[2] = {fl_widen_lo(probs[j]), fl_widen_hi(probs[j])};
        fl_vd g[2];
        for (int h = 0; h < 2; h++) {
            fl_vd a = fl_small_soft_coef(q_half[h], spec);
            if (spec->class_weight) a = a * spec->class_weight[j];
            const fl_vd g_h =
                fl_small_soft_grad(scale[h], slope[h], e_half[h], inv_sum[h], a);
            g[h] = fl_select_d(active[h], g_h, zero);
        }
        t[j] = fl_narrow(g[0], g[1]);
    }
    FL_BLK(fl_small_store_f32)(t, rows, c, p, grad);
}
