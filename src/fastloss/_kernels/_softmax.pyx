"""Row kernels for softmax, log_softmax and logsumexp over the last axis of (N, C) arrays.

Layer 2: typed loops over validated, C-contiguous memoryviews, without the GIL. The maths
of one row lives in _rows.pxd.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport log
from libc.stdlib cimport free

from fastloss._kernels._rows cimport (
    RowStats,
    alloc_thread_scratch,
    chunk_shift_stride,
    n_row_chunks,
    row_stats,
    scaled_softmax_row,
    stats_lse,
)


def softmax_rows(
    const floating[:, ::1] x,       # IN
    floating[:, ::1] out,           # OUT (may be x itself)
    int n_threads,
):
    cdef Py_ssize_t n_rows = x.shape[0], n_cols = x.shape[1], i
    cdef Py_ssize_t stride = chunk_shift_stride(n_row_chunks(n_cols))
    cdef double* shifts = alloc_thread_scratch(n_threads, stride)
    try:
        for i in prange(n_rows, nogil=True, schedule="static", num_threads=n_threads):
            scaled_softmax_row(&x[i, 0], n_cols, &out[i, 0], shifts + threadid() * stride, 1.0)
    finally:
        free(shifts)


def log_softmax_rows(
    const floating[:, ::1] x,       # IN
    floating[:, ::1] out,           # OUT (may be x itself)
    int n_threads,
):
    cdef Py_ssize_t n_rows = x.shape[0], n_cols = x.shape[1], i, j
    cdef RowStats st
    cdef double log_sum
    for i in prange(n_rows, nogil=True, schedule="static", num_threads=n_threads):
        st = row_stats(&x[i, 0], n_cols, <floating*> NULL, NULL, <floating*> NULL, NULL)
        log_sum = log(st.sumexp)
        # (x - max) - log(sum) rather than x - lse: x - max is exact for nearby values.
        for j in range(n_cols):
            out[i, j] = <floating>((x[i, j] - st.max) - log_sum)


def logsumexp_rows(
    const floating[:, ::1] x,       # IN
    floating[::1] out,              # OUT
    int n_threads,
):
    cdef Py_ssize_t n_rows = x.shape[0], n_cols = x.shape[1], i
    for i in prange(n_rows, nogil=True, schedule="static", num_threads=n_threads):
        out[i] = <floating> stats_lse(
            row_stats(&x[i, 0], n_cols, <floating*> NULL, NULL, <floating*> NULL, NULL)
        )
