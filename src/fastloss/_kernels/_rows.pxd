# Layer 1: the maths of one row of C scores, written once for float and double.
#
# Every formula here accumulates in double, whatever the storage type, and trusts its
# arguments: the Python layer has validated them.
#
# A row is processed in chunks of ROW_CHUNK elements so that it is read from memory once:
# each chunk is scanned for its maximum and then exponentiated while it is still in L1
# (two passes over the chunk, one over memory). The chunk sums are merged into a running
# (max, sum-of-exp) pair, the "online softmax" of Milakov & Gimelshein (2018), which
# keeps exp from overflowing without a separate max pass over the whole row. Every other
# sum over the row is kept relative to the running max in the same way.
#
# The scores of a row are x_j * s with s = RowSpec.x_scale > 0 (1 / temperature): the max
# and the shifts are in units of x, the exponentials are exp((x_j - shift) * s).

from cython cimport floating
from libc.math cimport INFINITY, NAN, fabs
from libc.stdlib cimport malloc

# The hot loops of a row, in SIMD C (one source for every instruction set: see the
# header). exp there is a polynomial within 2 ulp in float32 (float32 rows compute their
# exponentials in float32, 16 lanes wide) and 1e-15 in float64.
cdef extern from "_simd_rows.h" nogil:
    double fl_max_f32(const float* x, Py_ssize_t n, double* lowest)
    double fl_max_f64(const double* x, Py_ssize_t n, double* lowest)
    ctypedef struct fl_drain:
        const void* src
        void* dst
        double factor
        Py_ssize_t fix_at
        double fix_value
    double fl_exp_sum_f32(const float* x, Py_ssize_t n, double sub, double s, float* out,
                          double* self_dot, double* ones, double lowest,
                          const fl_drain* drain)
    double fl_exp_sum_f64(const double* x, Py_ssize_t n, double sub, double s, double* out,
                          double* self_dot, double* ones, double lowest,
                          const fl_drain* drain)
    void fl_drain_f32(const fl_drain* d, Py_ssize_t n)
    void fl_drain_f64(const fl_drain* d, Py_ssize_t n)
    void fl_stream_fence()
    void fl_scale_f32(float* e, Py_ssize_t n, double factor)
    double fl_log1p_1(double z)
    double fl_exp_1(double z)
    double fl_lse_wide_f32(const float* x, Py_ssize_t n, double max)
    void fl_log1p_n(double* z, Py_ssize_t n)
    void fl_exp_n(double* z, Py_ssize_t n)
    void fl_scale_f64(double* e, Py_ssize_t n, double factor)
    void fl_sub_shift_f32(const float* x, Py_ssize_t n, double a, double b, float* out)
    void fl_sub_shift_f64(const double* x, Py_ssize_t n, double a, double b, double* out)
    ctypedef struct fl_coef_spec:
        const double* class_weight
        double alpha
        double beta
        double t_max
        double t_scale
        double t_shift
        int exp_kind
        int with_entropy
        int weights_fit_float
    void fl_coef_sums_f32(const float* x, const float* t, Py_ssize_t start, Py_ssize_t stop,
                          double shift, const fl_coef_spec* c, double* sum, double* dot,
                          double* entropy)
    void fl_coef_sums_f64(const double* x, const double* t, Py_ssize_t start,
                          Py_ssize_t stop, double shift, const fl_coef_spec* c, double* sum,
                          double* dot, double* entropy)
    void fl_coef_scale_f32(float* e, const float* t, Py_ssize_t start, Py_ssize_t stop,
                           double factor, double coef_scale, const fl_coef_spec* c)
    void fl_coef_scale_f64(double* e, const double* t, Py_ssize_t start, Py_ssize_t stop,
                           double factor, double coef_scale, const fl_coef_spec* c)
    double fl_coef_at_f32(const float* t, Py_ssize_t j, const fl_coef_spec* c)
    double fl_coef_at_f64(const double* t, Py_ssize_t j, const fl_coef_spec* c)
    void fl_entropy_grad_f32(float* e, const float* x, Py_ssize_t n, double factor,
                             double max, double offset)
    void fl_entropy_grad_f64(double* e, const double* x, Py_ssize_t n, double factor,
                             double max, double offset)

cdef enum:
    # 2048 elements: 8 KiB of float32 or 16 KiB of float64, well inside L1.
    ROW_CHUNK = 2048
    # Rows of one chunk computed together (batch_row_stats).
    ROW_BATCH = 16

cdef enum CoefKind:
    COEF_LINEAR = 0     # a_j = (alpha * t_j + beta) * w_j
    COEF_EXP = 1        # a_j = exp((t_j - t_max) t_scale - t_shift) w_j: t log-probs or logits


ctypedef struct RowStats:
    double max           # the shift: max of the finite-or-+inf x, -inf if none
    double sumexp        # S = sum_j exp((x_j - max) s) = ones + rest
    double ones          # the count of terms at the max (each exactly 1)
    double rest          # the sum of the others: S - 1 = (ones - 1) + rest, exactly
    double coef_sum      # A = sum_j a_j (0 without coefficients)
    double coef_dot      # sum_j a_j (max - x_j) (0 without coefficients)
    double coef_entropy  # sum_j a_j log a_j (0 unless CoefSpec.with_entropy)
    double self_dot      # sum_j exp((x_j - max) s) (max - x_j) (0 unless RowSpec.self_dot)


ctypedef struct CoefSpec:
    # Per-class coefficients a_j of a weighted sum of -log softmax(x s)_j, from a target
    # row t passed beside (NULL: none) and class weights w (NULL: 1). Cross-entropy with
    # soft targets has alpha = 1 - eps, label smoothing beta = eps / C; distillation from
    # teacher log-probabilities or logits uses COEF_EXP.
    const double* class_weight
    double alpha
    double beta
    double t_max
    double t_scale
    double t_shift
    CoefKind kind
    bint active
    bint with_entropy
    bint weights_fit_float  # each class weight 0 or within [2^-100, 2^64] (float lanes)


ctypedef struct RowSpec:
    CoefSpec coefs
    double x_scale       # s: the scores are x * s
    bint self_dot        # also sum_j exp((x_j - max) s) (max - x_j), for softmax's entropy


ctypedef struct RowDrain:
    # A row whose second pass waits for the next row's first (streamed rows: fl_drain in
    # _simd_rows.h): what scale_stored_exp and the target's fix would do to it.
    const void* exp         # its stored exponentials (NULL: no row waits)
    void* grad              # its gradient row, aligned as exp modulo 64 bytes
    const double* shift     # its chunk shifts
    RowStats st
    double x_scale
    double scale
    Py_ssize_t fix_at       # the index whose gradient is fix_value (the target), or -1
    double fix_value


cdef inline Py_ssize_t n_row_chunks(Py_ssize_t n_cols) noexcept nogil:
    """Number of chunks a row of n_cols is split into (at least 1)."""
    if n_cols <= ROW_CHUNK:
        return 1
    return (n_cols + ROW_CHUNK - 1) // ROW_CHUNK


cdef inline double chunk_max(const floating* x, Py_ssize_t n, double* lowest) noexcept nogil:
    """Max of x[0:n]; NaN never wins a comparison, so it is skipped here and caught later
    by exp(NaN) = NaN in the sum. For float, also the least element into lowest (it lets
    the float exponentials take a cheaper exact subtraction: fl_exp_sum_f32), else -inf."""
    if floating is float:
        return fl_max_f32(x, n, lowest)
    else:
        lowest[0] = -INFINITY
        return fl_max_f64(x, n, NULL)


cdef inline void scale_row(floating* e, Py_ssize_t n, double factor) noexcept nogil:
    """e_i <- e_i * factor, the product in double."""
    if floating is float:
        fl_scale_f32(e, n, factor)
    else:
        fl_scale_f64(e, n, factor)


cdef inline void sub_shift_row(
    const floating* x, Py_ssize_t n, double a, double b, floating* out
) noexcept nogil:
    """out_i <- (x_i - a) - b, in double."""
    if floating is float:
        fl_sub_shift_f32(x, n, a, b, out)
    else:
        fl_sub_shift_f64(x, n, a, b, out)


cdef inline fl_coef_spec c_coefs(const CoefSpec* spec) noexcept nogil:
    """The coefficients as the C primitives take them."""
    cdef fl_coef_spec c
    c.class_weight = spec.class_weight
    c.alpha = spec.alpha
    c.beta = spec.beta
    c.t_max = spec.t_max
    c.t_scale = spec.t_scale
    c.t_shift = spec.t_shift
    c.exp_kind = spec.kind == COEF_EXP
    c.with_entropy = spec.with_entropy
    c.weights_fit_float = spec.weights_fit_float
    return c


cdef inline double coef_at(
    const floating* t, const CoefSpec* spec, Py_ssize_t j
) noexcept nogil:
    """a_j (t may be NULL for COEF_LINEAR: no target row)."""
    cdef fl_coef_spec c = c_coefs(spec)
    if floating is float:
        return fl_coef_at_f32(t, j, &c)
    else:
        return fl_coef_at_f64(t, j, &c)


cdef inline void coef_chunk(
    const floating* x, const floating* t, const CoefSpec* spec, Py_ssize_t start,
    Py_ssize_t stop, double shift, double* coef_sum, double* coef_dot,
    double* coef_entropy,
) noexcept nogil:
    """Over x[start:stop]: sum_i a_i, sum_i a_i (shift - x_i) and (with_entropy)
    sum_i a_i log a_i, in SIMD double lanes (_simd_rows.h); a zero a_i adds 0, even at
    x = -inf. The order of the sums depends on the positions only."""
    cdef fl_coef_spec c = c_coefs(spec)
    if floating is float:
        fl_coef_sums_f32(x, t, start, stop, shift, &c, coef_sum, coef_dot, coef_entropy)
    else:
        fl_coef_sums_f64(x, t, start, stop, shift, &c, coef_sum, coef_dot, coef_entropy)


cdef inline RowStats row_stats(
    const floating* x,      # IN: one row
    Py_ssize_t n,
    floating* exp_out,      # OUT (may be NULL, may alias x): exp((x - chunk shift) s)
    double* shift_out,      # OUT (NULL iff exp_out is NULL): one shift per chunk
    const floating* t,      # IN (may be NULL): target row, for the coefficients
    const RowSpec* spec,    # IN (NULL: s = 1, no coefficients, no self dot)
    const RowDrain* prev,   # IN (may be NULL): a row whose second pass is done meanwhile
) noexcept nogil:
    """The row's max and sums (see RowStats), optionally storing the exponentials, and
    (prev) another row of n drained to its gradient chunk by chunk, inside the loops that
    compute these exponentials (streamed rows).

    Storing or not, the sums are formed by the same operations in the same order, so a
    loss is the same bits whether or not a gradient is computed. A term whose coefficient
    is 0 contributes 0, even where x_j is -inf (0 * log 0 = 0).
    """
    cdef RowStats st
    cdef double shift, lowest, sub, csum, crest, cones, csd, cdot, ccount, cent, rescale, total
    cdef fl_drain drain
    cdef double s = 1.0 if spec == NULL else spec.x_scale
    cdef bint with_coefs = spec != NULL and spec.coefs.active
    cdef bint with_self_dot = spec != NULL and spec.self_dot
    cdef Py_ssize_t start = 0, stop, k = 0
    st.max = -INFINITY
    st.sumexp = 0.0
    st.ones = 0.0
    st.rest = 0.0
    st.coef_sum = 0.0
    st.coef_dot = 0.0
    st.coef_entropy = 0.0
    st.self_dot = 0.0
    while start < n:
        stop = start + ROW_CHUNK if start + ROW_CHUNK < n else n
        shift = chunk_max(x + start, stop - start, &lowest)
        # A chunk of -inf (and NaN) has no shift: exp(x - 0) gives its 0 (or NaN) terms.
        sub = shift if shift != -INFINITY else 0.0
        if with_coefs:
            # Before the exponentials, which may overwrite x in place.
            coef_chunk(x, t, &spec.coefs, start, stop, sub, &ccount, &cdot, &cent)
            # Terms so far were relative to st.max; rebase them when the max grows.
            if shift > st.max and st.coef_sum != 0.0:
                st.coef_dot = st.coef_dot + (shift - st.max) * st.coef_sum
            if shift != -INFINITY and shift < st.max:
                cdot = cdot + (st.max - shift) * ccount
            st.coef_dot = st.coef_dot + cdot
            st.coef_sum = st.coef_sum + ccount
            st.coef_entropy = st.coef_entropy + cent
        # The sum is formed by the same operations whether or not the terms are stored.
        csd = 0.0
        if prev != NULL:
            drain = chunk_drain(prev, <const floating*> prev.exp, k, start, stop)
        # The C functions directly (they are always inlined; a wrapper may not be).
        if floating is float:
            crest = fl_exp_sum_f32(x + start, stop - start, sub, s,
                                   exp_out + start if exp_out != NULL else NULL,
                                   &csd if with_self_dot else NULL, &cones, lowest,
                                   &drain if prev != NULL else NULL)
        else:
            crest = fl_exp_sum_f64(x + start, stop - start, sub, s,
                                   exp_out + start if exp_out != NULL else NULL,
                                   &csd if with_self_dot else NULL, &cones, lowest,
                                   &drain if prev != NULL else NULL)
        if shift == INFINITY:
            crest = NAN                         # exp(inf - inf): no count makes it finite
        csum = cones + crest
        if exp_out != NULL:
            shift_out[k] = shift
        k += 1
        if shift == -INFINITY:
            st.rest = st.rest + crest           # adds 0, or NaN
            st.self_dot = st.self_dot + csd
        elif shift > st.max:
            # exp(-inf) = 0 for the first chunk, without the call
            rescale = fl_exp_1((st.max - shift) * s) if st.max != -INFINITY else 0.0
            total = st.ones + st.rest
            if with_self_dot and total != 0.0:
                st.self_dot = rescale * (st.self_dot + (shift - st.max) * total)
            st.self_dot = st.self_dot + csd
            st.rest = total * rescale + crest   # the old terms are below 1 now
            st.ones = cones
            st.max = shift
        elif shift == st.max:
            st.ones = st.ones + cones
            st.rest = st.rest + crest
            st.self_dot = st.self_dot + csd
        else:
            rescale = fl_exp_1((shift - st.max) * s)
            st.rest = st.rest + csum * rescale
            if with_self_dot:
                st.self_dot = st.self_dot + rescale * (csd + (st.max - shift) * csum)
        start = stop
    st.sumexp = st.ones + st.rest
    return st


cdef inline void batch_row_stats(
    const floating* x,      # IN: n_rows rows of n <= ROW_CHUNK elements (one chunk)
    Py_ssize_t n_rows,
    Py_ssize_t n,
    double s,               # the scores are x s
    floating* exp_out,      # OUT (n_rows x n), may alias x: exp((x - max) s); or NULL
    double* maxs,           # OUT (n_rows): the rows' max (the shift)
    double* sums,           # OUT (n_rows): S
    double* log_sums,       # OUT (n_rows): log S
    double* self_dots,      # OUT (n_rows): the self dots (RowSpec.self_dot), or NULL
    const CoefSpec* coefs,   # IN: the coefficients' spec, or NULL for none
    const floating* t,       # IN (n_rows x n): their target rows (NULL: see CoefSpec)
    const double* t_maxs,    # IN (n_rows): each row's CoefSpec.t_max, or NULL: coefs's
    const double* t_shifts,  # IN (n_rows): each row's CoefSpec.t_shift (with t_maxs)
    double* coef_sums,       # OUT (n_rows): sum_j a_j (with coefs)
    double* coef_dots,       # OUT (n_rows): sum_j a_j (max - x_j)
    double* coef_entropies,  # OUT (n_rows): sum_j a_j log a_j (CoefSpec.with_entropy)
) noexcept nogil:
    """row_stats and stats_log_sum of a batch of rows of one chunk each, phase by phase:
    the rows are independent, so their latency chains (max, exp sum, log1p: ~70 ns for a
    row of a hundred classes) overlap, and log S goes a vector of rows at a time. The
    same operations as row_stats on one chunk: the same bits."""
    cdef Py_ssize_t r
    cdef double shift, lowest, sub, ones, rest, self_dot
    cdef const floating* row
    cdef floating* out
    cdef CoefSpec row_coefs
    for r in range(n_rows):
        row = x + r * n
        shift = chunk_max(row, n, &lowest)
        sub = shift if shift != -INFINITY else 0.0
        if coefs != NULL:
            # Before the exponentials, which may overwrite x in place.
            row_coefs = coefs[0]
            if t_maxs != NULL:
                row_coefs.t_max = t_maxs[r]
                row_coefs.t_shift = t_shifts[r]
            coef_chunk(row, t + r * n if t != NULL else NULL, &row_coefs, 0, n, sub,
                       &coef_sums[r], &coef_dots[r], &coef_entropies[r])
        self_dot = 0.0
        out = exp_out + r * n if exp_out != NULL else NULL
        # A literal NULL where there is no self dot: the sum's code without it (a
        # pointer known only at run time cost a tenth of a row of 32 classes).
        if floating is float:
            if self_dots == NULL:
                rest = fl_exp_sum_f32(row, n, sub, s, out, NULL, &ones, lowest, NULL)
            else:
                rest = fl_exp_sum_f32(row, n, sub, s, out, &self_dot, &ones, lowest, NULL)
        else:
            if self_dots == NULL:
                rest = fl_exp_sum_f64(row, n, sub, s, out, NULL, &ones, lowest, NULL)
            else:
                rest = fl_exp_sum_f64(row, n, sub, s, out, &self_dot, &ones, lowest, NULL)
        if shift == INFINITY:
            rest = NAN                  # exp(inf - inf): no count makes it finite
        if shift == -INFINITY:
            ones = 0.0                  # (row_stats keeps no count of a -inf chunk)
        maxs[r] = shift
        sums[r] = ones + rest
        log_sums[r] = (ones - 1.0) + rest
        if self_dots != NULL:
            self_dots[r] = self_dot
    fl_log1p_n(log_sums, n_rows)


cdef inline RowStats chunk_stats(double max, double sumexp) noexcept nogil:
    """The RowStats that the second passes (chunk_factor) use, of a row of one chunk,
    from batch_row_stats' max and S; the sums they do not use are NaN."""
    cdef RowStats st
    st.max = max
    st.sumexp = sumexp
    st.ones = NAN
    st.rest = NAN
    st.coef_sum = NAN
    st.coef_dot = NAN
    st.coef_entropy = NAN
    st.self_dot = NAN
    return st


cdef inline double stats_log_sum(RowStats st) noexcept nogil:
    """log S, as log1p(S - 1) with S - 1 = (ones - 1) + rest exact: a small loss log S
    keeps its relative accuracy, which log(S) would round away."""
    return fl_log1p_1((st.ones - 1.0) + st.rest)


cdef inline double stats_lse(RowStats st, double s) noexcept nogil:
    """log(sum_j exp(x_j s)) of the row."""
    return st.max * s + stats_log_sum(st)


cdef inline double refined_lse(
    const floating* x, Py_ssize_t n, double max, double sumexp, double lse
) noexcept nogil:
    """A row's logsumexp lse = max + log S (S = sumexp, relative to max; s = 1), for a
    float row recomputed with its exponentials in double lanes (fl_lse_wide_f32) where
    the float exponentials' error, 2^-22 (S - 1) / S of log S at most, may exceed two
    float ulps of lse: where max < 0 cancels log S. Elsewhere lse >= log S >= (S - 1) / S
    and the error stays within two ulps. x must still hold the row."""
    if floating is float:
        if max < 0.0 and max > -INFINITY and (sumexp - 1.0) > fabs(lse) * sumexp:
            return fl_lse_wide_f32(x, n, max)
    return lse


cdef inline double chunk_factor(
    const double* shift, Py_ssize_t k, RowStats st, double s
) noexcept nogil:
    """exp((shift_k - max) s) / S: turns chunk k's stored exponentials into softmax.
    exp(-inf - max) = 0 zeroes a masked chunk; the chunk of the max needs no exp."""
    if shift[k] == st.max:
        return 1.0 / st.sumexp
    return fl_exp_1((shift[k] - st.max) * s) / st.sumexp


cdef inline fl_drain chunk_drain(
    const RowDrain* row, const floating* exp, Py_ssize_t k, Py_ssize_t start, Py_ssize_t stop
) noexcept nogil:
    """Chunk k, [start, stop), of a waiting row (exp: its exponentials), as fl_drain."""
    cdef fl_drain d
    d.src = exp + start
    d.dst = <floating*> row.grad + start
    d.factor = chunk_factor(row.shift, k, row.st, row.x_scale) * row.scale
    d.fix_at = row.fix_at - start if start <= row.fix_at < stop else -1
    d.fix_value = row.fix_value
    return d


cdef inline void drain_row(const RowDrain* row, const floating* exp, Py_ssize_t n) noexcept nogil:
    """A waiting row's whole second pass (the last of a thread's streamed rows)."""
    cdef fl_drain d
    cdef Py_ssize_t start = 0, stop, k = 0
    while start < n:
        stop = start + ROW_CHUNK if start + ROW_CHUNK < n else n
        d = chunk_drain(row, exp, k, start, stop)
        if floating is float:
            fl_drain_f32(&d, stop - start)
        else:
            fl_drain_f64(&d, stop - start)
        k += 1
        start = stop


cdef inline void scale_stored_exp(
    floating* e,            # IN/OUT: what row_stats stored; becomes the result
    Py_ssize_t n,
    const double* shift,    # IN: the chunk shifts row_stats stored
    RowStats st,
    double scale,
    const floating* t,      # IN (may be NULL): target row
    const RowSpec* spec,    # IN (may be NULL): x_scale, and coefficients to subtract
    double coef_scale,
) noexcept nogil:
    """Second pass: e_j <- scale * softmax(x s)_j - coef_scale * a_j, chunk by chunk."""
    cdef fl_coef_spec coefs
    cdef double factor
    cdef double s = 1.0 if spec == NULL else spec.x_scale
    cdef bint with_coefs = spec != NULL and spec.coefs.active
    cdef Py_ssize_t start = 0, stop, k = 0
    while start < n:
        stop = start + ROW_CHUNK if start + ROW_CHUNK < n else n
        factor = chunk_factor(shift, k, st, s) * scale
        if with_coefs:
            coefs = c_coefs(&spec.coefs)
            if floating is float:
                fl_coef_scale_f32(e, t, start, stop, factor, coef_scale, &coefs)
            else:
                fl_coef_scale_f64(e, t, start, stop, factor, coef_scale, &coefs)
        else:
            scale_row(e + start, stop - start, factor)
        k += 1
        start = stop


cdef inline RowStats scaled_softmax_row(
    const floating* x,      # IN: one row
    Py_ssize_t n,
    floating* out,          # OUT (may alias x): scale * softmax(x)
    double* shift,          # scratch: one double per chunk
    double scale,
) noexcept nogil:
    """Both passes of a row: read it once, storing exponentials, then rescale them."""
    cdef RowStats st = row_stats(x, n, out, shift, <floating*> NULL, NULL, NULL)
    scale_stored_exp(out, n, shift, st, scale, <floating*> NULL, NULL, 0.0)
    return st


cdef inline double softmax_entropy(RowStats st) noexcept nogil:
    """H(softmax(x)) = lse - sum_j q_j x_j = log S + self_dot / S (row_stats with
    self_dot, s = 1)."""
    return stats_log_sum(st) + st.self_dot / st.sumexp


cdef inline void scale_entropy_grad(
    floating* e,            # IN/OUT: what row_stats stored (s = 1); becomes the gradient
    const floating* x,      # IN: the row
    Py_ssize_t n,
    const double* shift,    # IN: the chunk shifts row_stats stored
    RowStats st,
    double log_sum,         # IN: stats_log_sum(st)
    double entropy,         # IN: softmax_entropy(st)
    double scale,
) noexcept nogil:
    """Second pass for H(softmax(x)): e_j <- scale * q_j (lse - x_j - H), with lse - x_j
    = (max - x_j) + log S, max - x_j exact for nearby values. A class of probability 0
    gets gradient 0."""
    cdef double factor, offset = log_sum - entropy
    cdef Py_ssize_t start = 0, stop, k = 0
    while start < n:
        stop = start + ROW_CHUNK if start + ROW_CHUNK < n else n
        factor = chunk_factor(shift, k, st, 1.0) * scale
        if floating is float:
            fl_entropy_grad_f32(e + start, x + start, stop - start, factor, st.max, offset)
        else:
            fl_entropy_grad_f64(e + start, x + start, stop - start, factor, st.max, offset)
        k += 1
        start = stop


cdef inline Py_ssize_t chunk_shift_stride(Py_ssize_t n_chunks) noexcept nogil:
    """Doubles between two threads' scratch: n_chunks rounded up to a 64-byte line, plus a
    line of gap, so no two threads ever write the same cache line (false sharing made a
    second thread useless for small C)."""
    return (n_chunks + 7) // 8 * 8 + 8


cdef inline double* alloc_thread_scratch(int n_threads, Py_ssize_t per_thread) except NULL:
    """per_thread doubles for each thread (callers pad per_thread, e.g. with
    chunk_shift_stride, so that threads never share a cache line)."""
    cdef double* buf = <double*> malloc(sizeof(double) * per_thread * n_threads)
    if buf == NULL:
        raise MemoryError("fastloss: cannot allocate the per-thread scratch")
    return buf


# ---- rows of few classes, one row per SIMD lane (_simd_small.h) ------------------------

cdef extern from "_simd_small.h" nogil:
    enum:
        FL_SMALL_C      # rows of at most this many classes take the block kernels below
        FL_NF           # float lanes: rows per float block
        FL_ND           # double lanes: rows per double block
        FL_SOFT_PROBS, FL_SOFT_LOG_PROBS, FL_SOFT_LOGITS   # fl_small_ce_spec.teacher_kind
    ctypedef struct fl_small_plan_f32:
        int n_classes
    ctypedef struct fl_small_plan_f64:
        int n_classes
    ctypedef struct fl_small_ce_spec:
        const double* class_weight
        const double* sample_weight
        double hard_scale
        double smoothing
        double coef_sum
        double z_loss
        double grad_scale
        Py_ssize_t ignore_index
        int teacher_kind
        bint with_entropy
        double x_scale
        double loss_factor
    int FL_SMALL_CE_BLOCKS(int c)     # blocks per call of fl_small_ce_* at C = c
    const fl_small_plan_f32* fl_small_plan_f32_get(int c)
    const fl_small_plan_f64* fl_small_plan_f64_get(int c)
    void fl_small_softmax_f32(const float* x, Py_ssize_t rows, const fl_small_plan_f32* p,
                              float* out)
    void fl_small_softmax_f64(const double* x, Py_ssize_t rows, const fl_small_plan_f64* p,
                              double* out)
    void fl_small_log_softmax_f32(const float* x, Py_ssize_t rows,
                                  const fl_small_plan_f32* p, float* out)
    void fl_small_log_softmax_f64(const double* x, Py_ssize_t rows,
                                  const fl_small_plan_f64* p, double* out)
    void fl_small_logsumexp_f64(const double* x, Py_ssize_t rows,
                                const fl_small_plan_f64* p, double* out)
    void fl_small_logsumexp_wide_f32(const float* x, Py_ssize_t rows,
                                     const fl_small_plan_f32* p, double* out)
    void fl_small_logsumexp_narrow_f32(const float* x, Py_ssize_t rows,
                                       const fl_small_plan_f32* p, float* out)
    void fl_small_ce_f32(const float* x, Py_ssize_t rows, const Py_ssize_t* y,
                         Py_ssize_t row0, const fl_small_plan_f32* p,
                         const fl_small_ce_spec* spec, double* loss_out, double* loss_sum,
                         double* lse_out, float* grad)
    void fl_small_ce_f64(const double* x, Py_ssize_t rows, const Py_ssize_t* y,
                         Py_ssize_t row0, const fl_small_plan_f64* p,
                         const fl_small_ce_spec* spec, double* loss_out, double* loss_sum,
                         double* lse_out, double* grad)
    void fl_small_soft_ce_f32(const float* x, const float* q, Py_ssize_t rows,
                              Py_ssize_t row0, const fl_small_plan_f32* pf,
                              const fl_small_plan_f64* p, const fl_small_ce_spec* spec,
                              double* loss_out, double* lse_out, float* grad)
    void fl_small_soft_ce_f64(const double* x, const double* q, Py_ssize_t rows,
                              Py_ssize_t row0, const fl_small_plan_f64* p,
                              const fl_small_ce_spec* spec, double* loss_out,
                              double* lse_out, double* grad)
    void fl_small_entropy_f32(const float* x, Py_ssize_t rows, const fl_small_plan_f32* p,
                              double unit, double grad_scale, double* out, float* grad)
    void fl_small_entropy_f64(const double* x, Py_ssize_t rows,
                              const fl_small_plan_f64* p, double unit, double grad_scale,
                              double* out, double* grad)


cdef inline Py_ssize_t small_block_rows(const floating* witness) noexcept nogil:
    """Rows per block of the small-C kernels: one per lane of the dtype's vectors."""
    if floating is float:
        return FL_NF
    else:
        return FL_ND


cdef inline const void* small_plan(int n_classes, const floating* witness) except NULL:
    """The (cached) transposition plan of the dtype for C = n_classes <= FL_SMALL_C."""
    cdef const void* plan
    if floating is float:
        plan = fl_small_plan_f32_get(n_classes)
    else:
        plan = fl_small_plan_f64_get(n_classes)
    if plan == NULL:
        raise MemoryError("fastloss: cannot allocate a transposition plan")
    return plan


cdef inline void small_softmax(
    const floating* x, Py_ssize_t rows, const void* plan, floating* out, bint take_log
) noexcept nogil:
    """softmax, or log_softmax (take_log), of a block of rows."""
    if floating is float:
        if take_log:
            fl_small_log_softmax_f32(x, rows, <const fl_small_plan_f32*> plan, out)
        else:
            fl_small_softmax_f32(x, rows, <const fl_small_plan_f32*> plan, out)
    else:
        if take_log:
            fl_small_log_softmax_f64(x, rows, <const fl_small_plan_f64*> plan, out)
        else:
            fl_small_softmax_f64(x, rows, <const fl_small_plan_f64*> plan, out)


cdef inline void small_ce(
    const floating* x, Py_ssize_t rows, const Py_ssize_t* y, Py_ssize_t row0,
    const void* plan, const fl_small_ce_spec* spec, double* loss_out, double* loss_sum,
    double* lse_out, floating* grad,
) noexcept nogil:
    """Cross-entropy with class targets of rows <= FL_SMALL_CE_BLOCKS(C) blocks of rows:
    row losses into loss_out and their sum into loss_sum, each unless NULL."""
    if floating is float:
        fl_small_ce_f32(x, rows, y, row0, <const fl_small_plan_f32*> plan, spec, loss_out,
                        loss_sum, lse_out, grad)
    else:
        fl_small_ce_f64(x, rows, y, row0, <const fl_small_plan_f64*> plan, spec, loss_out,
                        loss_sum, lse_out, grad)


cdef inline void small_soft_ce(
    const floating* x, const floating* q, Py_ssize_t rows, Py_ssize_t row0,
    const void* plan, const fl_small_plan_f64* plan_wide, const fl_small_ce_spec* spec,
    double* loss_out, double* lse_out, floating* grad,
) noexcept nogil:
    """Cross-entropy against the probability rows q of a block (in double lanes, or float
    lanes for float rows where fl_small_soft_in_float allows; plan: the dtype's)."""
    if floating is float:
        fl_small_soft_ce_f32(x, q, rows, row0, <const fl_small_plan_f32*> plan, plan_wide,
                             spec, loss_out, lse_out, grad)
    else:
        fl_small_soft_ce_f64(x, q, rows, row0, plan_wide, spec, loss_out, lse_out, grad)


cdef inline void small_entropy(
    const floating* x, Py_ssize_t rows, const void* plan, double unit, double grad_scale,
    double* out, floating* grad,
) noexcept nogil:
    """The entropy of softmax of a block's rows (small_block_rows), times unit, and
    grad_scale dH/dx (float rows in float lanes, their sums in double; plan: the
    dtype's)."""
    if floating is float:
        fl_small_entropy_f32(x, rows, <const fl_small_plan_f32*> plan, unit, grad_scale,
                             out, grad)
    else:
        fl_small_entropy_f64(x, rows, <const fl_small_plan_f64*> plan, unit, grad_scale,
                             out, grad)
