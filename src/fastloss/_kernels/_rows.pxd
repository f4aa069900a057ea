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
    double max      # the shift: max of the finite-or-+inf scores, -inf if none
    double sumexp   # sum_j exp(x_j - max)


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


cdef inline RowStats row_stats(
    const floating* x,      # IN: one row
    Py_ssize_t n,
    floating* exp_out,      # OUT (may be NULL, may alias x): exp(x - chunk shift)
    double* shift_out,      # OUT (NULL iff exp_out is NULL): one shift per chunk
) noexcept nogil:
    """The row's max and sum of exp(x - max), optionally storing the exponentials.

    Storing or not, the sum is formed by the same operations in the same order, so the
    loss is the same bits whether or not a gradient is computed.
    """
    cdef RowStats st
    cdef double shift, sub, ex, csum
    cdef Py_ssize_t start = 0, stop, i, k = 0
    st.max = -INFINITY
    st.sumexp = 0.0
    while start < n:
        stop = start + ROW_CHUNK if start + ROW_CHUNK < n else n
        shift = chunk_max(x + start, stop - start)
        # A chunk of -inf (and NaN) has no shift: exp(x - 0) gives its 0 (or NaN) terms.
        sub = shift if shift != -INFINITY else 0.0
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
    floating* e,            # IN/OUT: what row_stats stored; becomes scale * softmax
    Py_ssize_t n,
    const double* shift,    # IN: the chunk shifts row_stats stored
    RowStats st,
    double scale,
) noexcept nogil:
    """Second pass: e_i <- scale * exp(x_i - max) / sumexp, chunk by chunk."""
    cdef double factor
    cdef Py_ssize_t start = 0, stop, i, k = 0
    while start < n:
        stop = start + ROW_CHUNK if start + ROW_CHUNK < n else n
        # exp(-inf - max) = 0 zeroes a masked chunk.
        factor = exp(shift[k] - st.max) * (scale / st.sumexp)
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
    cdef RowStats st = row_stats(x, n, out, shift)
    scale_stored_exp(out, n, shift, st, scale)
    return st


cdef inline double cross_entropy_row_loss(RowStats st, double target_logit) noexcept nogil:
    """-log softmax(x)[y] = logsumexp(x) - x_y, with the max subtracted from x_y first:
    exact for nearby values, so large logits (1e4 in float32) lose no accuracy."""
    return (st.max - target_logit) + log(st.sumexp)


cdef inline double scaled_softmax_minus_one(
    RowStats st, double target_logit, double scale
) noexcept nogil:
    """scale * (softmax(x)_y - 1) for the target entry, in double: p_y - 1 cancels when the
    prediction is confident, so it is rounded only once, by the caller's store."""
    return exp(target_logit - st.max) * (scale / st.sumexp) - scale


cdef inline Py_ssize_t chunk_shift_stride(Py_ssize_t n_chunks) noexcept nogil:
    """Doubles between two threads' scratch: n_chunks rounded up to a 64-byte line, plus a
    line of gap, so no two threads ever write the same cache line (false sharing made a
    second thread useless for small C)."""
    return (n_chunks + 7) // 8 * 8 + 8


cdef inline double* alloc_chunk_shifts(int n_threads, Py_ssize_t n_chunks) except NULL:
    """Scratch for the chunk shifts: chunk_shift_stride(n_chunks) doubles per thread."""
    cdef double* buf = <double*> malloc(sizeof(double) * chunk_shift_stride(n_chunks) * n_threads)
    if buf == NULL:
        raise MemoryError("fastloss: cannot allocate the per-thread row scratch")
    return buf
