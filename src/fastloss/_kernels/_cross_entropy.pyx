"""Fused cross-entropy kernels: loss, gradient and logsumexp of each row in one pass.

Layer 2: typed loops without the GIL over validated buffers; the maths of a row lives in
_rows.pxd, and ce_row below applies the options to it. Each row is read from memory
once: the first pass stores exp(x - shift) in the gradient buffer while it sums, the
second rescales that buffer (and subtracts the target) while it is still in cache. With
grad_out = logits the logits are overwritten in place; everything a row needs from its
logits is read before they are.

Two traversals share ce_row: `cross_entropy_rows` for class-last (N, C) arrays, and
`cross_entropy_strided` for (outer, C, inner) arrays such as PyTorch's (N, C, d1, ...),
which gathers LANES rows at a time into per-thread scratch instead of transposing the
whole array.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport exp, log
from libc.stdlib cimport free

cimport numpy as cnp

from fastloss._kernels._rows cimport (
    CoefSpec,
    RowStats,
    alloc_thread_scratch,
    chunk_shift_stride,
    coef_at,
    n_row_chunks,
    row_stats,
    scale_stored_exp,
)

cnp.import_array()

cdef enum:
    # Rows gathered per tile by the strided kernel: 16 float32 = one 64-byte line.
    LANES = 16


ctypedef struct CESpec:
    CoefSpec coefs              # soft targets / label smoothing / class weights
    const double* class_weight  # NULL: 1 (also inside coefs)
    # NULL: 1; a row of weight 0 is skipped like an ignored one
    const double* sample_weight
    double hard_scale           # 1 - eps: weight of the hard target (integer targets)
    double z_loss
    double grad_scale           # 1 / denominator of the reduction (1 for sum and none)
    Py_ssize_t ignore_index
    bint soft                   # targets are probability rows
    bint with_grad
    bint with_lse


cdef inline void ce_row(
    const floating* x,          # IN: logits row (C)
    Py_ssize_t n_classes,
    Py_ssize_t y,               # IN: class index (integer targets)
    const floating* t,          # IN: probability row (soft targets), else NULL
    Py_ssize_t row,             # index into the per-row buffers below
    const CESpec* spec,
    double* loss_out,           # OUT (N): sample_weight * row loss
    floating* grad,             # OUT (C), may alias x: gradient row (NULL: none)
    double* lse_out,            # OUT (N): logsumexp of the row (NULL: none)
    double* shift,              # scratch: one double per chunk
) noexcept nogil:
    """One row of

        loss = hard * (lse - x_y) + sum_j a_j (lse - x_j) + z * lse^2
        grad = s / D * ((hard + A + 2 z lse) * softmax(x) - a - hard * onehot(y))

    with hard = (1 - eps) w_y for integer targets (0 for soft ones), a_j the CoefSpec
    coefficients, A = sum_j a_j, s the sample weight, D the reduction's denominator.
    """
    cdef RowStats st
    cdef double weight = 1.0, hard = 0.0, target_logit = 0.0, a_target = 0.0
    cdef double log_sum, lse, slope, loss, scale
    cdef Py_ssize_t j
    if spec.sample_weight != NULL:
        weight = spec.sample_weight[row]
    if weight == 0.0 or (not spec.soft and y == spec.ignore_index):
        loss_out[row] = 0.0
        if spec.with_lse:
            st = row_stats(x, n_classes, <floating*> NULL, NULL, <floating*> NULL, NULL)
            lse_out[row] = st.max + log(st.sumexp)
        if spec.with_grad:
            for j in range(n_classes):
                grad[j] = 0
        return
    if not spec.soft:
        target_logit = x[y]
        hard = spec.hard_scale
        if spec.class_weight != NULL:
            hard = hard * spec.class_weight[y]
        if spec.coefs.active:
            a_target = coef_at(t, &spec.coefs, y)
    st = row_stats(x, n_classes, grad, shift, t, &spec.coefs)
    log_sum = log(st.sumexp)
    lse = st.max + log_sum
    # Differences from the max first: exact for nearby values, so large logits (1e4 in
    # float32) lose nothing. A zero coefficient contributes 0 even against a -inf logit.
    loss = st.coef_dot + st.coef_sum * log_sum
    if hard != 0.0:
        loss = loss + hard * ((st.max - target_logit) + log_sum)
    if spec.z_loss != 0.0:
        loss = loss + spec.z_loss * lse * lse
    loss_out[row] = weight * loss
    if spec.with_lse:
        lse_out[row] = lse
    if spec.with_grad:
        scale = weight * spec.grad_scale
        slope = hard + st.coef_sum + 2.0 * spec.z_loss * lse
        scale_stored_exp(grad, n_classes, shift, st, scale * slope, t, &spec.coefs, scale)
        if not spec.soft:
            # In double from the target logit: p_y - 1 cancels, so round only once.
            grad[y] = <floating>(
                scale * (slope * exp(target_logit - st.max) / st.sumexp - a_target - hard)
            )


cdef CESpec make_spec(
    const double[::1] class_weight,
    const double[::1] sample_weight,
    bint soft,
    double label_smoothing,
    Py_ssize_t n_classes,
    double z_loss,
    Py_ssize_t ignore_index,
    double grad_scale,
    bint with_grad,
    bint with_lse,
):
    """The per-call constants; empty weight arrays mean "no weights"."""
    cdef CESpec spec
    spec.class_weight = &class_weight[0] if class_weight.shape[0] else NULL
    spec.sample_weight = &sample_weight[0] if sample_weight.shape[0] else NULL
    spec.soft = soft
    spec.hard_scale = 1.0 - label_smoothing
    spec.coefs.class_weight = spec.class_weight
    spec.coefs.alpha = 1.0 - label_smoothing if soft else 0.0
    spec.coefs.beta = label_smoothing / n_classes
    spec.coefs.active = soft or label_smoothing != 0.0
    spec.z_loss = z_loss
    spec.grad_scale = grad_scale
    spec.ignore_index = ignore_index
    spec.with_grad = with_grad
    spec.with_lse = with_lse
    return spec


def cross_entropy_rows(
    const floating[:, ::1] logits,      # IN (N, C)
    const cnp.intp_t[::1] target,       # IN (N,): classes; empty with soft targets
    const floating[:, ::1] soft_target,  # IN (N, C) probabilities, or (0, 0)
    const double[::1] class_weight,     # IN (C,) or (0,)
    const double[::1] sample_weight,    # IN (N,) or (0,)
    double[::1] loss_out,               # OUT (N,): weighted row losses
    floating[:, ::1] grad_out,          # OUT (N, C) or (0, 0); may be logits itself
    double[::1] lse_out,                # OUT (N,) or (0,)
    double label_smoothing,
    double z_loss,
    Py_ssize_t ignore_index,
    double grad_scale,
    int n_threads,
):
    """Cross-entropy over rows of a C-contiguous (N, C) array: see ce_row."""
    cdef Py_ssize_t n_rows = logits.shape[0], n_classes = logits.shape[1], i, stride
    cdef bint soft = soft_target.shape[0] > 0
    cdef CESpec spec = make_spec(
        class_weight, sample_weight, soft, label_smoothing, n_classes, z_loss,
        ignore_index, grad_scale, grad_out.shape[0] > 0, lse_out.shape[0] > 0,
    )
    cdef double* lse_ptr = &lse_out[0] if spec.with_lse else NULL
    cdef double* scratch
    if n_rows == 0:
        return
    stride = chunk_shift_stride(n_row_chunks(n_classes))
    scratch = alloc_thread_scratch(n_threads, stride)
    try:
        for i in prange(n_rows, nogil=True, schedule="static", num_threads=n_threads):
            ce_row(
                &logits[i, 0], n_classes,
                target[i] if not soft else 0,
                &soft_target[i, 0] if soft else NULL,
                i, &spec, &loss_out[0],
                &grad_out[i, 0] if spec.with_grad else NULL,
                lse_ptr, scratch + threadid() * stride,
            )
    finally:
        free(scratch)


def cross_entropy_strided(
    const floating[:, :, ::1] logits,       # IN (outer, C, inner)
    const cnp.intp_t[::1] target,           # IN (outer * inner,) or empty
    const floating[:, :, ::1] soft_target,  # IN (outer, C, inner) or (0, 0, 0)
    const double[::1] class_weight,         # IN (C,) or (0,)
    const double[::1] sample_weight,        # IN (outer * inner,) or (0,)
    double[::1] loss_out,                   # OUT (outer * inner,)
    floating[:, :, ::1] grad_out,           # OUT (outer, C, inner) or (0, 0, 0)
    double[::1] lse_out,                    # OUT (outer * inner,) or (0,)
    double label_smoothing,
    double z_loss,
    Py_ssize_t ignore_index,
    double grad_scale,
    int n_threads,
):
    """Cross-entropy with the class axis in the middle, row r = o * inner + i.

    Each tile of LANES consecutive inner positions is gathered (with its soft targets)
    into per-thread scratch as LANES contiguous rows, run through ce_row, and its
    gradient scattered back: the same bits as the class-last kernel on a transposed copy,
    without the copy.
    """
    cdef Py_ssize_t n_outer = logits.shape[0], n_classes = logits.shape[1]
    cdef Py_ssize_t n_inner = logits.shape[2]
    cdef Py_ssize_t tiles_per_outer = (n_inner + LANES - 1) // LANES
    cdef Py_ssize_t tile, o, i0, lanes, b, c, row, per_thread, shifts_len
    cdef bint soft = soft_target.shape[0] > 0
    cdef CESpec spec = make_spec(
        class_weight, sample_weight, soft, label_smoothing, n_classes, z_loss,
        ignore_index, grad_scale, grad_out.shape[0] > 0, lse_out.shape[0] > 0,
    )
    cdef double* lse_ptr = &lse_out[0] if spec.with_lse else NULL
    cdef double* scratch
    cdef double* mine
    cdef floating* rows
    cdef floating* trows
    if n_outer == 0 or n_inner == 0:
        return
    shifts_len = chunk_shift_stride(n_row_chunks(n_classes))
    # Per thread: shifts, then LANES rows of logits and LANES rows of targets (in doubles,
    # which also keeps the float rows 8-byte aligned).
    per_thread = shifts_len + (2 * LANES * n_classes * sizeof(floating) + 7) // 8 + 8
    scratch = alloc_thread_scratch(n_threads, per_thread)
    try:
        for tile in prange(n_outer * tiles_per_outer, nogil=True, schedule="static",
                           num_threads=n_threads):
            mine = scratch + threadid() * per_thread
            rows = <floating*> (mine + shifts_len)
            trows = rows + LANES * n_classes
            o = tile // tiles_per_outer
            i0 = (tile % tiles_per_outer) * LANES
            lanes = n_inner - i0 if n_inner - i0 < LANES else LANES
            for c in range(n_classes):
                for b in range(lanes):
                    rows[b * n_classes + c] = logits[o, c, i0 + b]
            if soft:
                for c in range(n_classes):
                    for b in range(lanes):
                        trows[b * n_classes + c] = soft_target[o, c, i0 + b]
            for b in range(lanes):
                row = o * n_inner + i0 + b
                ce_row(
                    rows + b * n_classes, n_classes,
                    target[row] if not soft else 0,
                    trows + b * n_classes if soft else NULL,
                    row, &spec, &loss_out[0],
                    rows + b * n_classes if spec.with_grad else NULL,
                    lse_ptr, mine,
                )
            if spec.with_grad:
                for c in range(n_classes):
                    for b in range(lanes):
                        grad_out[o, c, i0 + b] = rows[b * n_classes + c]
    finally:
        free(scratch)
