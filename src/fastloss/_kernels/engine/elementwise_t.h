/* The elementwise block driver for one element type: compiled once per type by
 * losses/elementwise.h through each_type.h (FL_T, FL_VT, FL_L, FL_SEL, FL_SFX), with the
 * loss layer's per-type helpers fl_ew_half_T(v, h) / fl_ew_join_T(d) (a vector's double
 * halves, and back) and fl_ew_scale_T(d, hi, lo) (the float scaling), and the loss's two
 * stage functions fl_ew_a_T and fl_ew_b_T (which reads the call's options, o).
 *
 * fl_ew_groups_T: `groups` whole groups, of which the last has `valid` elements that count
 * (the others are padding, NaN: their terms add -0.0 and their values no extreme). Adds
 * the weighted terms to acc (lane i % 16 of element i) and, where rng is not NULL,
 * lowers/raises rng[0], rng[1] by the values of x and rng[2], rng[3] by those of y. w and
 * pw: one period of the weights, from *w_phase and *pw_phase on (both advanced).
 *
 * A chunk of elements goes through two loops: (a) the transcendental functions, into a
 * buffer in L1; (b) the rest. Fused into one loop, the long dependency chains of a vector
 * fill the out-of-order window and the loop runs at about half the speed.
 *
 * fl_ew_block_impl_T: one block, n elements (x, y, loss_out, grad_out: the block's;
 * loss_out and grad_out may be NULL; grad_out may be x), the last partial group through
 * padded copies. Returns the block's weighted sum; writes the extremes of x and y (NaN
 * skipped; +inf, -inf if none) to range_out[0:4] unless it is NULL.
 * (No include guard: it is meant to be included twice.)
 */
#define FL_EW_HALVES (FL_L / FL_ND)   /* double vectors per vector of the type */

FL_INLINE void FL_SFX(fl_ew_groups)(
    const int kind, const int has_w, const int has_pw, const int smooth,
    const FL_T* x, const FL_T* y, const FL_T* w, ptrdiff_t w_period, ptrdiff_t* w_phase,
    const FL_T* pw, ptrdiff_t pw_period, ptrdiff_t* pw_phase, ptrdiff_t groups, int valid,
    FL_T* loss_out, FL_T* grad_out, const fl_ew_opts* o, fl_vd* acc, FL_VT* rng) {
    /* A copy the loop's stores cannot alias: its options stay in registers. */
    const fl_ew_opts opts = *o;
    const double ls = opts.loss_scale, gs = opts.grad_scale;
    /* gs as hi + lo in float, unless that would lose bits (out of float's normal range) */
    const float gs_hi = (float)gs, gs_lo = (float)(gs - gs_hi);
    const int gs_float = fabs(gs) < 1e30 && (gs == 0.0 || fabs(gs) > 1e-30);
    FL_VT stage[FL_EW_CHUNK / FL_L][FL_EW_STAGES];
    FL_T wbuf[FL_EW_GROUP], pwbuf[FL_EW_GROUP];
    const ptrdiff_t n = groups * FL_EW_GROUP;
    for (ptrdiff_t c = 0; c < n; c += FL_EW_CHUNK) {
        const ptrdiff_t end = n - c < FL_EW_CHUNK ? n : c + FL_EW_CHUNK;
        FL_VT* sa = stage[0];
        for (ptrdiff_t i = c; i < end; i += FL_L, sa += FL_EW_STAGES) {
            FL_VT xv, yv;
            memcpy(&xv, x + i, sizeof xv);
            memcpy(&yv, y + i, sizeof yv);
            FL_SFX(fl_ew_a)(kind, xv, yv, sa);
        }
        const FL_VT* sb = stage[0];
        for (ptrdiff_t i = c; i < end; i += FL_EW_GROUP) {
            const FL_T* ws = has_w ? FL_SFX(fl_ew_wrap)(w, w_period, *w_phase, wbuf) : NULL;
            const FL_T* pws = has_pw ? FL_SFX(fl_ew_wrap)(pw, pw_period, *pw_phase, pwbuf)
                                  : NULL;
            for (int j = 0; j < FL_EW_GROUP / FL_L; j++, sb += FL_EW_STAGES) {
                const ptrdiff_t at = i + j * FL_L;
                FL_VT xv, yv, wv = {0}, pv = {0};
                memcpy(&xv, x + at, sizeof xv);
                memcpy(&yv, y + at, sizeof yv);
                if (has_w) memcpy(&wv, ws + j * FL_L, sizeof wv);
                if (has_pw) memcpy(&pv, pws + j * FL_L, sizeof pv);
                if (rng) {
                    FL_EW_LOWER(rng[0], xv), FL_EW_UPPER(rng[1], xv);
                    FL_EW_LOWER(rng[2], yv), FL_EW_UPPER(rng[3], yv);
                }
                fl_vd term[FL_EW_HALVES], deriv[FL_EW_HALVES] = {{0}};
                FL_VT dfl;
                const int in_float = FL_SFX(fl_ew_b)(kind, has_pw, smooth, &opts, xv, yv, pv,
                                                      sb, term, deriv, &dfl);
                const int scale_f = in_float && !has_w && FL_EW_FLOAT_SCALE && gs_float;
                if (in_float && !scale_f)
                    for (int h = 0; h < FL_EW_HALVES; h++) deriv[h] = FL_SFX(fl_ew_half)(dfl, h);
                for (int h = 0; h < FL_EW_HALVES; h++) {
                    if (has_w) {
                        const fl_vd wh = FL_SFX(fl_ew_half)(wv, h);
                        term[h] = wh * term[h], deriv[h] = wh * deriv[h];
                    }
                    if (valid < FL_EW_GROUP && i + FL_EW_GROUP == n) {
                        for (int k = 0; k < FL_ND; k++)
                            if (j * FL_L + h * FL_ND + k >= valid)
                                term[h][k] = -((fl_vd){0})[k];      /* -0.0 */
                    }
                }
                if (grad_out && scale_f) {
                    const FL_VT gv = FL_SFX(fl_ew_scale)(dfl, gs_hi, gs_lo);
                    memcpy(grad_out + at, &gv, sizeof gv);
                } else if (grad_out) {
                    fl_vd g[FL_EW_HALVES];
                    for (int h = 0; h < FL_EW_HALVES; h++) g[h] = deriv[h] * gs;
                    const FL_VT gv = FL_SFX(fl_ew_join)(g);
                    memcpy(grad_out + at, &gv, sizeof gv);
                }
                if (loss_out) {
                    fl_vd l[FL_EW_HALVES];
                    for (int h = 0; h < FL_EW_HALVES; h++) l[h] = term[h] * ls;
                    const FL_VT lv = FL_SFX(fl_ew_join)(l);
                    memcpy(loss_out + at, &lv, sizeof lv);
                }
                for (int h = 0; h < FL_EW_HALVES; h++) acc[j * FL_EW_HALVES + h] += term[h];
            }
            *w_phase += FL_EW_GROUP;
            while (*w_phase >= w_period) *w_phase -= w_period;
            *pw_phase += FL_EW_GROUP;
            while (*pw_phase >= pw_period) *pw_phase -= pw_period;
        }
    }
}

FL_INLINE double FL_SFX(fl_ew_block_impl)(
    const int kind, const int has_w, const int has_pw, const int smooth,
    const FL_T* x, const FL_T* y, const FL_T* w, ptrdiff_t w_period, ptrdiff_t w_phase,
    const FL_T* pw, ptrdiff_t pw_period, ptrdiff_t pw_phase, ptrdiff_t n,
    FL_T* loss_out, FL_T* grad_out, double* range_out, const fl_ew_opts* o) {
    fl_vd acc[FL_EW_GD];
    for (int k = 0; k < FL_EW_GD; k++) acc[k] = (fl_vd){0};
    const FL_VT pinf = ((FL_VT){0}) + (FL_T)INFINITY;
    FL_VT rng[4] = {pinf, -pinf, pinf, -pinf}, *rp = range_out ? rng : NULL;
    const ptrdiff_t whole = n / FL_EW_GROUP;
    FL_SFX(fl_ew_groups)(kind, has_w, has_pw, smooth, x, y, w, w_period, &w_phase, pw,
                          pw_period, &pw_phase, whole, FL_EW_GROUP, loss_out, grad_out,
                          o, acc, rp);
    const ptrdiff_t done = whole * FL_EW_GROUP;
    const int rest = (int)(n - done);
    if (rest) {
        FL_T tx[FL_EW_GROUP], ty[FL_EW_GROUP], tl[FL_EW_GROUP], tg[FL_EW_GROUP];
        for (int k = 0; k < FL_EW_GROUP; k++) {
            tx[k] = k < rest ? x[done + k] : (FL_T)NAN;
            ty[k] = k < rest ? y[done + k] : (FL_T)NAN;
        }
        FL_SFX(fl_ew_groups)(kind, has_w, has_pw, smooth, tx, ty, w, w_period, &w_phase,
                              pw, pw_period, &pw_phase, 1, rest, loss_out ? tl : NULL,
                              grad_out ? tg : NULL, o, acc, rp);
        for (int k = 0; k < rest; k++) {
            if (grad_out) grad_out[done + k] = tg[k];
            if (loss_out) loss_out[done + k] = tl[k];
        }
    }
    if (range_out) {
        for (int r = 0; r < 4; r++) {
            double v = rng[r][0];
            for (int k = 1; k < FL_L; k++)
                v = (r % 2 ? rng[r][k] > v : rng[r][k] < v) ? rng[r][k] : v;
            range_out[r] = v;
        }
    }
    return fl_ew_lanes_sum(acc);
}

#undef FL_EW_HALVES
