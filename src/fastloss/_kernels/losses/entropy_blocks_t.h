/* The entropy of softmax(x) and its gradient over blocks of rows of few classes, in
 * double lanes (fl_small_entropy_c_f64) and in float lanes (fl_small_entropy_c_f32): a
 * block template, compiled by losses/entropy.h as engine/block_instances.h says.
 * (No include guard: it is meant to be included again.)
 */
/* The entropy of softmax(x) of each row, H = log S + sum_j e_j (m - x_j) / S with e_j =
 * exp(x_j - m), times unit into out[0:rows], and its gradient grad_scale p_j ((m - x_j) +
 * log S - H) into grad unless NULL (a class of probability 0 gets 0): the quantities of
 * engine/row_stats.h's fl_softmax_entropy and the row gradient of engine/rows.h's
 * fl_entropy_grad_T, in double lanes. */
FL_INLINE void FL_BLK(fl_small_entropy_c_f64)(const double* x, ptrdiff_t rows, const int c,
                                      const fl_small_plan_f64* p, double unit,
                                      double grad_scale, double* out, double* grad) {
    if (c < 1 || c > FL_SMALL_C) __builtin_unreachable();    /* for the unrolled loops */
    const fl_vd zero = {0};
    fl_vd t[FL_SMALL_C], x_minus[FL_SMALL_C], m, rest;
    const fl_vd log_sum = FL_BLK(fl_small_load_stats_f64)(x, rows, c, p, 1, t, x_minus, &m, &rest);
    fl_vd dot = zero;                   /* a -inf score's e_j = 0 adds 0 */
    FL_UNROLL for (int j = 0; j < c; j++)
        dot += fl_small_dot_term(t[j], m, x_minus[j]);
    const fl_vd inv_sum = 1 / (rest + 1);
    const fl_vd h = log_sum + dot * inv_sum;
    fl_small_put_f64(out, h * unit, rows);
    if (!grad) return;
    const fl_vd offset = log_sum - h, factor = grad_scale * inv_sum;
    FL_UNROLL for (int j = 0; j < c; j++)
        t[j] = fl_small_entropy_grad(factor, t[j], m, x_minus[j], offset);
    FL_BLK(fl_small_store_f64)(t, rows, c, p, grad);
}

/* The same for float rows in float lanes (FL_NF rows a block): the exponentials, their
 * sum and its log as fl_small_stats_f32 forms them; the sum of e_j (m - x_j), H and the
 * gradient in double over the block's halves widened (faster than double lanes:
 * docs/performance.md). */
FL_INLINE void FL_BLK(fl_small_entropy_c_f32)(const float* x, ptrdiff_t rows, const int c,
                                      const fl_small_plan_f32* p, double unit,
                                      double grad_scale, double* out, float* grad) {
    if (c < 1 || c > FL_SMALL_C) __builtin_unreachable();    /* for the unrolled loops */
    const fl_vd zero = {0};
    fl_vf t[FL_SMALL_C], x_minus[FL_SMALL_C], m, rest;
    const fl_vf log_sum = FL_BLK(fl_small_load_stats_f32)(x, rows, c, p, 1, t, x_minus, &m, &rest);
    /* per half of the block (rows [0, FL_ND) and the rest), in double */
    const fl_vd m_half[2] = {fl_widen_lo(m), fl_widen_hi(m)};
    const fl_vd log_sum_half[2] = {fl_widen_lo(log_sum), fl_widen_hi(log_sum)};
    const fl_vd inv_sum[2] = {1 / (fl_widen_lo(rest) + 1), 1 / (fl_widen_hi(rest) + 1)};
    fl_vd dot[2] = {zero, zero};        /* a -inf score's e_j = 0 adds 0 */
    FL_UNROLL for (int j = 0; j < c; j++) {
        const fl_vd e_half[2] = {fl_widen_lo(t[j]), fl_widen_hi(t[j])};
        const fl_vd x_half[2] = {fl_widen_lo(x_minus[j]), fl_widen_hi(x_minus[j])};
        for (int h = 0; h < 2; h++)
            dot[h] += fl_small_dot_term(e_half[h], m_half[h], x_half[h]);
    }
    fl_vd entropy[2];
    for (int h = 0; h < 2; h++) {
        entropy[h] = log_sum_half[h] + dot[h] * inv_sum[h];
        if (h * FL_ND < rows)
            fl_small_put_f64(out + h * FL_ND, entropy[h] * unit,
                             rows - h * FL_ND < FL_ND ? rows - h * FL_ND : FL_ND);
    }
    if (!grad) return;
    FL_UNROLL for (int j = 0; j < c; j++) {
        const fl_vd e_half[2] = {fl_widen_lo(t[j]), fl_widen_hi(t[j])};
        const fl_vd x_half[2] = {fl_widen_lo(x_minus[j]), fl_widen_hi(x_minus[j])};
        fl_vd g[2];
        for (int h = 0; h < 2; h++) {
            const fl_vd offset = log_sum_half[h] - entropy[h];
            const fl_vd factor = grad_scale * inv_sum[h];
            g[h] = fl_small_entropy_grad(factor, e_half[h], m_half[h], x_half[h], offset);
        }
        t[j] = fl_narrow(g[0], g[1]);
    }
    FL_BLK(fl_small_store_f32)(t, rows, c, p, grad);
}
