/* The row primitives that are the same code for float and double rows: included once per
 * element type by engine/rows.h, with
 *   FL_T     the element type (float or double),  FL_VT its vector (fl_vf or fl_vd),
 *   FL_L    its lanes (FL_NF or FL_ND),          FL_SFX(name) name##_f32 or name##_f64,
 *   FL_VMAX, FL_VMIN  its lane-wise max and min.
 * (No include guard: it is meant to be included twice.)
 */

/* The exponential sum of a row of at most FL_SHORT_ROW elements, one at a time in double
 * (libm's exp): fl_exp_sum_T's contract. */
static inline double FL_SFX(fl_short_exp_sum)(const FL_T* x, ptrdiff_t n, double sub,
                                              double s, FL_T* out, double* self_dot,
                                              double* ones) {
    double sum = 0.0, dot = 0.0, at_sub = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const double xi = x[i];             /* before a store in place overwrites it */
        const double e = exp((xi - sub) * s);
        if (out) out[i] = (FL_T)e;
        if (xi == sub) at_sub += 1.0;
        else sum += e;
        if (self_dot && e != 0.0) dot += e * (sub - xi);
    }
    if (self_dot) *self_dot = dot;
    *ones = at_sub;
    return sum;
}

/* The max of x[0:n] as double, NaN skipped (exp(NaN) = NaN catches it in the sum); -inf
 * when there is no other value. With lowest_out (NULL: not), also the least element, NaN
 * skipped (-inf for rows below FL_LOWEST_MIN_ROW: unknown). Four accumulators hide the
 * max's latency; the rest of the row goes a vector at a time, its last partial vector
 * padded with -inf. */
FL_INLINE double FL_SFX(fl_max)(const FL_T* x, ptrdiff_t n, double* lowest_out) {
    if (lowest_out && n < FL_LOWEST_MIN_ROW) {
        *lowest_out = -INFINITY;
        lowest_out = NULL;
    }
    FL_VT lowest, highest;
    for (int k = 0; k < FL_L; k++) lowest[k] = -INFINITY, highest[k] = INFINITY;
    FL_VT m[4] = {lowest, lowest, lowest, lowest};
    FL_VT low[4] = {highest, highest, highest, highest};
    ptrdiff_t i = 0;
    for (; i + 4 * FL_L <= n; i += 4 * FL_L) {
        for (int q = 0; q < 4; q++) {
            FL_VT a;
            memcpy(&a, x + i + q * FL_L, sizeof a);
            m[q] = FL_VMAX(a, m[q]);            /* a NaN in a keeps m */
            if (lowest_out) low[q] = FL_VMIN(a, low[q]);
        }
    }
    for (; i < n; i += FL_L) {
        FL_VT a;
        if (n - i >= FL_L) {
            memcpy(&a, x + i, sizeof a);
            if (lowest_out) low[0] = FL_VMIN(a, low[0]);
        } else {
            a = FL_SFX(fl_load_tail)(x + i, (int)(n - i));
            if (lowest_out) {       /* the row's last FL_L elements: some seen again */
                FL_VT b;
                memcpy(&b, x + n - FL_L, sizeof b);
                low[0] = FL_VMIN(b, low[0]);
            }
        }
        m[0] = FL_VMAX(a, m[0]);
    }
    if (lowest_out) {
        low[0] = FL_VMIN(FL_VMIN(low[1], low[0]), FL_VMIN(low[3], low[2]));
        *lowest_out = -FL_SFX(fl_hmax)(-low[0]);
    }
    m[0] = FL_VMAX(FL_VMAX(m[1], m[0]), FL_VMAX(m[3], m[2]));
    return FL_SFX(fl_hmax)(m[0]);
}

/* ---- streamed rows: a waiting row's second pass (fl_drain) ----
 * fl_drain_start_T: the first element of the chunk from which dst is aligned for
 * streaming stores (n where the product goes element by element). fl_drain_vectors_T:
 * elements [i, i + m) streamed, m a multiple of the lanes. fl_drain_edges_T: elements
 * [0, start) and [stop, n) stored as usual. fl_drain_T: a whole chunk of n. */
FL_INLINE ptrdiff_t FL_SFX(fl_drain_start)(const fl_drain* d, ptrdiff_t n) {
    if (!FL_SFX(fl_factor_lanes)(d->factor)) return n;
    const size_t off = (uintptr_t)d->dst % FL_WIDTH;
    const ptrdiff_t head = off ? (ptrdiff_t)((FL_WIDTH - off) / sizeof(FL_T)) : 0;
    return head < n ? head : n;
}
FL_INLINE void FL_SFX(fl_drain_vectors)(const fl_drain* d, ptrdiff_t i, ptrdiff_t m) {
    const FL_T* src = (const FL_T*)d->src;
    FL_T* dst = (FL_T*)d->dst;
    const FL_T f = (FL_T)d->factor;
    for (ptrdiff_t j = i; j < i + m; j += FL_L) {
        FL_VT v;
        memcpy(&v, src + j, sizeof v);
        v = v * f;
        if (d->fix_at >= j && d->fix_at < j + FL_L) v[d->fix_at - j] = (FL_T)d->fix_value;
        FL_SFX(fl_stream)(dst + j, v);
    }
}
FL_INLINE void FL_SFX(fl_drain_edges)(const fl_drain* d, ptrdiff_t start, ptrdiff_t stop,
                                       ptrdiff_t n) {
    const FL_T* src = (const FL_T*)d->src;
    FL_T* dst = (FL_T*)d->dst;
    for (int part = 0; part < 2; part++) {
        for (ptrdiff_t j = part ? stop : 0; j < (part ? n : start); j++)
            dst[j] = j == d->fix_at ? (FL_T)d->fix_value
                                    : FL_SFX(fl_drain_one)(src[j], d->factor);
    }
}
FL_INLINE void FL_SFX(fl_drain)(const fl_drain* d, ptrdiff_t n) {
    const ptrdiff_t start = FL_SFX(fl_drain_start)(d, n);
    const ptrdiff_t m = (n - start) / FL_L * FL_L;
    FL_SFX(fl_drain_vectors)(d, start, m);
    FL_SFX(fl_drain_edges)(d, start, start + m, n);
}
