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
from libc.stdlib cimport free, malloc

cimport numpy as cnp

from fastloss._kernels._rows cimport (
    COEF_EXP,
    COEF_LINEAR,
    FL_SMALL_C,
    FL_SMALL_CE_BLOCKS,
    FL_SOFT_LOG_PROBS,
    FL_SOFT_LOGITS,
    FL_SOFT_PROBS,
    ROW_BATCH,
    ROW_CHUNK,
    RowDrain,
    RowSpec,
    RowStats,
    alloc_thread_scratch,
    batch_row_stats,
    chunk_shift_stride,
    chunk_stats,
    coef_at,
    drain_row,
    fl_exp_1,
    fl_exp_n,
    fl_small_ce_spec,
    fl_small_logsumexp_wide_f32,
    fl_small_plan_f32,
    fl_small_plan_f64,
    fl_stream_fence,
    n_row_chunks,
    refined_lse,
    row_stats,
    scale_row,
    scale_stored_exp,
    small_block_rows,
    small_ce,
    small_plan,
    small_soft_ce,
    stats_log_sum,
    stats_lse,
)

cnp.import_array()

cdef enum:
    # Rows gathered per tile by the strided kernel: 16 float32 = one 64-byte line (and at
    # most ROW_BATCH: a tile of rows of one chunk is one batch).
    LANES = 16
    # Rows per partial sum of check_class_targets' denominator.
    TARGET_BLOCK = 4096
    # The most partial sums of a reduced loss (rows_per_sum).
    MAX_SUMS = 64


cdef enum TargetKind:
    # Cross-entropy
    TARGET_CLASSES = 0          # integer class indices
    TARGET_PROBS = 1            # probability rows
    # Distillation, KL(teacher || softmax(x / T)): the teacher's row as
    KL_PROBS = 2                # probabilities
    KL_LOG_PROBS = 3            # log-probabilities
    KL_LOGITS = 4               # logits, divided by T like the student's


ctypedef struct CESpec:
    RowSpec row                 # x_scale = 1 / T; coefficients from the target row
    const double* class_weight  # NULL: 1 (also inside row.coefs)
    # NULL: 1; a row of weight 0 is skipped like an ignored one
    const double* sample_weight
    double hard_scale           # 1 - eps: weight of the hard target (integer targets)
    double z_loss
    double loss_factor          # T^2 (distillation's usual scaling) or 1
    double grad_scale           # 1 / denominator of the reduction (1 for sum and none)
    Py_ssize_t ignore_index
    TargetKind kind
    bint with_grad
    bint with_lse


ctypedef struct RowStream:
    # Streamed rows (streamed_rows_loop), per thread: two rows of exponentials in scratch,
    # used alternately (n_classes items and 64 bytes each, to align them as the gradient
    # rows), their chunk shifts, the row whose second pass waits for the next row's first
    # pass, and the thread's last row loss (a shared variable would be a race).
    char* buffers[2]
    double* shifts[2]
    int next
    RowDrain waiting
    double loss


cdef inline void ce_row(
    const floating* x,          # IN: logits row (C)
    Py_ssize_t n_classes,
    Py_ssize_t y,               # IN: class index (integer targets)
    const floating* t,          # IN: target row (probabilities, teacher), else NULL
    Py_ssize_t row,             # index into the per-row buffers below
    const CESpec* spec,
    double* loss_out,           # OUT: the row's sample_weight * loss
    floating* grad,             # OUT (C), may alias x: gradient row (NULL: none)
    double* lse_out,            # OUT: the row's logsumexp (NULL: none)
    double* shift,              # scratch: one double per chunk
    RowStream* stream,          # IN/OUT (NULL: none): streamed rows, class targets only
) noexcept nogil:
    """One row of, with scores x s (s = 1 / T, 1 but for distillation),

        loss = f * (hard (lse - x_y s) + sum_j a_j (lse - x_j s) + N_a) + z lse^2
        grad = w / D * f s ((hard + A + 2 z lse) softmax(x s) - a - hard onehot(y))

    hard = (1 - eps) w_y for integer targets (else 0), a_j the coefficients of the target
    row (RowSpec), A = sum_j a_j, N_a = sum_j a_j log a_j for distillation (else 0; the
    loss is then KL(a || softmax)), f the loss factor (T^2 or 1), w the sample weight, D
    the reduction's denominator.

    With a stream, the exponentials go to the stream's scratch, the waiting row is drained
    meanwhile, and this row waits in its place for its own second pass.
    """
    cdef RowStats st
    cdef floating* exp_out = grad
    cdef const RowDrain* prev = NULL
    cdef Py_ssize_t misalign
    # A pointer, not a copy: the struct's copy on every row cost a store-forwarding stall
    # that showed as a tenth of a row of 100 classes. Only a teacher's logits need a copy.
    cdef const RowSpec* row_spec = &spec.row
    cdef RowSpec teacher_spec
    cdef double weight = 1.0, hard = 0.0, target_logit = 0.0, a_target = 0.0
    cdef double s = spec.row.x_scale
    cdef double log_sum, lse, slope, loss, scale
    cdef Py_ssize_t j
    if spec.sample_weight != NULL:
        weight = spec.sample_weight[row]
    if stream != NULL and stream.waiting.exp != NULL:
        prev = &stream.waiting
    if weight == 0.0 or (spec.kind == TARGET_CLASSES and y == spec.ignore_index):
        if prev != NULL:
            drain_row(prev, <const floating*> prev.exp, n_classes)
            stream.waiting.exp = NULL
        loss_out[0] = 0.0
        if lse_out != NULL:
            st = row_stats(x, n_classes, <floating*> NULL, NULL, <floating*> NULL, row_spec,
                           NULL)
            lse_out[0] = refined_lse(x, n_classes, st.max, st.sumexp, stats_lse(st, s))
        if spec.with_grad:
            for j in range(n_classes):
                grad[j] = 0
        return
    if spec.kind == KL_LOGITS:
        # The teacher's probabilities are exp(t s - lse(t s)): one more read of its row.
        teacher_spec = spec.row
        teacher_spec.coefs.active = False
        st = row_stats(t, n_classes, <floating*> NULL, NULL, <floating*> NULL,
                       &teacher_spec, NULL)
        teacher_spec.coefs = spec.row.coefs
        teacher_spec.coefs.t_max = st.max
        teacher_spec.coefs.t_shift = stats_log_sum(st)
        row_spec = &teacher_spec
    elif spec.kind == TARGET_CLASSES:
        target_logit = x[y]
        hard = spec.hard_scale
        if spec.class_weight != NULL:
            hard = hard * spec.class_weight[y]
        if spec.row.coefs.active:
            a_target = coef_at(t, &spec.row.coefs, y)
    if stream != NULL:
        # The scratch row aligned as the gradient row modulo 64 bytes: fl_drain's
        # streaming stores then start at the same element in both.
        misalign = (<Py_ssize_t> grad) % 64
        exp_out = <floating*> (stream.buffers[stream.next]
                               + (misalign - (<Py_ssize_t> stream.buffers[stream.next]) % 64
                                  + 64) % 64)
        shift = stream.shifts[stream.next]
    st = row_stats(x, n_classes, exp_out, shift, t, row_spec, prev)
    log_sum = stats_log_sum(st)
    lse = st.max * s + log_sum
    # Differences from the max first: exact for nearby values, so large logits (1e4 in
    # float32) lose nothing. A zero coefficient contributes 0 even against a -inf logit.
    loss = st.coef_dot * s + st.coef_sum * log_sum + st.coef_entropy
    if hard != 0.0:
        loss = loss + hard * ((st.max - target_logit) * s + log_sum)
    loss = loss * spec.loss_factor
    if spec.z_loss != 0.0:
        loss = loss + spec.z_loss * lse * lse
    loss_out[0] = weight * loss
    if lse_out != NULL:
        # x is intact: a caller asking for lse writes the gradient elsewhere
        lse_out[0] = refined_lse(x, n_classes, st.max, st.sumexp, lse)
    if spec.with_grad:
        scale = weight * spec.grad_scale * spec.loss_factor * s
        slope = hard + st.coef_sum + 2.0 * spec.z_loss * lse / spec.loss_factor
        if stream != NULL:
            stream.waiting.exp = exp_out
            stream.waiting.grad = grad
            stream.waiting.shift = shift
            stream.waiting.st = st
            stream.waiting.x_scale = s
            stream.waiting.scale = scale * slope
            stream.waiting.fix_at = y if spec.kind == TARGET_CLASSES else -1
            stream.waiting.fix_value = target_gradient(scale, slope, target_logit, st, s,
                                                       a_target, hard)
            stream.next = 1 - stream.next
            return
        scale_stored_exp(grad, n_classes, shift, st, scale * slope, t, row_spec, scale)
        if spec.kind == TARGET_CLASSES:
            grad[y] = <floating> target_gradient(scale, slope, target_logit, st, s,
                                                 a_target, hard)


cdef inline double target_gradient(
    double scale, double slope, double target_logit, RowStats st, double s,
    double a_target, double hard,
) noexcept nogil:
    """The gradient at a class target, in double from the target logit: p_y - 1 cancels,
    so round only once."""
    return scale * (
        slope * fl_exp_1((target_logit - st.max) * s) / st.sumexp - a_target - hard
    )


cdef inline void ce_rows_batch(
    const floating* x,          # IN: n_rows rows of logits (n_rows x C), C <= ROW_CHUNK
    Py_ssize_t n_rows,          # at most ROW_BATCH
    Py_ssize_t n_classes,
    const cnp.intp_t* target,   # IN: their class indices (class targets), else NULL
    const floating* t,          # IN (n_rows x C): target rows (probabilities, teacher)
    Py_ssize_t row0,            # the first row's index into the per-row buffers
    const CESpec* spec,
    double* loss_out,           # OUT (n_rows): sample_weight * loss
    floating* grad,             # OUT (n_rows x C), may alias x; NULL: none
    double* lse_out,            # OUT (n_rows) or NULL
    double* work,               # scratch: 10 * ROW_BATCH doubles
) noexcept nogil:
    """ce_row of a batch of rows of one chunk, phase by phase across the rows
    (batch_row_stats; the teacher's statistics and the target's exp a batch at a time
    too): the same operations as ce_row, the same bits."""
    cdef double* maxs = work
    cdef double* sums = work + ROW_BATCH
    cdef double* log_sums = work + 2 * ROW_BATCH
    cdef double* target_exps = work + 3 * ROW_BATCH  # exp((x_y - max) s)
    cdef double* target_logits = work + 4 * ROW_BATCH
    cdef double* coef_sums = work + 5 * ROW_BATCH
    cdef double* coef_dots = work + 6 * ROW_BATCH
    cdef double* coef_entropies = work + 7 * ROW_BATCH
    cdef double* t_maxs = NULL                       # a teacher's logits: their max
    cdef double* t_log_sums = work + 9 * ROW_BATCH   # and log sum_j exp((t_j - max) s)
    cdef double s = spec.row.x_scale
    cdef double weight, hard, a_target, log_sum, lse, loss, scale, slope
    cdef Py_ssize_t r, y, j
    cdef const floating* t_row
    cdef floating* grad_row
    cdef RowSpec teacher_spec
    cdef const RowSpec* row_spec = &spec.row
    cdef bint classes = spec.kind == TARGET_CLASSES
    if spec.kind == KL_LOGITS:
        # The teacher's probabilities are exp((t - max t) s - log S_t).
        t_maxs = work + 8 * ROW_BATCH
        batch_row_stats(t, n_rows, n_classes, s, NULL, t_maxs, target_exps, t_log_sums,
                        NULL, NULL, <floating*> NULL, NULL, NULL, NULL, NULL, NULL)
        teacher_spec = spec.row
        row_spec = &teacher_spec
    if classes:
        for r in range(n_rows):
            # Before the exponentials, which may overwrite the rows in place.
            y = target[r]
            target_logits[r] = x[r * n_classes + y] if 0 <= y < n_classes else 0.0
    for r in range(n_rows):
        coef_sums[r] = 0.0
        coef_dots[r] = 0.0
        coef_entropies[r] = 0.0
    batch_row_stats(x, n_rows, n_classes, s, grad, maxs, sums, log_sums, NULL,
                    &spec.row.coefs if spec.row.coefs.active else NULL, t, t_maxs,
                    t_log_sums, coef_sums, coef_dots, coef_entropies)
    if grad != NULL and classes:
        for r in range(n_rows):
            target_exps[r] = (target_logits[r] - maxs[r]) * s
        fl_exp_n(target_exps, n_rows)
    for r in range(n_rows):
        y = target[r] if classes else 0
        t_row = t + r * n_classes if t != NULL else NULL
        weight = spec.sample_weight[row0 + r] if spec.sample_weight != NULL else 1.0
        log_sum = log_sums[r]
        lse = maxs[r] * s + log_sum
        if lse_out != NULL:
            # the rows are intact: a caller asking for lse writes the gradient elsewhere
            lse_out[r] = refined_lse(x + r * n_classes, n_classes, maxs[r], sums[r], lse)
        grad_row = grad + r * n_classes if grad != NULL else NULL
        if weight == 0.0 or (classes and y == spec.ignore_index):
            loss_out[r] = 0.0
            if grad_row != NULL:
                for j in range(n_classes):
                    grad_row[j] = 0
            continue
        if t_maxs != NULL:
            teacher_spec.coefs.t_max = t_maxs[r]
            teacher_spec.coefs.t_shift = t_log_sums[r]
        hard = 0.0
        a_target = 0.0
        if classes:
            hard = spec.hard_scale
            if spec.class_weight != NULL:
                hard = hard * spec.class_weight[y]
            if spec.row.coefs.active:
                a_target = coef_at(t_row, &spec.row.coefs, y)
        loss = coef_dots[r] * s + coef_sums[r] * log_sum + coef_entropies[r]
        if hard != 0.0:
            loss = loss + hard * ((maxs[r] - target_logits[r]) * s + log_sum)
        loss = loss * spec.loss_factor
        if spec.z_loss != 0.0:
            loss = loss + spec.z_loss * lse * lse
        loss_out[r] = weight * loss
        if grad_row != NULL:
            scale = weight * spec.grad_scale * spec.loss_factor * s
            slope = hard + coef_sums[r] + 2.0 * spec.z_loss * lse / spec.loss_factor
            if row_spec.coefs.active:
                scale_stored_exp(grad_row, n_classes, maxs + r,
                                 chunk_stats(maxs[r], sums[r]), scale * slope, t_row,
                                 row_spec, scale)
            else:
                # scale_stored_exp's one chunk without coefficients, inline: its call cost
                # a fifth of a row of 32 classes
                scale_row(grad_row, n_classes, 1.0 / sums[r] * (scale * slope))
            if classes:
                grad_row[y] = <floating>(scale * (
                    slope * target_exps[r] / sums[r] - a_target - hard))


cdef CESpec make_spec(
    const double* class_weight,
    const double* sample_weight,
    TargetKind kind,
    double label_smoothing,
    Py_ssize_t n_classes,
    double z_loss,
    Py_ssize_t ignore_index,
    double grad_scale,
    double temperature,
    double loss_factor,
    bint with_grad,
    bint with_lse,
) noexcept nogil:
    """The per-call constants; NULL weights mean "no weights"."""
    cdef CESpec spec
    cdef bint distill = kind >= KL_PROBS
    cdef Py_ssize_t j
    spec.class_weight = class_weight
    spec.sample_weight = sample_weight
    spec.kind = kind
    spec.hard_scale = 1.0 - label_smoothing
    spec.row.x_scale = 1.0 / temperature
    spec.row.self_dot = False
    spec.row.coefs.class_weight = spec.class_weight
    spec.row.coefs.alpha = 1.0 - label_smoothing if kind != TARGET_CLASSES else 0.0
    spec.row.coefs.beta = label_smoothing / n_classes
    spec.row.coefs.kind = COEF_EXP if kind == KL_LOG_PROBS or kind == KL_LOGITS else COEF_LINEAR
    spec.row.coefs.t_scale = spec.row.x_scale if kind == KL_LOGITS else 1.0
    spec.row.coefs.t_max = 0.0
    spec.row.coefs.t_shift = 0.0
    spec.row.coefs.active = kind != TARGET_CLASSES or label_smoothing != 0.0
    spec.row.coefs.with_entropy = distill
    spec.row.coefs.weights_fit_float = True
    if class_weight != NULL:
        for j in range(n_classes):
            if class_weight[j] != 0.0 and not 2.0 ** -100 <= class_weight[j] <= 2.0 ** 64:
                spec.row.coefs.weights_fit_float = False
    spec.z_loss = z_loss
    spec.loss_factor = loss_factor
    spec.grad_scale = grad_scale
    spec.ignore_index = ignore_index
    spec.with_grad = with_grad
    spec.with_lse = with_lse
    return spec


cdef inline void small_ce_block(
    const floating* x, Py_ssize_t rows, const Py_ssize_t* y, Py_ssize_t row0,
    const void* plan, const fl_small_ce_spec* spec,
    double* loss_out, double* loss_sum, double* lse_out, floating* grad,
) noexcept nogil:
    """small_ce on a block of rows; a float block's logsumexp as logsumexp forms it
    (fl_small_logsumexp_wide_f32: the same bits), before its gradient may overwrite it."""
    if floating is float:
        if lse_out != NULL:
            fl_small_logsumexp_wide_f32(x, rows, <const fl_small_plan_f32*> plan, lse_out)
        small_ce(x, rows, y, row0, plan, spec, loss_out, loss_sum, NULL, grad)
    else:
        small_ce(x, rows, y, row0, plan, spec, loss_out, loss_sum, lse_out, grad)


cdef bint small_spec(const CESpec* spec, Py_ssize_t n_classes, Py_ssize_t n_rows,
                     bint in_float, fl_small_ce_spec* out) noexcept nogil:
    """The block kernels' spec (_simd_small.h) for few classes, or False when the row
    kernel must serve: more than FL_SMALL_C classes, class targets with a temperature,
    or (class targets in float rows, which that block kernel computes in float) weights,
    z_loss or a gradient scale that float's range would not hold. Probability targets
    and a teacher's KL (probabilities, log-probabilities or logits) are computed in
    double lanes."""
    cdef Py_ssize_t j
    cdef double w, top = spec.z_loss
    if not (0 < n_classes <= FL_SMALL_C and (
            spec.kind != TARGET_CLASSES
            or (spec.row.x_scale == 1.0 and spec.loss_factor == 1.0))):
        return False
    out.with_entropy = spec.kind >= KL_PROBS
    out.teacher_kind = (FL_SOFT_LOGITS if spec.kind == KL_LOGITS
                        else FL_SOFT_LOG_PROBS if spec.kind == KL_LOG_PROBS
                        else FL_SOFT_PROBS)
    out.x_scale = spec.row.x_scale
    out.loss_factor = spec.loss_factor
    out.class_weight = spec.class_weight
    out.sample_weight = spec.sample_weight
    out.hard_scale = spec.hard_scale
    out.smoothing = spec.row.coefs.beta if spec.row.coefs.active else 0.0
    out.coef_sum = 0.0
    for j in range(n_classes):
        w = spec.class_weight[j] if spec.class_weight else 1.0
        out.coef_sum += out.smoothing * w
        top = max(top, w)
    out.z_loss = spec.z_loss
    out.grad_scale = spec.grad_scale
    out.ignore_index = spec.ignore_index
    if in_float and spec.kind == TARGET_CLASSES:
        if spec.sample_weight:
            for j in range(n_rows):
                top = max(top, spec.sample_weight[j])
        if top > 1e30 or not (spec.grad_scale == 0.0 or 1e-30 < spec.grad_scale < 1e30):
            return False
    return True


def cross_entropy_kernel(
    const floating[:, :, ::1] logits,       # IN (outer, C, inner)
    const cnp.intp_t[::1] target,           # IN (outer * inner,): classes, or empty
    const floating[:, :, ::1] soft_target,  # IN like logits: target rows, or (0, 0, 0)
    const double[::1] class_weight,         # IN (C,) or (0,)
    const double[::1] sample_weight,        # IN (outer * inner,) or (0,)
    double[::1] loss_out,                   # OUT: weighted row losses, or their sums
    floating[:, :, ::1] grad_out,           # OUT like logits, or (0, 0, 0); may be logits
    double[::1] lse_out,                    # OUT (outer * inner,) or (0,)
    int target_kind,
    double label_smoothing,
    double z_loss,
    Py_ssize_t ignore_index,
    double grad_scale,
    double temperature,
    double loss_factor,
    Py_ssize_t rows_per_sum,
    int n_threads,
):
    """Cross-entropy (or distillation KL, by target_kind, a TargetKind) of every row
    r = o * inner + i of a C-contiguous (outer, C, inner) array: see ce_row.

    loss_out receives one loss per row, or, with rows_per_sum > 0 (class axis last only:
    rows_per_sum(N, C) rows), loss_out[k] the sum of the losses of rows [k, k + 1) *
    rows_per_sum, added in row order, and the function returns their sum, in order: the
    partition depends on N alone, so the total is the same bits for any thread count, and
    no per-row buffer is written.

    With the class axis last (inner = 1) rows are contiguous and read in place. Otherwise
    each tile of LANES consecutive inner positions is gathered (with its target rows)
    into per-thread scratch as LANES contiguous rows, run through ce_row, and its
    gradient scattered back: the same bits as on a transposed copy, without the copy.
    """
    cdef CESpec spec = make_spec(
        &class_weight[0] if class_weight.shape[0] else NULL,
        &sample_weight[0] if sample_weight.shape[0] else NULL,
        <TargetKind> target_kind, label_smoothing,
        logits.shape[1], z_loss, ignore_index, grad_scale, temperature, loss_factor,
        grad_out.shape[0] > 0, lse_out.shape[0] > 0,
    )
    cdef double total = 0.0
    cdef Py_ssize_t k
    if logits.shape[0] == 0 or logits.shape[2] == 0:
        return None if rows_per_sum == 0 else 0.0
    if logits.shape[2] == 1:
        rows_loop(&logits[0, 0, 0], logits.shape[0], logits.shape[1],
                  &target[0] if target.shape[0] else NULL,
                  &soft_target[0, 0, 0] if soft_target.shape[0] else NULL,
                  &loss_out[0], &grad_out[0, 0, 0] if spec.with_grad else NULL,
                  &lse_out[0] if spec.with_lse else NULL, &spec, rows_per_sum, n_threads)
    else:
        tiles_loop(logits, target, soft_target, loss_out, grad_out, lse_out, &spec, n_threads)
    if rows_per_sum == 0:
        return None
    for k in range(loss_out.shape[0]):
        total += loss_out[k]
    return total


cdef int rows_loop(
    const floating* logits,     # IN (N, C), C-contiguous
    Py_ssize_t n_rows,
    Py_ssize_t n_classes,
    const cnp.intp_t* target,   # IN (N,) for class targets, else NULL
    const floating* soft,       # IN (N, C) target rows, or NULL
    double* loss_out,           # OUT (N,), or one sum per rows_per_sum rows
    floating* grad,             # OUT (N, C), may be logits; NULL: no gradient
    double* lse_out,            # OUT (N,) or NULL
    const CESpec* spec,
    Py_ssize_t rows_per_sum,
    int n_threads,
) except -1:
    """ce_row over the rows of an (N, C) array, in place, or small_ce over blocks of
    rows where the classes are few; the row losses summed by rows_per_sum rows unless it
    is 0. Each thread takes whole spans of rows."""
    cdef Py_ssize_t lanes = small_block_rows(<floating*> NULL)
    cdef bint summed = rows_per_sum > 0
    # Rows per call of the block kernels: several blocks for class targets (which sum
    # their losses themselves).
    cdef Py_ssize_t call_rows = lanes * (FL_SMALL_CE_BLOCKS(n_classes) if soft == NULL else 1)
    cdef double call_sum
    cdef Py_ssize_t shifts_len = chunk_shift_stride(n_row_chunks(n_classes))
    cdef Py_ssize_t part, start, stop, i, rows, k
    cdef double total
    cdef double* mine
    cdef double* losses
    cdef fl_small_ce_spec small
    cdef bint blocks = small_spec(spec, n_classes, n_rows, floating is float, &small)
    cdef const void* plan = small_plan(n_classes, <floating*> NULL) if blocks else NULL
    cdef const fl_small_plan_f64* plan_wide = (
        <const fl_small_plan_f64*> small_plan(n_classes, <double*> NULL) if blocks else NULL
    )
    # Rows of one chunk that the blocks do not serve go in batches.
    cdef bint batched = not blocks and n_classes <= ROW_CHUNK
    # Each thread takes whole spans: a call of the block kernels, or 16 rows (a batch) for
    # rows of one chunk, else single rows.
    cdef Py_ssize_t span = (rows_per_sum if summed else call_rows if blocks
                            else 16 if n_classes <= ROW_CHUNK else 1)
    # Per thread: the chunk shifts of a row, a block's or batch's row losses (16 at most)
    # and a batch's work space.
    cdef Py_ssize_t per_thread = shifts_len + 16 + 10 * ROW_BATCH
    cdef double* scratch
    if (not blocks and not batched and grad != NULL
            and <const void*> grad != <const void*> logits
            and <size_t> grad % sizeof(floating) == 0      # streaming stores: aligned
            and spec.kind == TARGET_CLASSES and not spec.row.coefs.active
            and n_rows * n_classes * <Py_ssize_t> sizeof(floating) >= stream_min_bytes):
        return streamed_rows_loop(logits, n_rows, n_classes, target, loss_out, grad,
                                  lse_out, spec, span, summed, n_threads)
    scratch = alloc_thread_scratch(n_threads, per_thread)
    try:
        for part in prange((n_rows + span - 1) // span, nogil=True, schedule="static",
                           num_threads=n_threads):
            mine = scratch + threadid() * per_thread
            losses = mine + shifts_len
            start = part * span
            stop = start + span if start + span < n_rows else n_rows
            total = 0.0
            if blocks:
                i = start
                while i < stop:
                    rows = stop - i if stop - i < call_rows else call_rows
                    if soft != NULL:
                        small_soft_ce(logits + i * n_classes, soft + i * n_classes, rows, i,
                                      plan, plan_wide, &small,
                                      losses if summed else loss_out + i,
                                      lse_out + i if lse_out != NULL else NULL,
                                      grad + i * n_classes if grad != NULL else NULL)
                        if summed:
                            for k in range(rows):
                                total = total + losses[k]
                    else:
                        call_sum = 0.0       # assigned here: private to the thread
                        small_ce_block(logits + i * n_classes, rows,
                                       <const Py_ssize_t*> target + i, i, plan, &small,
                                       NULL if summed else loss_out + i,
                                       &call_sum if summed else NULL,
                                       lse_out + i if lse_out != NULL else NULL,
                                       grad + i * n_classes if grad != NULL else NULL)
                        if summed:
                            total = total + call_sum
                    i = i + call_rows
            elif batched:
                i = start
                while i < stop:
                    rows = stop - i if stop - i < ROW_BATCH else ROW_BATCH
                    ce_rows_batch(logits + i * n_classes, rows, n_classes,
                                  target + i if target != NULL else NULL,
                                  soft + i * n_classes if soft != NULL else NULL, i,
                                  spec, losses if summed else loss_out + i,
                                  grad + i * n_classes if grad != NULL else NULL,
                                  lse_out + i if lse_out != NULL else NULL, losses + 16)
                    if summed:
                        for k in range(rows):
                            total = total + losses[k]
                    i = i + rows
            else:
                for i in range(start, stop):
                    ce_row(
                        logits + i * n_classes, n_classes,
                        target[i] if target != NULL else 0,
                        soft + i * n_classes if soft != NULL else NULL,
                        i, spec, losses if summed else loss_out + i,
                        grad + i * n_classes if grad != NULL else NULL,
                        lse_out + i if lse_out != NULL else NULL, mine, NULL,
                    )
                    if summed:
                        total = total + losses[0]
            if summed:
                loss_out[part] = total
    finally:
        free(scratch)
    return 0


# Gradients of at least this many bytes (rows of more than ROW_CHUNK classes, class
# targets, no label smoothing, out of place) go through streamed_rows_loop: they do not
# fit the caches (32 MiB of L3 on the machine this was measured on), so their stores
# skip them. _set_stream_min_bytes changes it (tests).
cdef Py_ssize_t stream_min_bytes = 32 * 1024 * 1024


def _set_stream_min_bytes(Py_ssize_t n):
    """Set the gradient size from which rows are streamed; returns the previous one."""
    global stream_min_bytes
    cdef Py_ssize_t previous = stream_min_bytes
    stream_min_bytes = n
    return previous


cdef int streamed_rows_loop(
    const floating* logits,     # IN (N, C), C-contiguous, C > ROW_CHUNK
    Py_ssize_t n_rows,
    Py_ssize_t n_classes,
    const cnp.intp_t* target,   # IN (N,)
    double* loss_out,           # OUT (N,), or one sum per span of rows
    floating* grad,             # OUT (N, C), apart from logits
    double* lse_out,            # OUT (N,) or NULL
    const CESpec* spec,         # class targets, no coefficients
    Py_ssize_t span,            # rows per sum (or 1)
    bint summed,
    int n_threads,
) except -1:
    """rows_loop's row kernel with each row's second pass streamed during the next row's
    first (RowStream, fl_drain): each thread takes a run of whole spans, drains its last
    row at the end, and fences its streaming stores. The same operations as rows_loop's
    ce_row on each row, so the same bits."""
    cdef Py_ssize_t n_parts = (n_rows + span - 1) // span
    cdef Py_ssize_t shifts_len = chunk_shift_stride(n_row_chunks(n_classes))
    cdef Py_ssize_t row_bytes = (n_classes * sizeof(floating) + 64 + 63) // 64 * 64
    cdef Py_ssize_t per_thread = 2 * row_bytes + (2 * shifts_len + 8) * sizeof(double)
    cdef char* scratch = <char*> malloc(per_thread * n_threads + 64)
    cdef Py_ssize_t t, part, first, last, i, stop
    cdef double total
    cdef RowStream* stream
    cdef RowStream* streams = <RowStream*> malloc(sizeof(RowStream) * n_threads)
    if scratch == NULL or streams == NULL:
        free(scratch)
        free(streams)
        raise MemoryError("fastloss: cannot allocate the per-thread scratch")
    try:
        for t in prange(n_threads, nogil=True, schedule="static", num_threads=n_threads):
            stream = streams + t
            stream.buffers[0] = scratch + t * per_thread
            stream.buffers[1] = stream.buffers[0] + row_bytes
            stream.shifts[0] = <double*> (stream.buffers[1] + row_bytes)
            stream.shifts[1] = stream.shifts[0] + shifts_len
            stream.next = 0
            stream.waiting.exp = NULL
            first = t * n_parts // n_threads
            last = (t + 1) * n_parts // n_threads
            for part in range(first, last):
                total = 0.0
                stop = (part + 1) * span if (part + 1) * span < n_rows else n_rows
                for i in range(part * span, stop):
                    ce_row(logits + i * n_classes, n_classes, target[i], NULL, i, spec,
                           &stream.loss if summed else loss_out + i, grad + i * n_classes,
                           lse_out + i if lse_out != NULL else NULL, NULL, stream)
                    if summed:
                        total = total + stream.loss
                if summed:
                    loss_out[part] = total
            if stream.waiting.exp != NULL:
                drain_row(&stream.waiting, <const floating*> stream.waiting.exp, n_classes)
            fl_stream_fence()
    finally:
        free(scratch)
        free(streams)
    return 0


cdef bint overlap(cnp.ndarray a, cnp.ndarray b):
    """Whether the memory of two C-contiguous arrays overlaps."""
    cdef char* a0 = <char*> cnp.PyArray_DATA(a)
    cdef char* b0 = <char*> cnp.PyArray_DATA(b)
    return a0 < b0 + cnp.PyArray_NBYTES(b) and b0 < a0 + cnp.PyArray_NBYTES(a)


cpdef Py_ssize_t rows_per_sum(Py_ssize_t n_rows, Py_ssize_t n_classes) noexcept nogil:
    """Rows per partial sum of the losses (cross_entropy_kernel), set by the shape alone:
    at most MAX_SUMS sums; a multiple of 16 (the blocks and batches of rows) for rows of
    one chunk, else as few rows as that allows (each span goes to one thread: a few long
    rows still spread over the threads)."""
    if n_classes <= ROW_CHUNK:
        return 16 * max(1, (n_rows + 16 * MAX_SUMS - 1) // (16 * MAX_SUMS))
    return max(1, (n_rows + MAX_SUMS - 1) // MAX_SUMS)


def check_class_targets(
    const cnp.intp_t[::1] target,           # IN (N,)
    Py_ssize_t n_classes,
    Py_ssize_t ignore_index,
    const double[::1] class_weight,         # IN (C,) or (0,)
    const double[::1] sample_weight,        # IN (N,) or (0,)
    int n_threads,
):
    """One pass over integer targets: (index of the first one outside [0, C) that is not
    ignore_index, or -1; sum over the others of sample_weight * class_weight[y], the
    denominator of a "mean"). The sum is formed by blocks of TARGET_BLOCK rows added in
    order: the same bits for any thread count."""
    cdef double denominator
    cdef Py_ssize_t first_bad = class_target_pass(
        &target[0] if target.shape[0] else NULL, target.shape[0], n_classes, ignore_index,
        &class_weight[0] if class_weight.shape[0] else NULL,
        &sample_weight[0] if sample_weight.shape[0] else NULL, n_threads, &denominator)
    return first_bad, denominator


cdef Py_ssize_t class_target_pass(
    const cnp.intp_t* target, Py_ssize_t n, Py_ssize_t n_classes, Py_ssize_t ignore_index,
    const double* cw, const double* sw, int n_threads, double* denominator,
) except -2:
    """check_class_targets on pointers: the first bad index (or -1); the denominator
    into *denominator."""
    cdef Py_ssize_t n_blocks = (n + TARGET_BLOCK - 1) // TARGET_BLOCK
    cdef Py_ssize_t b, i, y, stop, bad, count, first_bad = -1
    cdef size_t out_of_range
    cdef double total, weight
    cdef double* sums
    cdef Py_ssize_t* first
    denominator[0] = 0.0
    if n == 0:
        return -1
    sums = <double*> malloc(sizeof(double) * n_blocks)
    first = <Py_ssize_t*> malloc(sizeof(Py_ssize_t) * n_blocks)
    if sums == NULL or first == NULL:
        free(sums)
        free(first)
        raise MemoryError("fastloss: cannot allocate the target check's block sums")
    for b in prange(n_blocks, nogil=True, schedule="static", num_threads=n_threads):
        stop = (b + 1) * TARGET_BLOCK if (b + 1) * TARGET_BLOCK < n else n
        total = 0.0
        bad = -1
        if cw == NULL and sw == NULL:
            # Without weights: a count and an "any out of range", loops without branches
            # that the compiler vectorises (this pass is a seventh of 4M x 2's time).
            count = 0
            out_of_range = 0
            for i in range(b * TARGET_BLOCK, stop):
                y = target[i]
                count = count + (y != ignore_index)
                out_of_range = out_of_range | (
                    (<size_t> y >= <size_t> n_classes) & (y != ignore_index))
            sums[b] = count
            first[b] = -1
            if out_of_range == 0:
                continue
        for i in range(b * TARGET_BLOCK, stop):
            y = target[i]
            if y == ignore_index:
                continue
            if y < 0 or y >= n_classes:
                if bad < 0:
                    bad = i
                continue
            weight = cw[y] if cw != NULL else 1.0
            if sw != NULL:
                weight = weight * sw[i]
            total = total + weight
        sums[b] = total
        first[b] = bad
    for b in range(n_blocks):
        denominator[0] += sums[b]
        if first_bad < 0 and first[b] >= 0:
            first_bad = first[b]
    free(sums)
    free(first)
    return first_bad


def cross_entropy_classes(
    cnp.ndarray logits,
    cnp.ndarray target,
    cnp.ndarray grad_out,
    bint mean,
    Py_ssize_t ignore_index,
    int n_threads,
):
    """The common case in one call: C-contiguous (N, C) float32/float64 logits, (N,)
    intp class targets, no weights or other options, a "mean" or "sum", and grad_out an
    array of the logits' shape and dtype, or None for no gradient.

    The caller has checked all of that. Checked here: the targets' range, and that
    grad_out is C-contiguous, writeable, and either the logits themselves or apart from
    them and the targets. Returns the summed loss over the denominator (the rows not
    ignored for a mean), or None when any of that fails (the caller then takes the general
    path, which says what).
    """
    cdef Py_ssize_t n_rows = logits.shape[0], n_classes = logits.shape[1]
    cdef double denominator, total = 0.0
    cdef double sums[MAX_SUMS]
    cdef Py_ssize_t span = rows_per_sum(n_rows, n_classes), k
    cdef bint with_grad = grad_out is not None
    cdef CESpec spec
    if with_grad and not (
        cnp.PyArray_IS_C_CONTIGUOUS(grad_out) and cnp.PyArray_ISWRITEABLE(grad_out)
        and (cnp.PyArray_DATA(grad_out) == cnp.PyArray_DATA(logits)
             or not overlap(grad_out, logits)) and not overlap(grad_out, target)
    ):
        return None
    if class_target_pass(<const cnp.intp_t*> cnp.PyArray_DATA(target), n_rows, n_classes,
                         ignore_index, NULL, NULL, n_threads, &denominator) >= 0:
        return None
    if not mean:
        denominator = 1.0
    spec = make_spec(NULL, NULL, TARGET_CLASSES, 0.0, n_classes, 0.0, ignore_index,
                     1.0 / denominator if denominator > 0 else 0.0, 1.0, 1.0,
                     with_grad, False)
    if n_rows:
        if logits.dtype.itemsize == 4:
            rows_loop(<const float*> cnp.PyArray_DATA(logits), n_rows, n_classes,
                      <const cnp.intp_t*> cnp.PyArray_DATA(target), NULL, sums,
                      <float*> cnp.PyArray_DATA(grad_out) if with_grad else NULL,
                      NULL, &spec, span, n_threads)
        else:
            rows_loop(<const double*> cnp.PyArray_DATA(logits), n_rows, n_classes,
                      <const cnp.intp_t*> cnp.PyArray_DATA(target), NULL, sums,
                      <double*> cnp.PyArray_DATA(grad_out) if with_grad else NULL,
                      NULL, &spec, span, n_threads)
    for k in range((n_rows + span - 1) // span):
        total += sums[k]
    if mean:
        return total / denominator if denominator > 0 else float("nan")
    return total


cdef int tiles_loop(
    const floating[:, :, ::1] logits,
    const cnp.intp_t[::1] target,
    const floating[:, :, ::1] soft_target,
    double[::1] loss_out,
    floating[:, :, ::1] grad_out,
    double[::1] lse_out,
    const CESpec* spec,
    int n_threads,
) except -1:
    """ce_row over tiles of LANES rows gathered from an (outer, C, inner) array (small_ce
    over blocks of them where the classes are few)."""
    cdef Py_ssize_t n_outer = logits.shape[0], n_classes = logits.shape[1]
    cdef Py_ssize_t n_inner = logits.shape[2]
    cdef Py_ssize_t tiles_per_outer = (n_inner + LANES - 1) // LANES
    cdef Py_ssize_t tile, o, i0, lanes, b, c, row
    cdef Py_ssize_t block_rows = small_block_rows(<floating*> NULL)
    cdef bint soft = spec.kind != TARGET_CLASSES
    cdef fl_small_ce_spec small
    cdef bint blocks = small_spec(spec, n_classes, n_outer * n_inner, floating is float,
                                  &small)
    cdef const void* plan = small_plan(n_classes, <floating*> NULL) if blocks else NULL
    cdef const fl_small_plan_f64* plan_wide = (
        <const fl_small_plan_f64*> small_plan(n_classes, <double*> NULL) if blocks else NULL
    )
    cdef double* lse_ptr = &lse_out[0] if spec.with_lse else NULL
    cdef double* mine
    cdef floating* rows
    cdef floating* trows
    cdef floating* grows
    # Rows of one chunk that the blocks do not serve go in batches (a tile is one).
    cdef bint batched = not blocks and n_classes <= ROW_CHUNK
    # Per thread: shifts, a batch's work space, then LANES rows of logits and LANES rows
    # of targets (in doubles, which also keeps the float rows 8-byte aligned), and with
    # lse LANES rows of gradient: the logsumexp may read the rows again (refined_lse), so
    # the gradient does not overwrite them.
    cdef Py_ssize_t shifts_len = chunk_shift_stride(n_row_chunks(n_classes))
    cdef Py_ssize_t work_len = 10 * ROW_BATCH
    cdef Py_ssize_t row_sets = 3 if spec.with_lse else 2
    cdef Py_ssize_t per_thread = (
        shifts_len + work_len + (row_sets * LANES * n_classes * sizeof(floating) + 7) // 8 + 8
    )
    cdef double* scratch = alloc_thread_scratch(n_threads, per_thread)
    try:
        for tile in prange(n_outer * tiles_per_outer, nogil=True, schedule="static",
                           num_threads=n_threads):
            mine = scratch + threadid() * per_thread
            rows = <floating*> (mine + shifts_len + work_len)
            trows = rows + LANES * n_classes
            grows = trows + LANES * n_classes if spec.with_lse else rows
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
            if blocks:
                b = 0
                while b < lanes:
                    row = o * n_inner + i0 + b
                    if soft:
                        small_soft_ce(rows + b * n_classes, trows + b * n_classes,
                                      lanes - b if lanes - b < block_rows else block_rows,
                                      row, plan, plan_wide, &small, &loss_out[row],
                                      lse_ptr + row if lse_ptr != NULL else NULL,
                                      grows + b * n_classes if spec.with_grad else NULL)
                    else:
                        small_ce_block(rows + b * n_classes,
                                       lanes - b if lanes - b < block_rows else block_rows,
                                       <const Py_ssize_t*> &target[row], row, plan,
                                       &small, &loss_out[row], NULL,
                                       lse_ptr + row if lse_ptr != NULL else NULL,
                                       grows + b * n_classes if spec.with_grad else NULL)
                    b = b + block_rows
            elif batched:
                row = o * n_inner + i0
                ce_rows_batch(rows, lanes, n_classes, &target[row] if not soft else NULL,
                              trows if soft else NULL, row, spec, &loss_out[row],
                              grows if spec.with_grad else NULL,
                              lse_ptr + row if lse_ptr != NULL else NULL, mine + shifts_len)
            else:
                for b in range(lanes):
                    row = o * n_inner + i0 + b
                    ce_row(
                        rows + b * n_classes, n_classes,
                        target[row] if not soft else 0,
                        trows + b * n_classes if soft else NULL,
                        row, spec, &loss_out[row],
                        grows + b * n_classes if spec.with_grad else NULL,
                        lse_ptr + row if lse_ptr != NULL else NULL, mine, NULL,
                    )
            if spec.with_grad:
                for c in range(n_classes):
                    for b in range(lanes):
                        grad_out[o, c, i0 + b] = grows[b * n_classes + c]
    finally:
        free(scratch)
    return 0
