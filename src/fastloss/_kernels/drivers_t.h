/* The drivers of one element type: every call's loop over its rows, blocks or elements,
 * parallel with OpenMP, each picking the engine's path for the shape (fl_choose_path).
 * Included once per type by kernels.c, with FL_T, FL_SFX(name) and, where the blocks of
 * few classes are built, FL_VT, FL_IT, FL_L of that type.
 * (No include guard: it is meant to be included twice.)
 */

/* ---- softmax, log_softmax, logsumexp ---- */

/* Rows of one chunk, FL_ROW_BATCH rows at a time (fl_batch_row_stats): the same bits as
 * the row by row loops. out: N x C for softmax and log_softmax (may be x), or N. */
static int FL_SFX(fl_batched_rows)(const FL_T* x, ptrdiff_t n_rows, ptrdiff_t n_cols,
                                   FL_T* out, fl_rows_op op, int n_threads) {
    const ptrdiff_t stride = 3 * FL_ROW_BATCH + 8;
    double* work = (double*)malloc(sizeof(double) * stride * n_threads);
    if (work == NULL) return FL_ENOMEM;
    const ptrdiff_t n_batches = (n_rows + FL_ROW_BATCH - 1) / FL_ROW_BATCH;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (ptrdiff_t batch = 0; batch < n_batches; batch++) {
        double* maxs = work + fl_thread() * stride;
        double* sums = maxs + FL_ROW_BATCH;
        double* log_sums = sums + FL_ROW_BATCH;
        const ptrdiff_t i = batch * FL_ROW_BATCH;
        const ptrdiff_t rows = n_rows - i < FL_ROW_BATCH ? n_rows - i : FL_ROW_BATCH;
        FL_SFX(fl_batch_row_stats)(x + i * n_cols, rows, n_cols, 1.0,
                                   op == FL_SOFTMAX ? out + i * n_cols : NULL, maxs, sums,
                                   log_sums, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
        for (ptrdiff_t r = 0; r < rows; r++) {
            const FL_T* row = x + (i + r) * n_cols;
            if (op == FL_SOFTMAX)
                FL_SFX(fl_scale)(out + (i + r) * n_cols, n_cols, 1.0 / sums[r] * 1.0);
            else if (op == FL_LOG_SOFTMAX)
                FL_SFX(fl_sub_shift)(row, n_cols, maxs[r], log_sums[r], out + (i + r) * n_cols);
            else
                out[i + r] = (FL_T)FL_SFX(fl_refined_lse)(row, n_cols, maxs[r], sums[r],
                                                          maxs[r] * 1.0 + log_sums[r]);
        }
    }
    free(work);
    return 0;
}

/* Long rows, one at a time. */
static int FL_SFX(fl_long_rows)(const FL_T* x, ptrdiff_t n_rows, ptrdiff_t n_cols, FL_T* out,
                                fl_rows_op op, int n_threads) {
    const ptrdiff_t stride = fl_scratch_stride(fl_row_chunks(n_cols));
    double* shifts = op == FL_SOFTMAX ? (double*)malloc(sizeof(double) * stride * n_threads)
                                      : NULL;
    if (op == FL_SOFTMAX && shifts == NULL) return FL_ENOMEM;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (ptrdiff_t i = 0; i < n_rows; i++) {
        const FL_T* row = x + i * n_cols;
        if (op == FL_SOFTMAX) {
            FL_SFX(fl_scaled_softmax_row)(row, n_cols, out + i * n_cols,
                                          shifts + fl_thread() * stride, 1.0);
            continue;
        }
        const fl_row_stats st = FL_SFX(fl_row_stats)(row, n_cols, NULL, NULL, NULL, NULL, NULL);
        if (op == FL_LOG_SOFTMAX)       /* (x - max) - log S: x - max exact for nearby x */
            FL_SFX(fl_sub_shift)(row, n_cols, st.max, fl_stats_log_sum(st), out + i * n_cols);
        else
            out[i] = (FL_T)FL_SFX(fl_refined_lse)(row, n_cols, st.max, st.sumexp,
                                                  fl_stats_lse(st, 1.0));
    }
    free(shifts);
    return 0;
}

#if FL_HAS_BLOCKS
/* Rows of at most FL_SMALL_C classes, by blocks of rows (engine/blocks.h). logsumexp of
 * float rows: their exponentials in float lanes, the rest in double (see
 * fl_small_logsumexp_lanes_f32); double rows in double lanes. */
static int FL_SFX(fl_small_rows)(const FL_T* x, ptrdiff_t n_rows, ptrdiff_t n_cols,
                                 FL_T* out, fl_rows_op op, int n_threads) {
    const FL_SFX(fl_small_plan)* plan = FL_SFX(fl_small_plan_get)((int)n_cols);
    if (plan == NULL) return FL_ENOMEM;
    const ptrdiff_t lanes = FL_L, n_blocks = (n_rows + lanes - 1) / lanes;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (ptrdiff_t block = 0; block < n_blocks; block++) {
        const ptrdiff_t i = block * lanes;
        const ptrdiff_t rows = n_rows - i < lanes ? n_rows - i : lanes;
        if (op == FL_SOFTMAX)
            FL_SFX(fl_small_softmax)(x + i * n_cols, rows, plan, out + i * n_cols);
        else if (op == FL_LOG_SOFTMAX)
            FL_SFX(fl_small_log_softmax)(x + i * n_cols, rows, plan, out + i * n_cols);
        else
            FL_SFX(fl_small_logsumexp_out)(x + i * n_cols, rows, plan, out + i);
    }
    return 0;
}
#endif

static int FL_SFX(fl_rows)(fl_rows_op op, const FL_T* x, ptrdiff_t n_rows, ptrdiff_t n_cols,
                           FL_T* out, int n_threads) {
    if (n_rows == 0) return 0;
    switch (fl_choose_path(n_cols, 1, 0)) {
#if FL_HAS_BLOCKS
    case FL_PATH_BLOCKS: return FL_SFX(fl_small_rows)(x, n_rows, n_cols, out, op, n_threads);
#endif
    case FL_PATH_BATCHES: return FL_SFX(fl_batched_rows)(x, n_rows, n_cols, out, op, n_threads);
    default: return FL_SFX(fl_long_rows)(x, n_rows, n_cols, out, op, n_threads);
    }
}

/* ---- entropies ---- */

static int FL_SFX(fl_entropy)(const FL_T* p, ptrdiff_t n_rows, ptrdiff_t n_cols, double* out,
                              double unit, int n_threads) {
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (ptrdiff_t i = 0; i < n_rows; i++) {
        double h = 0.0;
        for (ptrdiff_t j = 0; j < n_cols; j++) {
            const double pj = p[i * n_cols + j];
            if (pj != 0.0) h = h - pj * log(pj);    /* 0 log 0 = 0; NaN != 0 propagates */
        }
        out[i] = h * unit;
    }
    return 0;
}

/* H = lse - sum_j q_j x_j from one read of each row (the self dot), and its gradient
 * dH/dx_j = q_j (lse - x_j - H) in a second pass over the stored exponentials and x. A
 * gradient that overwrites x keeps a copy of the row in per-thread scratch (in cache), so
 * in place gives the same bits. Rows of few classes go by blocks. */
static int FL_SFX(fl_entropy_from_logits)(const FL_T* x, ptrdiff_t n_rows, ptrdiff_t n_cols,
                                          double* out, FL_T* grad, double grad_scale,
                                          double unit, int n_threads) {
    const int in_place = grad != NULL && (const void*)grad == (const void*)x;
    if (n_rows == 0) return 0;
    const fl_path path = fl_choose_path(n_cols, 1, 0);
#if FL_HAS_BLOCKS
    if (path == FL_PATH_BLOCKS) {
        /* A block of the dtype's lanes (float rows in float lanes, their sums in double). */
        const FL_SFX(fl_small_plan)* plan = FL_SFX(fl_small_plan_get)((int)n_cols);
        if (plan == NULL) return FL_ENOMEM;
        const ptrdiff_t lanes = FL_L, n_blocks = (n_rows + lanes - 1) / lanes;
#pragma omp parallel for schedule(static) num_threads(n_threads)
        for (ptrdiff_t block = 0; block < n_blocks; block++) {
            const ptrdiff_t i = block * lanes;
            const ptrdiff_t rows = n_rows - i < lanes ? n_rows - i : lanes;
            FL_SFX(fl_small_entropy)(x + i * n_cols, rows, plan, unit, grad_scale * unit,
                                     out + i, grad != NULL ? grad + i * n_cols : NULL);
        }
        return 0;
    }
#endif
    if (path == FL_PATH_BATCHES && !in_place) {
        /* FL_ROW_BATCH rows at a time (fl_batch_row_stats): the same bits as row by row. */
        const ptrdiff_t stride = 4 * FL_ROW_BATCH + 8;
        double* work = (double*)malloc(sizeof(double) * stride * n_threads);
        if (work == NULL) return FL_ENOMEM;
        const ptrdiff_t n_batches = (n_rows + FL_ROW_BATCH - 1) / FL_ROW_BATCH;
#pragma omp parallel for schedule(static) num_threads(n_threads)
        for (ptrdiff_t batch = 0; batch < n_batches; batch++) {
            double* maxs = work + fl_thread() * stride;
            double* sums = maxs + FL_ROW_BATCH;
            double* log_sums = sums + FL_ROW_BATCH;
            double* self_dots = log_sums + FL_ROW_BATCH;
            const ptrdiff_t i = batch * FL_ROW_BATCH;
            const ptrdiff_t rows = n_rows - i < FL_ROW_BATCH ? n_rows - i : FL_ROW_BATCH;
            FL_SFX(fl_batch_row_stats)(x + i * n_cols, rows, n_cols, 1.0,
                                       grad != NULL ? grad + i * n_cols : NULL, maxs, sums,
                                       log_sums, self_dots, NULL, NULL, NULL, NULL, NULL,
                                       NULL, NULL);
            for (ptrdiff_t r = 0; r < rows; r++) {
                const double h = log_sums[r] + self_dots[r] / sums[r];   /* fl_softmax_entropy */
                if (grad != NULL)
                    FL_SFX(fl_scale_entropy_grad)(grad + (i + r) * n_cols, x + (i + r) * n_cols,
                                                  n_cols, maxs + r,
                                                  fl_chunk_stats(maxs[r], sums[r]),
                                                  log_sums[r], h, grad_scale * unit);
                out[i + r] = h * unit;
            }
        }
        free(work);
        return 0;
    }
    /* Per thread: the chunk shifts, then (in place) the row's copy, lines apart. */
    const ptrdiff_t shifts_len = fl_scratch_stride(fl_row_chunks(n_cols));
    const ptrdiff_t stride = shifts_len + (in_place ? fl_scratch_stride(n_cols) : 0);
    double* scratch = (double*)malloc(sizeof(double) * stride * n_threads);
    if (scratch == NULL) return FL_ENOMEM;
    fl_row_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.x_scale = 1.0;
    spec.self_dot = 1;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (ptrdiff_t i = 0; i < n_rows; i++) {
        double* mine = scratch + fl_thread() * stride;
        const FL_T* row = x + i * n_cols;
        if (in_place) {
            memcpy(mine + shifts_len, row, n_cols * sizeof(FL_T));
            row = (const FL_T*)(mine + shifts_len);
        }
        const fl_row_stats st = FL_SFX(fl_row_stats)(row, n_cols,
                                                     grad != NULL ? grad + i * n_cols : NULL,
                                                     mine, NULL, &spec, NULL);
        const double h = fl_softmax_entropy(st);
        if (grad != NULL)
            FL_SFX(fl_scale_entropy_grad)(grad + i * n_cols, row, n_cols, mine, st,
                                          fl_stats_log_sum(st), h, grad_scale * unit);
        out[i] = h * unit;
    }
    free(scratch);
    return 0;
}

/* ---- row losses ---- */

#if FL_HAS_BLOCKS
/* The class-target block kernel on a block of rows; a float block's logsumexp as
 * logsumexp forms it (fl_small_logsumexp_wide_f32: the same bits), before its gradient
 * may overwrite it. */
static inline void FL_SFX(fl_small_ce_block)(const FL_T* x, ptrdiff_t rows, const ptrdiff_t* y,
                                             ptrdiff_t row0, const FL_SFX(fl_small_plan)* plan,
                                             const fl_block_loss* spec, double* loss_out,
                                             double* loss_sum, double* lse_out, FL_T* grad) {
#if FL_IS_F32
    if (lse_out != NULL) fl_small_logsumexp_wide_f32(x, rows, plan, lse_out);
    FL_SFX(fl_small_ce)(x, rows, y, row0, plan, spec, loss_out, loss_sum, NULL, grad);
#else
    FL_SFX(fl_small_ce)(x, rows, y, row0, plan, spec, loss_out, loss_sum, lse_out, grad);
#endif
}

/* Target rows and teachers on a block of rows (double lanes, or float lanes for float rows
 * where fl_small_soft_in_float allows). */
static inline void FL_SFX(fl_small_soft_block)(const FL_T* x, const FL_T* q, ptrdiff_t rows,
                                               ptrdiff_t row0,
                                               const FL_SFX(fl_small_plan)* plan,
                                               const fl_small_plan_f64* plan_wide,
                                               const fl_block_loss* spec, double* loss_out,
                                               double* lse_out, FL_T* grad) {
#if FL_IS_F32
    fl_small_soft_ce_f32(x, q, rows, row0, plan, plan_wide, spec, loss_out, lse_out, grad);
#else
    (void)plan;
    fl_small_soft_ce_f64(x, q, rows, row0, plan_wide, spec, loss_out, lse_out, grad);
#endif
}
#endif

/* fl_rows_loss's single rows with each row's second pass streamed during the next row's
 * first (fl_row_stream, fl_drain): each thread takes a run of whole spans, drains its last
 * row at the end, and fences its streaming stores. The same operations as fl_loss_row on
 * each row, so the same bits. */
static int FL_SFX(fl_streamed_rows_loss)(const FL_T* logits, ptrdiff_t n_rows,
                                         ptrdiff_t n_classes, const ptrdiff_t* target,
                                         double* loss_out, FL_T* grad, double* lse_out,
                                         const fl_row_loss* spec, ptrdiff_t span, int summed,
                                         int n_threads) {
    const ptrdiff_t n_parts = (n_rows + span - 1) / span;
    const ptrdiff_t shifts_len = fl_scratch_stride(fl_row_chunks(n_classes));
    const ptrdiff_t row_bytes = ((ptrdiff_t)(n_classes * sizeof(FL_T)) + 64 + 63) / 64 * 64;
    const ptrdiff_t per_thread = 2 * row_bytes + (2 * shifts_len + 8) * (ptrdiff_t)sizeof(double);
    char* scratch = (char*)malloc(per_thread * n_threads + 64);
    fl_row_stream* streams = (fl_row_stream*)malloc(sizeof(fl_row_stream) * n_threads);
    if (scratch == NULL || streams == NULL) {
        free(scratch);
        free(streams);
        return FL_ENOMEM;
    }
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (int t = 0; t < n_threads; t++) {
        fl_row_stream* stream = streams + t;
        stream->buffers[0] = scratch + t * per_thread;
        stream->buffers[1] = stream->buffers[0] + row_bytes;
        stream->shifts[0] = (double*)(stream->buffers[1] + row_bytes);
        stream->shifts[1] = stream->shifts[0] + shifts_len;
        stream->next = 0;
        stream->waiting.exp = NULL;
        const ptrdiff_t first = t * n_parts / n_threads, last = (t + 1) * n_parts / n_threads;
        for (ptrdiff_t part = first; part < last; part++) {
            double total = 0.0;
            const ptrdiff_t stop = (part + 1) * span < n_rows ? (part + 1) * span : n_rows;
            for (ptrdiff_t i = part * span; i < stop; i++) {
                FL_SFX(fl_loss_row)(logits + i * n_classes, n_classes, target[i], NULL, i, spec,
                                    summed ? &stream->loss : loss_out + i, grad + i * n_classes,
                                    lse_out != NULL ? lse_out + i : NULL, NULL, stream);
                if (summed) total = total + stream->loss;
            }
            if (summed) loss_out[part] = total;
        }
        if (stream->waiting.exp != NULL)
            FL_SFX(fl_drain_row)(&stream->waiting, (const FL_T*)stream->waiting.exp, n_classes);
        fl_stream_fence();
    }
    free(scratch);
    free(streams);
    return 0;
}

/* The rows x[0:n] as a row loss reads them: a copy in kept where kept is not NULL. */
static inline const FL_T* FL_SFX(fl_keep_rows)(const FL_T* x, ptrdiff_t n, FL_T* kept) {
    if (kept == NULL) return x;
    memcpy(kept, x, (size_t)n * sizeof(FL_T));
    return kept;
}

#if FL_HAS_BLOCKS
/* The transposition plans of blocks of C classes, in the element type's lanes and in
 * double lanes (the row losses take either); 0 when out of memory. */
static int FL_SFX(fl_block_plans)(ptrdiff_t n_classes, const FL_SFX(fl_small_plan)** plan,
                                  const fl_small_plan_f64** plan_wide) {
    *plan = FL_SFX(fl_small_plan_get)((int)n_classes);
    *plan_wide = fl_small_plan_get_f64((int)n_classes);
    return *plan != NULL && *plan_wide != NULL;
}
#endif

/* The loss (per row, or summed by spans of rows_per_sum rows) of the rows of an (N, C)
 * array, in place where grad is logits: each thread takes whole spans. The blocks of few
 * classes, batches of rows of one chunk, or single rows (streamed where the gradient goes
 * past the caches). */
static int FL_SFX(fl_rows_loss)(const FL_T* logits, ptrdiff_t n_rows, ptrdiff_t n_classes,
                                const ptrdiff_t* target, const FL_T* soft, double* loss_out,
                                FL_T* grad, double* lse_out, const fl_row_loss* spec,
                                ptrdiff_t rows_per_sum, int n_threads) {
    const int summed = rows_per_sum > 0;
    /* Streamed rows: class targets without coefficients, a gradient apart from the logits
     * (aligned to its elements, for the streaming stores). */
    const int streamable = grad != NULL && (const void*)grad != (const void*)logits &&
                           (uintptr_t)grad % sizeof(FL_T) == 0 &&
                           spec->kind == FL_TARGET_CLASSES && !spec->row.with_coefs;
    const fl_path path = fl_choose_path(
        n_classes, spec->use_blocks, streamable ? n_rows * n_classes * (ptrdiff_t)sizeof(FL_T) : 0);
    /* Rows per call of the blocks: several blocks for class targets (which sum their
     * losses themselves). */
#if FL_HAS_BLOCKS
    const ptrdiff_t call_rows = (ptrdiff_t)FL_L * (soft == NULL ? FL_SMALL_CE_BLOCKS(n_classes) : 1);
#else
    const ptrdiff_t call_rows = 1;
#endif
    if (path == FL_PATH_STREAM)
        return FL_SFX(fl_streamed_rows_loss)(logits, n_rows, n_classes, target, loss_out, grad,
                                             lse_out, spec, summed ? rows_per_sum : 1, summed,
                                             n_threads);
    /* The rows one step computes: a call of the block kernels, or a batch for rows of one
     * chunk, else single rows. Each thread takes whole spans of steps (or of the sums'
     * spans). */
    const ptrdiff_t step = path == FL_PATH_BLOCKS ? call_rows
                           : path == FL_PATH_BATCHES ? FL_ROW_BATCH : 1;
    const ptrdiff_t span = summed ? rows_per_sum : step;
    const ptrdiff_t shifts_len = fl_scratch_stride(fl_row_chunks(n_classes));
    /* A distillation in place computes on a copy of its rows (fl_kl_refined may read them
     * again after the gradient's first pass). */
    const ptrdiff_t kept_len =
        spec->kind >= FL_TEACHER_PROBS && (const void*)grad == (const void*)logits
            ? (ptrdiff_t)((step * n_classes * sizeof(FL_T) + 7) / 8) : 0;
    /* Per thread: the chunk shifts of a row, a block's or batch's row losses, a batch's
     * work space and the kept rows. */
    const ptrdiff_t per_thread = shifts_len + 16 + 10 * FL_ROW_BATCH + kept_len;
    double* scratch = (double*)malloc(sizeof(double) * per_thread * n_threads);
    if (scratch == NULL) return FL_ENOMEM;
#if FL_HAS_BLOCKS
    const FL_SFX(fl_small_plan)* plan = NULL;
    const fl_small_plan_f64* plan_wide = NULL;
    if (path == FL_PATH_BLOCKS && !FL_SFX(fl_block_plans)(n_classes, &plan, &plan_wide)) {
        free(scratch);
        return FL_ENOMEM;
    }
#endif
    const ptrdiff_t n_parts = (n_rows + span - 1) / span;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (ptrdiff_t part = 0; part < n_parts; part++) {
        double* mine = scratch + fl_thread() * per_thread;
        double* losses = mine + shifts_len;
        FL_T* kept = kept_len ? (FL_T*)(losses + 16 + 10 * FL_ROW_BATCH) : NULL;
        const ptrdiff_t start = part * span;
        const ptrdiff_t stop = start + span < n_rows ? start + span : n_rows;
        double total = 0.0;
        if (0) {
#if FL_HAS_BLOCKS
        } else if (path == FL_PATH_BLOCKS) {
            for (ptrdiff_t i = start; i < stop; i += call_rows) {
                const ptrdiff_t rows = stop - i < call_rows ? stop - i : call_rows;
                if (soft != NULL) {
                    FL_SFX(fl_small_soft_block)(FL_SFX(fl_keep_rows)(logits + i * n_classes,
                                                                     rows * n_classes, kept),
                                                soft + i * n_classes,
                                                rows, i, plan, plan_wide, &spec->blocks,
                                                summed ? losses : loss_out + i,
                                                lse_out != NULL ? lse_out + i : NULL,
                                                grad != NULL ? grad + i * n_classes : NULL);
                    if (summed)
                        for (ptrdiff_t k = 0; k < rows; k++) total = total + losses[k];
                } else {
                    double call_sum = 0.0;
                    FL_SFX(fl_small_ce_block)(logits + i * n_classes, rows, target + i, i,
                                              plan, &spec->blocks, summed ? NULL : loss_out + i,
                                              summed ? &call_sum : NULL,
                                              lse_out != NULL ? lse_out + i : NULL,
                                              grad != NULL ? grad + i * n_classes : NULL);
                    if (summed) total = total + call_sum;
                }
            }
#endif
        } else if (path == FL_PATH_BATCHES) {
            for (ptrdiff_t i = start; i < stop; i += FL_ROW_BATCH) {
                const ptrdiff_t rows = stop - i < FL_ROW_BATCH ? stop - i : FL_ROW_BATCH;
                FL_SFX(fl_loss_batch)(FL_SFX(fl_keep_rows)(logits + i * n_classes,
                                                           rows * n_classes, kept),
                                      rows, n_classes, target != NULL ? target + i : NULL,
                                      soft != NULL ? soft + i * n_classes : NULL, i, spec,
                                      summed ? losses : loss_out + i,
                                      grad != NULL ? grad + i * n_classes : NULL,
                                      lse_out != NULL ? lse_out + i : NULL, losses + 16);
                if (summed)
                    for (ptrdiff_t k = 0; k < rows; k++) total = total + losses[k];
            }
        } else {
            for (ptrdiff_t i = start; i < stop; i++) {
                FL_SFX(fl_loss_row)(FL_SFX(fl_keep_rows)(logits + i * n_classes, n_classes, kept),
                                    n_classes, target != NULL ? target[i] : 0,
                                    soft != NULL ? soft + i * n_classes : NULL, i, spec,
                                    summed ? losses : loss_out + i,
                                    grad != NULL ? grad + i * n_classes : NULL,
                                    lse_out != NULL ? lse_out + i : NULL, mine, NULL);
                if (summed) total = total + losses[0];
            }
        }
        if (summed) loss_out[part] = total;
    }
    free(scratch);
    return 0;
}

/* The loss of the rows of an (outer, C, inner) array with inner > 1 (such as PyTorch's
 * (N, C, d1, ...)): each tile of FL_LANES consecutive inner positions is gathered (with
 * its target rows) into per-thread scratch as contiguous rows, computed as rows (blocks,
 * a batch or single rows), and its gradient scattered back: the same bits as on a
 * transposed copy, without the copy. The gradient goes to scratch of its own where lse is
 * asked for (fl_refined_lse may read the rows again). */
static int FL_SFX(fl_tiles_loss)(const FL_T* logits, ptrdiff_t n_outer, ptrdiff_t n_classes,
                                 ptrdiff_t n_inner, const ptrdiff_t* target, const FL_T* soft,
                                 double* loss_out, FL_T* grad_out, double* lse_out,
                                 const fl_row_loss* spec, int n_threads) {
    const ptrdiff_t tiles_per_outer = (n_inner + FL_LANES - 1) / FL_LANES;
    const fl_path path = fl_choose_path(n_classes, spec->use_blocks, 0);
    const int with_soft = spec->kind != FL_TARGET_CLASSES;
    const ptrdiff_t shifts_len = fl_scratch_stride(fl_row_chunks(n_classes));
    const ptrdiff_t work_len = 10 * FL_ROW_BATCH;
    /* the gradient apart from the rows where they are read again: by fl_refined_lse, or
     * by fl_kl_refined */
    const int keep_rows = spec->with_lse || spec->kind >= FL_TEACHER_PROBS;
    const ptrdiff_t row_sets = keep_rows ? 3 : 2;
    /* Per thread: shifts, a batch's work space, then the tile's rows of logits, of targets
     * and of gradient (in doubles, which keeps the float rows 8-byte aligned). */
    const ptrdiff_t per_thread =
        shifts_len + work_len +
        (ptrdiff_t)((row_sets * FL_LANES * n_classes * sizeof(FL_T) + 7) / 8) + 8;
    double* scratch = (double*)malloc(sizeof(double) * per_thread * n_threads);
    if (scratch == NULL) return FL_ENOMEM;
#if FL_HAS_BLOCKS
    const FL_SFX(fl_small_plan)* plan = NULL;
    const fl_small_plan_f64* plan_wide = NULL;
    if (path == FL_PATH_BLOCKS && !FL_SFX(fl_block_plans)(n_classes, &plan, &plan_wide)) {
        free(scratch);
        return FL_ENOMEM;
    }
#endif
    const ptrdiff_t n_tiles = n_outer * tiles_per_outer;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (ptrdiff_t tile = 0; tile < n_tiles; tile++) {
        double* mine = scratch + fl_thread() * per_thread;
        FL_T* rows = (FL_T*)(mine + shifts_len + work_len);
        FL_T* trows = rows + FL_LANES * n_classes;
        FL_T* grows = keep_rows ? trows + FL_LANES * n_classes : rows;
        const ptrdiff_t o = tile / tiles_per_outer;
        const ptrdiff_t i0 = (tile % tiles_per_outer) * FL_LANES;
        const ptrdiff_t lanes = n_inner - i0 < FL_LANES ? n_inner - i0 : FL_LANES;
        const FL_T* base = logits + o * n_classes * n_inner + i0;
        for (ptrdiff_t c = 0; c < n_classes; c++)
            for (ptrdiff_t b = 0; b < lanes; b++) rows[b * n_classes + c] = base[c * n_inner + b];
        if (with_soft) {
            const FL_T* sbase = soft + o * n_classes * n_inner + i0;
            for (ptrdiff_t c = 0; c < n_classes; c++)
                for (ptrdiff_t b = 0; b < lanes; b++)
                    trows[b * n_classes + c] = sbase[c * n_inner + b];
        }
        const ptrdiff_t row = o * n_inner + i0;
        if (0) {
#if FL_HAS_BLOCKS
        } else if (path == FL_PATH_BLOCKS) {
            for (ptrdiff_t b = 0; b < lanes; b += FL_L) {
                const ptrdiff_t n = lanes - b < FL_L ? lanes - b : FL_L;
                if (with_soft)
                    FL_SFX(fl_small_soft_block)(rows + b * n_classes, trows + b * n_classes, n,
                                                row + b, plan, plan_wide, &spec->blocks,
                                                loss_out + row + b,
                                                lse_out != NULL ? lse_out + row + b : NULL,
                                                spec->with_grad ? grows + b * n_classes : NULL);
                else
                    FL_SFX(fl_small_ce_block)(rows + b * n_classes, n, target + row + b, row + b,
                                              plan, &spec->blocks, loss_out + row + b, NULL,
                                              lse_out != NULL ? lse_out + row + b : NULL,
                                              spec->with_grad ? grows + b * n_classes : NULL);
            }
#endif
        } else if (path == FL_PATH_BATCHES) {
            FL_SFX(fl_loss_batch)(rows, lanes, n_classes, with_soft ? NULL : target + row,
                                  with_soft ? trows : NULL, row, spec, loss_out + row,
                                  spec->with_grad ? grows : NULL,
                                  lse_out != NULL ? lse_out + row : NULL, mine + shifts_len);
        } else {
            for (ptrdiff_t b = 0; b < lanes; b++)
                FL_SFX(fl_loss_row)(rows + b * n_classes, n_classes,
                                    with_soft ? 0 : target[row + b],
                                    with_soft ? trows + b * n_classes : NULL, row + b, spec,
                                    loss_out + row + b,
                                    spec->with_grad ? grows + b * n_classes : NULL,
                                    lse_out != NULL ? lse_out + row + b : NULL, mine, NULL);
        }
        if (spec->with_grad) {
            FL_T* gbase = grad_out + o * n_classes * n_inner + i0;
            for (ptrdiff_t c = 0; c < n_classes; c++)
                for (ptrdiff_t b = 0; b < lanes; b++) gbase[c * n_inner + b] = grows[b * n_classes + c];
        }
    }
    free(scratch);
    return 0;
}

static int FL_SFX(fl_row_loss)(const fl_row_loss_call* call, double* total) {
    fl_row_loss spec;
    const ptrdiff_t n_rows = call->outer * call->inner;
    fl_row_loss_init(&spec, (fl_target_kind)call->kind, call->class_weight,
                     call->sample_weight, n_rows, call->classes, call->label_smoothing,
                     call->z_loss, call->ignore_index, call->grad_scale, call->temperature,
                     call->loss_factor, call->focal_gamma, call->grad != NULL,
                     call->lse != NULL, FL_IS_F32);
    *total = 0.0;
    if (n_rows == 0) return 0;
    int status;
    if (call->inner == 1)
        status = FL_SFX(fl_rows_loss)((const FL_T*)call->logits, n_rows, call->classes,
                                      call->target, (const FL_T*)call->target_rows,
                                      call->loss_out, (FL_T*)call->grad, call->lse, &spec,
                                      call->rows_per_sum, call->n_threads);
    else
        status = FL_SFX(fl_tiles_loss)((const FL_T*)call->logits, call->outer, call->classes,
                                       call->inner, call->target,
                                       (const FL_T*)call->target_rows, call->loss_out,
                                       (FL_T*)call->grad, call->lse, &spec, call->n_threads);
    if (status != 0 || call->rows_per_sum == 0) return status;
    const ptrdiff_t n_sums = (n_rows + call->rows_per_sum - 1) / call->rows_per_sum;
    double sum = 0.0;
    for (ptrdiff_t k = 0; k < n_sums; k++) sum += call->loss_out[k];
    *total = sum;
    return 0;
}

/* ---- elementwise losses ---- */

static int FL_SFX(fl_elementwise)(const fl_elementwise_call* call) {
    fl_ew_opts opts;
    opts.kind = call->kind;
    opts.has_weight = call->has_weight;
    opts.has_pos_weight = call->has_pos_weight && call->kind == FL_EW_LOGITS;
    opts.alpha = 1.0 - call->label_smoothing;
    opts.beta = 0.5 * call->label_smoothing;
    opts.focal_alpha = call->focal_alpha;
    opts.focal_gamma = call->focal_gamma;
    opts.loss_scale = call->loss_scale;
    opts.grad_scale = call->grad_scale;
    const ptrdiff_t n = call->n, n_blocks = (n + FL_EW_BLOCK - 1) / FL_EW_BLOCK;
    const FL_T* x = (const FL_T*)call->x;
    const FL_T* y = (const FL_T*)call->y;
    const FL_T* w = (const FL_T*)call->weight;
    const FL_T* pw = (const FL_T*)call->pos_weight;
    FL_T* loss_out = (FL_T*)call->loss_out;
    FL_T* grad_out = (FL_T*)call->grad_out;
#pragma omp parallel for schedule(static) num_threads(call->n_threads)
    for (ptrdiff_t b = 0; b < n_blocks; b++) {
        const ptrdiff_t start = b * FL_EW_BLOCK;
        const ptrdiff_t stop = start + FL_EW_BLOCK < n ? start + FL_EW_BLOCK : n;
        call->partials[b] = FL_SFX(fl_ew_block)(
            x + start, y + start, w, call->w_period, start % call->w_period, pw,
            call->pw_period, start % call->pw_period, stop - start,
            loss_out != NULL ? loss_out + start : NULL,
            grad_out != NULL ? grad_out + start : NULL,
            call->ranges != NULL ? call->ranges + 4 * b : NULL, &opts);
    }
    return 0;
}

static int FL_SFX(fl_value_range)(const FL_T* v, ptrdiff_t n, double* lows, double* highs,
                                  double* nans, int n_threads) {
    const ptrdiff_t n_blocks = (n + FL_EW_BLOCK - 1) / FL_EW_BLOCK;
#pragma omp parallel for schedule(static) num_threads(n_threads)
    for (ptrdiff_t b = 0; b < n_blocks; b++) {
        const ptrdiff_t start = b * FL_EW_BLOCK;
        FL_SFX(fl_ew_range)(v + start, start + FL_EW_BLOCK < n ? FL_EW_BLOCK : n - start,
                            &lows[b], &highs[b], &nans[b]);
    }
    return 0;
}
