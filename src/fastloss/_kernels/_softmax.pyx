"""Row kernels over the last axis of (N, C) arrays: softmax, log_softmax, logsumexp, and
the entropies of probability rows and of softmax(logits).

Layer 2: typed loops over validated, C-contiguous memoryviews, without the GIL. The maths
of one row lives in _rows.pxd.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport log
from libc.stdlib cimport free
from libc.string cimport memcpy

from fastloss._kernels._rows cimport (
    FL_SMALL_C,
    ROW_BATCH,
    ROW_CHUNK,
    RowSpec,
    RowStats,
    alloc_thread_scratch,
    batch_row_stats,
    chunk_shift_stride,
    chunk_stats,
    fl_small_logsumexp_f64,
    fl_small_logsumexp_narrow_f32,
    fl_small_plan_f32,
    fl_small_plan_f64,
    n_row_chunks,
    refined_lse,
    row_stats,
    scale_entropy_grad,
    scaled_softmax_row,
    small_block_rows,
    scale_row,
    small_entropy,
    small_plan,
    small_softmax,
    softmax_entropy,
    stats_log_sum,
    stats_lse,
    sub_shift_row,
)


cdef int small_softmax_blocks(
    const floating[:, ::1] x, floating[:, ::1] out, bint take_log, int n_threads
) except -1:
    """softmax (or log_softmax, take_log) of rows of at most FL_SMALL_C classes, by blocks
    of rows (_simd_small.h)."""
    cdef Py_ssize_t n_rows = x.shape[0], lanes = small_block_rows(<floating*> NULL)
    cdef Py_ssize_t block, i, rows
    cdef const void* plan = small_plan(x.shape[1], <floating*> NULL)
    for block in prange((n_rows + lanes - 1) // lanes, nogil=True, schedule="static",
                        num_threads=n_threads):
        i = block * lanes
        rows = n_rows - i if n_rows - i < lanes else lanes
        small_softmax(&x[i, 0], rows, plan, &out[i, 0], take_log)
    return 0


cdef enum RowsKind:
    SOFTMAX = 0
    LOG_SOFTMAX = 1
    LOGSUMEXP = 2


cdef int batched_rows(
    const floating[:, ::1] x,
    floating* out,          # OUT: (N, C) for softmax and log_softmax (may be x), or (N,)
    RowsKind kind,
    int n_threads,
) except -1:
    """softmax, log_softmax or logsumexp of rows of one chunk, ROW_BATCH rows at a time
    (batch_row_stats): the same bits as the row by row loops."""
    cdef Py_ssize_t n_rows = x.shape[0], n_cols = x.shape[1], batch, i, r, rows
    cdef double* work = alloc_thread_scratch(n_threads, 3 * ROW_BATCH + 8)
    cdef double* maxs
    cdef double* sums
    cdef double* log_sums
    try:
        for batch in prange((n_rows + ROW_BATCH - 1) // ROW_BATCH, nogil=True,
                            schedule="static", num_threads=n_threads):
            maxs = work + threadid() * (3 * ROW_BATCH + 8)
            sums = maxs + ROW_BATCH
            log_sums = sums + ROW_BATCH
            i = batch * ROW_BATCH
            rows = n_rows - i if n_rows - i < ROW_BATCH else ROW_BATCH
            batch_row_stats(&x[i, 0], rows, n_cols, 1.0,
                            out + i * n_cols if kind == SOFTMAX else NULL,
                            maxs, sums, log_sums, NULL, NULL, <floating*> NULL, NULL, NULL,
                            NULL, NULL, NULL)
            for r in range(rows):
                if kind == SOFTMAX:
                    scale_row(out + (i + r) * n_cols, n_cols, 1.0 / sums[r] * 1.0)
                elif kind == LOG_SOFTMAX:
                    sub_shift_row(&x[i + r, 0], n_cols, maxs[r], log_sums[r],
                                  out + (i + r) * n_cols)
                else:
                    out[i + r] = <floating> refined_lse(&x[i + r, 0], n_cols, maxs[r],
                                                        sums[r], maxs[r] + log_sums[r])
    finally:
        free(work)
    return 0


def softmax_rows(
    const floating[:, ::1] x,       # IN
    floating[:, ::1] out,           # OUT (may be x itself)
    int n_threads,
):
    cdef Py_ssize_t n_rows = x.shape[0], n_cols = x.shape[1], i
    cdef Py_ssize_t stride = chunk_shift_stride(n_row_chunks(n_cols))
    cdef double* shifts
    if n_rows == 0:
        return
    if 0 < n_cols <= FL_SMALL_C:
        small_softmax_blocks(x, out, False, n_threads)
        return
    if n_cols <= ROW_CHUNK:
        batched_rows(x, &out[0, 0], SOFTMAX, n_threads)
        return
    shifts = alloc_thread_scratch(n_threads, stride)
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
    cdef Py_ssize_t n_rows = x.shape[0], n_cols = x.shape[1], i
    cdef RowStats st
    if n_rows == 0:
        return
    if 0 < n_cols <= FL_SMALL_C:
        small_softmax_blocks(x, out, True, n_threads)
        return
    if n_cols <= ROW_CHUNK:
        batched_rows(x, &out[0, 0], LOG_SOFTMAX, n_threads)
        return
    for i in prange(n_rows, nogil=True, schedule="static", num_threads=n_threads):
        st = row_stats(&x[i, 0], n_cols, <floating*> NULL, NULL, <floating*> NULL, NULL,
                       NULL)
        # (x - max) - log(sum) rather than x - lse: x - max is exact for nearby values.
        sub_shift_row(&x[i, 0], n_cols, st.max, stats_log_sum(st), &out[i, 0])


def logsumexp_rows(
    const floating[:, ::1] x,       # IN
    floating[::1] out,              # OUT
    int n_threads,
):
    cdef Py_ssize_t n_rows = x.shape[0], n_cols = x.shape[1], i, block, rows
    cdef Py_ssize_t lanes = small_block_rows(<floating*> NULL)
    cdef RowStats st
    cdef const fl_small_plan_f64* plan
    cdef const fl_small_plan_f32* plan_f32
    if n_rows == 0:
        return
    if 0 < n_cols <= FL_SMALL_C:
        # float rows: their exponentials in float lanes, the rest in double (see
        # fl_small_logsumexp_lanes_f32); double rows in double lanes.
        if floating is float:
            plan_f32 = <const fl_small_plan_f32*> small_plan(n_cols, <float*> NULL)
        else:
            plan = <const fl_small_plan_f64*> small_plan(n_cols, <double*> NULL)
        for block in prange((n_rows + lanes - 1) // lanes, nogil=True, schedule="static",
                            num_threads=n_threads):
            i = block * lanes
            rows = n_rows - i if n_rows - i < lanes else lanes
            if floating is float:
                fl_small_logsumexp_narrow_f32(&x[i, 0], rows, plan_f32, &out[i])
            else:
                fl_small_logsumexp_f64(&x[i, 0], rows, plan, &out[i])
        return
    if n_cols <= ROW_CHUNK:
        batched_rows(x, &out[0], LOGSUMEXP, n_threads)
        return
    for i in prange(n_rows, nogil=True, schedule="static", num_threads=n_threads):
        st = row_stats(&x[i, 0], n_cols, <floating*> NULL, NULL, <floating*> NULL, NULL, NULL)
        out[i] = <floating> refined_lse(&x[i, 0], n_cols, st.max, st.sumexp,
                                        stats_lse(st, 1.0))


def entropy_rows(
    const floating[:, ::1] p,       # IN: probability rows
    double[::1] out,                # OUT: -sum_j p_j log p_j, times unit
    double unit,                    # 1 / ln(base)
    int n_threads,
):
    cdef Py_ssize_t n_rows = p.shape[0], n_cols = p.shape[1], i, j
    cdef double h, pj
    for i in prange(n_rows, nogil=True, schedule="static", num_threads=n_threads):
        h = 0.0
        for j in range(n_cols):
            pj = p[i, j]
            if pj != 0.0:               # 0 log 0 = 0; NaN != 0 propagates
                h = h - pj * log(pj)
        out[i] = h * unit


def entropy_from_logits_rows(
    const floating[:, ::1] x,       # IN: logits rows
    double[::1] out,                # OUT: H(softmax(x)) of each row, times unit
    floating[:, ::1] grad_out,      # OUT: grad_scale * dH/dx, or (0, 0); may be x
    double grad_scale,
    double unit,                    # 1 / ln(base)
    int n_threads,
):
    """H = lse - sum_j q_j x_j from one read of each row (row_stats' self dot), and its
    gradient dH/dx_j = q_j (lse - x_j - H) in a second pass over the stored exponentials
    and x. A gradient that overwrites x keeps a copy of the row in a per-thread buffer
    (in cache), so in place gives the same bits. Rows of few classes go by blocks."""
    cdef Py_ssize_t n_rows = x.shape[0], n_cols = x.shape[1], i, block, rows, r
    cdef Py_ssize_t shifts_len = chunk_shift_stride(n_row_chunks(n_cols)), stride
    cdef bint with_grad = grad_out.shape[0] > 0
    cdef bint in_place = with_grad and n_rows > 0 and &grad_out[0, 0] == &x[0, 0]
    cdef double* shifts
    cdef double* mine
    cdef double* maxs
    cdef double* sums
    cdef double* log_sums
    cdef double* self_dots
    cdef const floating* row
    cdef double h
    cdef RowStats st
    cdef RowSpec spec
    cdef Py_ssize_t lanes = small_block_rows(<floating*> NULL)
    cdef const void* plan
    spec.x_scale = 1.0
    spec.self_dot = True
    spec.coefs.active = False
    if n_rows == 0:
        return
    if 0 < n_cols <= FL_SMALL_C:
        # A block of the dtype's lanes (float rows in float lanes, their sums in double).
        plan = small_plan(n_cols, <floating*> NULL)
        for block in prange((n_rows + lanes - 1) // lanes, nogil=True, schedule="static",
                            num_threads=n_threads):
            i = block * lanes
            rows = n_rows - i if n_rows - i < lanes else lanes
            small_entropy(&x[i, 0], rows, plan, unit, grad_scale * unit, &out[i],
                          &grad_out[i, 0] if with_grad else NULL)
        return
    if n_cols <= ROW_CHUNK and not in_place:
        # ROW_BATCH rows at a time (batch_row_stats): the same bits as row by row.
        shifts = alloc_thread_scratch(n_threads, 4 * ROW_BATCH + 8)
        try:
            for block in prange((n_rows + ROW_BATCH - 1) // ROW_BATCH, nogil=True,
                                schedule="static", num_threads=n_threads):
                maxs = shifts + threadid() * (4 * ROW_BATCH + 8)
                sums = maxs + ROW_BATCH
                log_sums = sums + ROW_BATCH
                self_dots = log_sums + ROW_BATCH
                i = block * ROW_BATCH
                rows = n_rows - i if n_rows - i < ROW_BATCH else ROW_BATCH
                batch_row_stats(&x[i, 0], rows, n_cols, 1.0,
                                &grad_out[i, 0] if with_grad else NULL, maxs, sums,
                                log_sums, self_dots, NULL, <floating*> NULL, NULL, NULL,
                                NULL, NULL, NULL)
                for r in range(rows):
                    h = log_sums[r] + self_dots[r] / sums[r]    # softmax_entropy
                    if with_grad:
                        scale_entropy_grad(&grad_out[i + r, 0], &x[i + r, 0], n_cols,
                                           maxs + r, chunk_stats(maxs[r], sums[r]),
                                           log_sums[r], h, grad_scale * unit)
                    out[i + r] = h * unit
        finally:
            free(shifts)
        return
    # Per thread: the chunk shifts, then (in place) the row's copy, lines apart.
    stride = shifts_len + (chunk_shift_stride(n_cols) if in_place else 0)
    shifts = alloc_thread_scratch(n_threads, stride)
    try:
        for i in prange(n_rows, nogil=True, schedule="static", num_threads=n_threads):
            mine = shifts + threadid() * stride
            row = &x[i, 0]
            if in_place:
                memcpy(mine + shifts_len, row, n_cols * sizeof(floating))
                row = <const floating*> (mine + shifts_len)
            st = row_stats(row, n_cols, &grad_out[i, 0] if with_grad else NULL,
                           mine, <floating*> NULL, &spec, NULL)
            h = softmax_entropy(st)
            if with_grad:
                scale_entropy_grad(&grad_out[i, 0], row, n_cols, mine, st,
                                   stats_log_sum(st), h, grad_scale * unit)
            out[i] = h * unit
    finally:
        free(shifts)
