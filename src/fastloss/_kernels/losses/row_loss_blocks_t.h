/* Cross-entropy with class targets over blocks of rows of few classes (engine/blocks.h),
 * for one element type: a block template, compiled by losses/row_loss_paths.h as
 * engine/block_instances.h says, with the parameters of each_type.h.
 * (No include guard: it is meant to be included again.)
 */
/* Cross-entropy with class targets y (rows row0 ... of the array), all options but soft
 * targets: the same quantities as losses/row_loss.h's row formula with x_scale = 1 and
 * no loss factor, for rows <= nk L rows (nk blocks; each step runs over the blocks in
 * turn). Row losses (sample weight included) into loss_out and their sum into *loss_sum
 * (in a fixed order: a tree over lanes and blocks), logsumexp into lse_out and the
 * gradient into grad, each unless NULL. With plain (no weights, smoothing or z_loss,
 * as the spec says) the options' terms drop out at compile time, with the same bits
 * (tests: test_few_classes_without_options_give_the_bits_of_unit_weights). */
FL_INLINE void FL_BLK(FL_SFX(fl_small_ce_c))(
    const FL_T* x, ptrdiff_t rows, const int c, const int nk, const int plain,
    const ptrdiff_t* y, ptrdiff_t row0, const FL_SFX(fl_small_plan)* p,
    const fl_block_loss* spec, double* loss_out, double* loss_sum, double* lse_out,
    FL_T* grad) {
    const FL_VT zero = {0};
    const double* class_weight = plain ? NULL : spec->class_weight;
    const double* sample_weight = plain ? NULL : spec->sample_weight;
    const double smoothing = plain ? 0.0 : spec->smoothing;
    const double hard_scale = plain ? 1.0 : spec->hard_scale;
    const double z_loss = plain ? 0.0 : spec->z_loss;
    const double coef_sum_d = plain ? 0.0 : spec->coef_sum;
    const double focal_gamma = plain ? 0.0 : spec->focal_gamma;
    const int smooth = smoothing != 0.0;
    FL_VT t[FL_SMALL_K][FL_SMALL_C], x_minus[FL_SMALL_K][FL_SMALL_C];
    FL_VT m[FL_SMALL_K], rest[FL_SMALL_K], log_sum[FL_SMALL_K];
    /* per block: its rows, targets, the row weight (0 for ignored rows, and rows past
     * the end), the hard coefficient (1 - eps) w_y and x_y */
    ptrdiff_t n[FL_SMALL_K];
    FL_IT target[FL_SMALL_K];
    FL_VT weight[FL_SMALL_K], hard[FL_SMALL_K], x_y[FL_SMALL_K];
    FL_UNROLL for (int k = 0; k < nk; k++) {
        n[k] = rows - k * FL_L < 0 ? 0 : rows - k * FL_L > FL_L ? FL_L : rows - k * FL_L;
        FL_BLK(FL_SFX(fl_small_load))(x + k * FL_L * c, n[k], c, p, t[k]);
        target[k] = FL_SFX(fl_small_targets)(y + k * FL_L, n[k], spec->ignore_index);
        weight[k] = zero + 1;
        if (sample_weight)
            weight[k] = FL_SFX(fl_small_get)(sample_weight + row0 + k * FL_L, n[k]);
        weight[k] = FL_SEL(target[k] == -1, zero, weight[k]);  /* ignored, or past the end */
        hard[k] = class_weight ? zero : zero + (FL_T)hard_scale;
        x_y[k] = zero;
    }
    FL_UNROLL for (int j = 0; j < c; j++)
        FL_UNROLL for (int k = 0; k < nk; k++) {
            const FL_IT is_y = target[k] == j;
            x_y[k] = FL_SEL(is_y, t[k][j], x_y[k]);
            if (class_weight)
                hard[k] = FL_SEL(is_y, zero + (FL_T)(hard_scale * class_weight[j]), hard[k]);
        }
    if (smooth)       /* the scores, for the smoothing's sum */
        for (int k = 0; k < nk; k++)
            for (int j = 0; j < c; j++) x_minus[k][j] = t[k][j];
    FL_BLK(FL_SFX(fl_small_stats_k))(t, nk, c, grad != NULL, m, rest, log_sum);
    const FL_VT coef_sum = zero + (FL_T)coef_sum_d;
    FL_VT lse[FL_SMALL_K], focus[FL_SMALL_K];
    fl_vd sums[FL_SMALL_K];
    FL_UNROLL for (int k = 0; k < nk; k++) {
        FL_VT coef_dot = zero;       /* sum_j a_j (m - x_j); a zero a_j adds 0 */
        if (smooth)
            for (int j = 0; j < c; j++) {
                const FL_T a = (FL_T)(smoothing * (class_weight ? class_weight[j] : 1.0));
                if (a != 0) coef_dot += a * (m[k] - x_minus[k][j]);
            }
        lse[k] = m[k] + log_sum[k];
        /* plain: the sum's terms 0 + 0 log S and 1 (...) are exact; the sum, too */
        FL_VT loss = (m[k] - x_y[k]) + log_sum[k];
        FL_VT focal_loss = zero + 1;
        if (focal_gamma != 0.0)         /* the focal loss's factors of each lane's ce */
            for (int l = 0; l < FL_L; l++) {
                double grad_factor;
                focal_loss[l] = (FL_T)fl_focal_factors((double)loss[l], focal_gamma,
                                                       &grad_factor);
                focus[k][l] = (FL_T)grad_factor;
            }
        if (!plain)
            loss = (coef_dot + coef_sum * log_sum[k]) +
                   FL_SEL(hard[k] != zero, hard[k] * loss, zero);
        if (focal_gamma != 0.0) loss = loss * focal_loss;
        if (z_loss != 0.0) loss = loss + (FL_T)z_loss * lse[k] * lse[k];
        /* 0 in the lanes past the end */
        loss = FL_SEL(weight[k] != zero, weight[k] * loss, zero);
        if (loss_out) FL_SFX(fl_small_put)(loss_out + k * FL_L, loss, n[k]);
        sums[k] = FL_SFX(fl_small_pairs)(loss);
        if (lse_out) FL_SFX(fl_small_put)(lse_out + k * FL_L, lse[k], n[k]);
    }
    if (loss_sum) {
        FL_UNROLL for (int w = 1; w < nk; w *= 2)
            FL_UNROLL for (int k = 0; k + w < nk; k += 2 * w) sums[k] += sums[k + w];
        *loss_sum = fl_hsum(sums[0]);
    }
    if (!grad) return;
    /* grad_j = w / D ((h + A + 2 z lse) p_j - a_j - h [j = y]); where y is at the max,
     * the target's (h + A + 2 z lse)(p_y - 1) + (A - a_y + 2 z lse) with p_y - 1 as
     * -(S - 1) / S: nothing cancels, as in the row kernel's double */
    FL_VT scale[FL_SMALL_K], z_lse[FL_SMALL_K], slope[FL_SMALL_K], inv_sum[FL_SMALL_K];
    FL_UNROLL for (int k = 0; k < nk; k++) {
        scale[k] = weight[k] * (FL_T)spec->grad_scale;
        if (focal_gamma != 0.0) scale[k] = scale[k] * focus[k];
        /* plain: 0 for 0 lse but where lse is infinite or NaN, whose row's gradient is
         * NaN all the same; then the slope is 1 and drops out */
        z_lse[k] = plain ? zero : (FL_T)(2.0 * z_loss) * lse[k];
        slope[k] = hard[k] + coef_sum + z_lse[k];
        inv_sum[k] = 1 / (rest[k] + 1);
    }
    FL_UNROLL for (int j = 0; j < c; j++) {
        const FL_T a = smoothing == 0.0 ? 0 : (FL_T)(smoothing *
            (class_weight ? class_weight[j] : 1.0));
        FL_UNROLL for (int k = 0; k < nk; k++) {
            const FL_IT is_y = target[k] == j;
            FL_VT g = slope[k] * (t[k][j] * inv_sum[k]) - a;
            const FL_VT at_max =
                slope[k] * -(rest[k] * inv_sum[k]) + ((coef_sum - a) + z_lse[k]);
            g = FL_SEL(is_y, FL_SEL(x_y[k] == m[k], at_max, g - hard[k]), g);
            t[k][j] = FL_SEL(weight[k] != zero, scale[k] * g, zero);
        }
    }
    FL_UNROLL for (int k = 0; k < nk; k++)
        FL_BLK(FL_SFX(fl_small_store))(t[k], n[k], c, p, grad + k * FL_L * c);
}

#if FL_BLOCK_ENTRIES
/* Cross-entropy of rows <= FL_SMALL_CE_BLOCKS(C) L rows (fl_small_ce_c_*): at the counts
 * of FL_SMALL_COUNTS, copies without options (the options' terms drop out at compile
 * time) and with them; rows of one block take one block (a block past the rows would be
 * computed all the same; a span's last call may have fewer rows). */
static inline void FL_SFX(fl_small_ce)(
    const FL_T* x, ptrdiff_t rows, const ptrdiff_t* y, ptrdiff_t row0,
    const FL_SFX(fl_small_plan)* p, const fl_block_loss* spec,
    double* loss_out, double* loss_sum, double* lse_out, FL_T* grad) {
    const int plain = !spec->class_weight && !spec->sample_weight &&
                      spec->smoothing == 0.0 && spec->z_loss == 0.0 &&
                      spec->hard_scale == 1.0 && spec->coef_sum == 0.0 &&
                      spec->focal_gamma == 0.0;
    const int one = rows <= FL_L;
    const int c = p->n_classes;
    switch (c) {
    FL_SMALL_COUNTS(FL_SMALL_CE_CASE, FL_SFX(fl_small_ce_c))
    default:            /* the count at run time; the blocks and the options constants */
        switch ((one ? 1 : FL_SMALL_CE_BLOCKS(c)) * 2 + plain) {
        FL_SMALL_CE_LOOPS_CASE(FL_LOOPS(FL_SFX(fl_small_ce_c)), 1)
        FL_SMALL_CE_LOOPS_CASE(FL_LOOPS(FL_SFX(fl_small_ce_c)), 2)
        FL_SMALL_CE_LOOPS_CASE(FL_LOOPS(FL_SFX(fl_small_ce_c)), 4)
        }
        break;
    }
}
#endif
