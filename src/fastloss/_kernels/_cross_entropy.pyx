"""Fused cross-entropy kernels over (N, C) logits with integer class targets.

Layer 2: typed loops without the GIL; the row maths lives in _rows.pxd. The gradient
kernel makes two passes over each row: the first stores exp(x - shift) in the gradient
buffer while it sums (reading each logit once), the second rescales that buffer while it
is still in cache. With grad_out = logits the logits are overwritten in place; each
row's target logit is read before its row is overwritten.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdlib cimport free

cimport numpy as cnp

from fastloss._kernels._rows cimport (
    RowStats,
    alloc_chunk_shifts,
    chunk_shift_stride,
    cross_entropy_row_loss,
    n_row_chunks,
    row_stats,
    scaled_softmax_minus_one,
    scaled_softmax_row,
)

cnp.import_array()


def cross_entropy_rows(
    const floating[:, ::1] logits,  # IN
    const cnp.intp_t[::1] target,   # IN: class indices in [0, C)
    double[::1] loss_out,           # OUT: per-row loss
    int n_threads,
):
    cdef Py_ssize_t n_rows = logits.shape[0], n_cols = logits.shape[1], i
    cdef RowStats st
    for i in prange(n_rows, nogil=True, schedule="static", num_threads=n_threads):
        st = row_stats(&logits[i, 0], n_cols, <floating*> NULL, <double*> NULL)
        loss_out[i] = cross_entropy_row_loss(st, logits[i, target[i]])


def cross_entropy_grad_rows(
    const floating[:, ::1] logits,  # IN
    const cnp.intp_t[::1] target,   # IN: class indices in [0, C)
    double[::1] loss_out,           # OUT: per-row loss
    floating[:, ::1] grad_out,      # OUT: grad_scale * (softmax - onehot); may be logits
    double grad_scale,
    int n_threads,
):
    cdef Py_ssize_t n_rows = logits.shape[0], n_cols = logits.shape[1], n_chunks, i, y
    cdef double* shifts
    cdef double* my_shifts
    cdef double target_logit
    cdef RowStats st
    n_chunks = n_row_chunks(n_cols)
    shifts = alloc_chunk_shifts(n_threads, n_chunks)
    try:
        for i in prange(n_rows, nogil=True, schedule="static", num_threads=n_threads):
            my_shifts = shifts + threadid() * chunk_shift_stride(n_chunks)
            y = target[i]
            target_logit = logits[i, y]
            st = scaled_softmax_row(&logits[i, 0], n_cols, &grad_out[i, 0], my_shifts,
                                    grad_scale)
            grad_out[i, y] = <floating> scaled_softmax_minus_one(st, target_logit, grad_scale)
            loss_out[i] = cross_entropy_row_loss(st, target_logit)
    finally:
        free(shifts)
