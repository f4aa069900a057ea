/* The logsumexp of blocks of float rows, their sums in double lanes where they need it:
 * a block kernel of engine/blocks.h, compiled as engine/block_instances.h says.
 * (No include guard: it is meant to be included twice.)
 */
/* logsumexp m + log S of a block of float rows (rows <= FL_NF) into out[0:rows] as
 * double. Rows of max m >= 0: the exponentials in float lanes, their sum, its log and
 * m + log S in double. fl_exp_neg_f is within 0.65-0.83 * 2^-23 relative on every float
 * argument in [-87, 0] (by build; 0.76-0.96 on 240M arguments with a rounding-error term,
 * the SSE2 build the worst; below -87 its error is under 2^-149, nothing beside S >= 1).
 * Only the terms other than the max's 1s carry that error, so log S is within about
 * 2^-23 (S - 1) / S <= 2^-23 log S <= 2^-23 (m + log S): 2 float ulps of the result (and
 * the rounding to float). Rows of m < 0, where m + log S may be near 0 (the float sum's
 * relative error would be an absolute one in the result): in double lanes, as
 * fl_small_logsumexp_c_f64 takes them (the same bits). Each row's value depends on that
 * row alone, so cross_entropy's return_lse and logsumexp agree whatever the blocks. */
FL_INLINE void FL_BLK(fl_small_logsumexp_lanes_f32)(const float* x, ptrdiff_t rows, const int c,
                                            const fl_small_plan_f32* pf, double* out) {
    const fl_vf zero = {0};
    const fl_vd zero_d = {0};
    fl_vf t[FL_SMALL_C];
    FL_BLK(fl_small_load_f32)(x, rows, c, pf, t);
    fl_vf m = zero - INFINITY;
    FL_UNROLL for (int j = 0; j < c; j++) m = fl_vmax_f(t[j], m);
    m = fl_select_f(m == zero - INFINITY, zero, m);
    /* Rows whose max is negative take the double lanes; the float lanes serve the others
     * (none: skipped). Two classes take the double lanes always: a quarter of random rows
     * have m < 0, so most blocks would pay for both (docs/performance.md). */
    const int all_double = c <= 2;
    int in_float = 0;
    for (int k = 0; k < rows && !all_double; k++) in_float |= !(m[k] < 0.0f);
    fl_vd sum[4] = {{0}};
    fl_vi ones = {0};
    if (in_float) {
        FL_UNROLL for (int j = 0; j < c; j++) {
            fl_vi at_max;
            const fl_vf e = fl_small_exp_f32(t[j], m, &at_max);
            ones -= at_max;
            const fl_vf e_rest = fl_select_f(at_max, zero, e);
            sum[2 * (j & 1)] += fl_widen_lo(e_rest);
            sum[2 * (j & 1) + 1] += fl_widen_hi(e_rest);
        }
    }
    const fl_vf ones_less_1 = __builtin_convertvector(ones, fl_vf) - 1.0f;
    for (int h = 0; h < 2 && h * FL_ND < rows; h++) {
        const fl_vd m_d = h ? fl_widen_hi(m) : fl_widen_lo(m);
        const fl_vl in_double = all_double ? (fl_vl)(zero_d == zero_d) : (fl_vl)(m_d < zero_d);
        fl_vd lse = zero_d;
        if (in_float) {
            fl_vd rest = (h ? fl_widen_hi(ones_less_1) : fl_widen_lo(ones_less_1)) +
                         (sum[h] + sum[2 + h]);
            rest = fl_select_d(m_d == zero_d + INFINITY, zero_d + NAN, rest);
            lse = m_d + fl_log1p_f64(rest);
        }
        int any_double = 0;
        for (int k = 0; k < FL_ND && h * FL_ND + k < rows; k++) any_double |= in_double[k] != 0;
        if (any_double) {               /* fl_small_logsumexp_c_f64 on the widened half */
            fl_vd wide[FL_SMALL_C], shift_d, rest_d;
            FL_UNROLL for (int j = 0; j < c; j++)
                wide[j] = h ? fl_widen_hi(t[j]) : fl_widen_lo(t[j]);
            const fl_vd log_sum_d = FL_BLK(fl_small_stats_f64)(wide, c, 0, &shift_d, &rest_d);
            lse = fl_select_d(in_double, shift_d + log_sum_d, lse);
        }
        fl_small_put_f64(out + h * FL_ND, lse, rows - h * FL_ND);
    }
}
