# Layer 1: the maths of one row of C scores, written once for float and double.
#
# Every formula here accumulates in double, whatever the storage type, and trusts its
# arguments: the Python layer has validated them.
#
# A row is processed in chunks of ROW_CHUNK elements so that it is read from memory once:
# each chunk is scanned for its maximum and then exponentiated while it is still in L1
# (two passes over the chunk, one over memory). The chunk sums are merged into a running
# (max, sum-of-exp) pair, the "online softmax" of Milakov & Gimelshein (2018), which
# keeps exp from overflowing without a separate max pass over the whole row.

from cython cimport floating
from libc.math cimport INFINITY, exp, log
from libc.stdlib cimport malloc

cdef enum:
    # 2048 elements: 8 KiB of float32 or 16 KiB of float64, well inside L1.
    ROW_CHUNK = 2048


ctypedef struct RowStats:
    double max       # the shift: max of the finite-or-+inf scores, -inf if none
    double sumexp    # sum_j exp(x_j - max)
    double coef_sum  # A = sum_j a_j (0 unless CoefSpec.active)
    double coef_dot  # sum_j a_j * (max - x_j) (0 unless CoefSpec.active)


ctypedef struct CoefSpec:
    # Per-class coefficients a_j = (alpha * t_j + beta) * w_j of a weighted sum of
    # -log softmax(x)_j: t a soft-target row (passed beside), w class weights (NULL: 1).
    # Cross-entropy with soft targets has alpha = 1 - eps, label smoothing beta = eps / C.
    const double* class_weight
    double alpha
    double beta
    bint active


cdef inline Py_ssize_t n_row_chunks(Py_ssize_t n_cols) noexcept nogil:
    """Number of chunks a row of n_cols is split into (at least 1)."""
    if n_cols <= ROW_CHUNK:
        return 1
    return (n_cols + ROW_CHUNK - 1) // ROW_CHUNK


cdef inline double chunk_max(const floating* x, Py_ssize_t n) noexcept nogil:
    """Max of x[0:n]; NaN never wins a comparison, so it is skipped here and caught later
    by exp(NaN) = NaN in the sum."""
    cdef double m = -INFINITY
    cdef Py_ssize_t i
    for i in range(n):
        if x[i] > m:
            m = x[i]
    return m


cdef inline double coef_at(
    const floating* t, const CoefSpec* spec, Py_ssize_t j
) noexcept nogil:
    """a_j = (alpha * t_j + beta) * w_j (t may be NULL: no soft target)."""
    cdef double a = spec.beta
    if t != NULL:
        a = a + spec.alpha * t[j]
    if spec.class_weight != NULL:
        a = a * spec.class_weight[j]
    return a


cdef inline void coef_chunk(
    const floating* x, const floating* t, const CoefSpec* spec, Py_ssize_t start,
    Py_ssize_t stop, double shift, double* coef_sum, double* coef_dot,
) noexcept nogil:
    """sum_j a_j and sum_j a_j (shift - x_j) over x[start:stop], a term with a_j = 0
    counting 0. Four interleaved accumulators, added in a fixed order, keep the adds'
    latency from serialising the loop (without reordering that depends on the data)."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef double d0 = 0.0, d1 = 0.0, d2 = 0.0, d3 = 0.0
    cdef double a0, a1, a2, a3
    cdef Py_ssize_t i = start
    while i + 4 <= stop:
        a0 = coef_at(t, spec, i)
        a1 = coef_at(t, spec, i + 1)
        a2 = coef_at(t, spec, i + 2)
        a3 = coef_at(t, spec, i + 3)
        s0 += a0
        s1 += a1
        s2 += a2
        s3 += a3
        d0 += a0 * (shift - x[i]) if a0 != 0.0 else 0.0
        d1 += a1 * (shift - x[i + 1]) if a1 != 0.0 else 0.0
        d2 += a2 * (shift - x[i + 2]) if a2 != 0.0 else 0.0
        d3 += a3 * (shift - x[i + 3]) if a3 != 0.0 else 0.0
        i += 4
    while i < stop:
        a0 = coef_at(t, spec, i)
        s0 += a0
        d0 += a0 * (shift - x[i]) if a0 != 0.0 else 0.0
        i += 1
    coef_sum[0] = (s0 + s1) + (s2 + s3)
    coef_dot[0] = (d0 + d1) + (d2 + d3)


cdef inline RowStats row_stats(
    const floating* x,      # IN: one row
    Py_ssize_t n,
    floating* exp_out,      # OUT (may be NULL, may alias x): exp(x - chunk shift)
    double* shift_out,      # OUT (NULL iff exp_out is NULL): one shift per chunk
    const floating* t,      # IN (may be NULL): soft-target row, for the coefficients
    const CoefSpec* spec,   # IN (may be NULL): coefficients a_j, see CoefSpec
) noexcept nogil:
    """The row's max, sum of exp(x - max) and, with coefficients, sum_j a_j and
    sum_j a_j (max - x_j), optionally storing the exponentials.

    Storing or not, the sums are formed by the same operations in the same order, so the
    loss is the same bits whether or not a gradient is computed. A term whose coefficient
    is 0 contributes 0, even where x_j is -inf (0 * log 0 = 0).
    """
    cdef RowStats st
    cdef double shift, sub, ex, csum, cdot, ccount
    cdef Py_ssize_t start = 0, stop, i, k = 0
    cdef bint with_coefs = spec != NULL and spec.active
    st.max = -INFINITY
    st.sumexp = 0.0
    st.coef_sum = 0.0
    st.coef_dot = 0.0
    while start < n:
        stop = start + ROW_CHUNK if start + ROW_CHUNK < n else n
        shift = chunk_max(x + start, stop - start)
        # A chunk of -inf (and NaN) has no shift: exp(x - 0) gives its 0 (or NaN) terms.
        sub = shift if shift != -INFINITY else 0.0
        if with_coefs:
            # Before the exponentials, which may overwrite x in place.
            coef_chunk(x, t, spec, start, stop, sub, &ccount, &cdot)
            # Terms so far were relative to st.max; rebase them when the max grows.
            if shift > st.max and st.coef_sum != 0.0:
                st.coef_dot = st.coef_dot + (shift - st.max) * st.coef_sum
            if shift != -INFINITY and shift < st.max:
                cdot = cdot + (st.max - shift) * ccount
            st.coef_dot = st.coef_dot + cdot
            st.coef_sum = st.coef_sum + ccount
        csum = 0.0
        if exp_out != NULL:
            for i in range(start, stop):
                ex = exp(x[i] - sub)
                exp_out[i] = <floating>ex
                csum = csum + ex
            shift_out[k] = shift
        else:
            for i in range(start, stop):
                ex = exp(x[i] - sub)
                csum = csum + ex
        k += 1
        if shift == -INFINITY:
            st.sumexp = st.sumexp + csum        # adds 0, or NaN
        elif shift > st.max:
            st.sumexp = st.sumexp * exp(st.max - shift) + csum
            st.max = shift
        else:
            st.sumexp = st.sumexp + csum * exp(shift - st.max)
        start = stop
    return st


cdef inline double stats_lse(RowStats st) noexcept nogil:
    """log(sum_j exp(x_j)) of the row."""
    return st.max + log(st.sumexp)


cdef inline void scale_stored_exp(
    floating* e,            # IN/OUT: what row_stats stored; becomes the result
    Py_ssize_t n,
    const double* shift,    # IN: the chunk shifts row_stats stored
    RowStats st,
    double scale,
    const floating* t,      # IN (may be NULL): soft-target row
    const CoefSpec* spec,   # IN (may be NULL): coefficients to subtract
    double coef_scale,
) noexcept nogil:
    """Second pass: e_j <- scale * softmax(x)_j - coef_scale * a_j, chunk by chunk."""
    cdef double factor
    cdef Py_ssize_t start = 0, stop, i, k = 0
    cdef bint with_coefs = spec != NULL and spec.active
    while start < n:
        stop = start + ROW_CHUNK if start + ROW_CHUNK < n else n
        # exp(-inf - max) = 0 zeroes a masked chunk.
        factor = exp(shift[k] - st.max) * (scale / st.sumexp)
        if with_coefs:
            for i in range(start, stop):
                e[i] = <floating>(e[i] * factor - coef_scale * coef_at(t, spec, i))
        else:
            for i in range(start, stop):
                e[i] = <floating>(e[i] * factor)
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
    cdef RowStats st = row_stats(x, n, out, shift, <floating*> NULL, NULL)
    scale_stored_exp(out, n, shift, st, scale, <floating*> NULL, NULL, 0.0)
    return st


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
