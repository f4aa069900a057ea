/* The row losses of losses/row_loss.h over rows and over batches of rows, for one element
 * type: included once per type by losses/row_loss_paths.h, with FL_T and FL_SFX(name).
 * (No include guard: it is meant to be included twice.)
 */

/* One row: loss, gradient (grad, may alias x; NULL: none) and logsumexp (lse_out, NULL:
 * none) of row `row` (its index into the per-row buffers), with class index y or target
 * row t. shift: scratch, one double per chunk. With a stream, the exponentials go to the
 * stream's scratch, the waiting row is drained meanwhile, and this row waits in its place
 * for its own second pass. */
static inline void FL_SFX(fl_loss_row)(const FL_T* x, ptrdiff_t n_classes, ptrdiff_t y,
                                       const FL_T* t, ptrdiff_t row, const fl_row_loss* spec,
                                       double* loss_out, FL_T* grad, double* lse_out,
                                       double* shift, fl_row_stream* stream) {
    fl_row_stats st;
    FL_T* exp_out = grad;
    const fl_row_drain* prev = NULL;
    /* A pointer, not a copy: a struct's copy on every row cost a store-forwarding stall.
     * Only a teacher's logits need a copy (its max and log-sum). */
    const fl_row_spec* row_spec = &spec->row;
    fl_row_spec teacher_spec;
    double weight = 1.0, hard = 0.0, target_logit = 0.0, a_target = 0.0;
    const double s = spec->row.x_scale;
    if (spec->sample_weight != NULL) weight = spec->sample_weight[row];
    if (stream != NULL && stream->waiting.exp != NULL) prev = &stream->waiting;
    if (weight == 0.0 || (spec->kind == FL_TARGET_CLASSES && y == spec->ignore_index)) {
        if (prev != NULL) {
            FL_SFX(fl_drain_row)(prev, (const FL_T*)prev->exp, n_classes);
            stream->waiting.exp = NULL;
        }
        loss_out[0] = 0.0;
        if (lse_out != NULL) {
            st = FL_SFX(fl_row_stats)(x, n_classes, NULL, NULL, NULL, row_spec, NULL);
            lse_out[0] = FL_SFX(fl_refined_lse)(x, n_classes, st.max, st.sumexp,
                                                fl_stats_lse(st, s));
        }
        if (spec->with_grad)
            for (ptrdiff_t j = 0; j < n_classes; j++) grad[j] = 0;
        return;
    }
    if (spec->kind == FL_TEACHER_LOGITS) {
        /* The teacher's probabilities are exp(t s - lse(t s)): one more read of its row. */
        teacher_spec = spec->row;
        teacher_spec.with_coefs = 0;
        st = FL_SFX(fl_row_stats)(t, n_classes, NULL, NULL, NULL, &teacher_spec, NULL);
        teacher_spec.with_coefs = spec->row.with_coefs;
        teacher_spec.coefs.t_max = st.max;
        teacher_spec.coefs.t_shift = fl_stats_log_sum(st);
        row_spec = &teacher_spec;
    } else if (spec->kind == FL_TARGET_CLASSES) {
        target_logit = x[y];
        hard = spec->hard_scale;
        if (spec->class_weight != NULL) hard = hard * spec->class_weight[y];
        if (spec->row.with_coefs) a_target = FL_SFX(fl_coef_at)(t, y, &spec->row.coefs);
    }
    if (stream != NULL) {
        /* The scratch row aligned as the gradient row modulo 64 bytes: the streaming
         * stores then start at the same element in both. */
        char* buffer = stream->buffers[stream->next];
        const ptrdiff_t misalign = (ptrdiff_t)((uintptr_t)grad % 64);
        exp_out = (FL_T*)(buffer + (misalign - (ptrdiff_t)((uintptr_t)buffer % 64) + 64) % 64);
        shift = stream->shifts[stream->next];
    }
    st = FL_SFX(fl_row_stats)(x, n_classes, exp_out, shift, t, row_spec, prev);
    const double log_sum = fl_stats_log_sum(st);
    const double lse = st.max * s + log_sum;
    loss_out[0] = fl_row_loss_value(spec, st.max, log_sum, st.coef_sum, st.coef_dot,
                                    st.coef_entropy, hard, target_logit, weight);
    /* x is intact: a caller asking for lse writes the gradient elsewhere */
    if (lse_out != NULL)
        lse_out[0] = FL_SFX(fl_refined_lse)(x, n_classes, st.max, st.sumexp, lse);
    double scale = weight * spec->grad_scale * spec->loss_factor * s;
    if (spec->focal_gamma != 0.0) {
        double grad_factor;
        loss_out[0] *= fl_focal_factors((st.max - target_logit) + log_sum, spec->focal_gamma,
                                        &grad_factor);
        scale *= grad_factor;
    }
    if (spec->kind >= FL_TEACHER_PROBS &&
        fl_kl_terms_cancel(st.coef_dot * s, st.coef_sum * log_sum, st.coef_entropy)) {
        /* x is intact: the drivers give a distillation in place a copy of its rows */
        const double kl = FL_SFX(fl_kl_refined)(x, t, n_classes, spec->kind, s,
                                                spec->with_grad ? grad : NULL, scale);
        loss_out[0] = weight * (kl * spec->loss_factor);
        return;
    }
    if (!spec->with_grad) return;
    const double slope = hard + st.coef_sum + 2.0 * spec->z_loss * lse / spec->loss_factor;
    if (stream != NULL) {
        stream->waiting.exp = exp_out;
        stream->waiting.grad = grad;
        stream->waiting.shift = shift;
        stream->waiting.st = st;
        stream->waiting.x_scale = s;
        stream->waiting.scale = scale * slope;
        stream->waiting.fix_at = spec->kind == FL_TARGET_CLASSES ? y : -1;
        stream->waiting.fix_value = fl_target_gradient(scale, slope, target_logit, st, s,
                                                       a_target, hard);
        stream->next = 1 - stream->next;
        return;
    }
    FL_SFX(fl_scale_stored_exp)(grad, n_classes, shift, st, scale * slope, t, row_spec, scale);
    if (spec->kind == FL_TARGET_CLASSES)
        grad[y] = (FL_T)fl_target_gradient(scale, slope, target_logit, st, s, a_target, hard);
}

/* fl_loss_row of a batch of n_rows <= FL_ROW_BATCH rows of one chunk (C <= FL_ROW_CHUNK),
 * phase by phase across the rows (fl_batch_row_stats; the teacher's statistics and the
 * target's exp a batch at a time too): the same operations, the same bits. target: the
 * rows' class indices (class targets) or NULL; t: their target rows or NULL; row0: the
 * first row's index into the per-row buffers; work: 10 FL_ROW_BATCH doubles. */
static inline void FL_SFX(fl_loss_batch)(const FL_T* x, ptrdiff_t n_rows, ptrdiff_t n_classes,
                                         const ptrdiff_t* target, const FL_T* t,
                                         ptrdiff_t row0, const fl_row_loss* spec,
                                         double* loss_out, FL_T* grad, double* lse_out,
                                         double* work) {
    double* maxs = work;
    double* sums = work + FL_ROW_BATCH;
    double* log_sums = work + 2 * FL_ROW_BATCH;
    double* target_exps = work + 3 * FL_ROW_BATCH;      /* exp((x_y - max) s) */
    double* target_logits = work + 4 * FL_ROW_BATCH;
    double* coef_sums = work + 5 * FL_ROW_BATCH;
    double* coef_dots = work + 6 * FL_ROW_BATCH;
    double* coef_entropies = work + 7 * FL_ROW_BATCH;
    double* t_maxs = NULL;                              /* a teacher's logits: their max */
    double* t_log_sums = work + 9 * FL_ROW_BATCH;       /* and log sum_j exp((t_j - max) s) */
    const double s = spec->row.x_scale;
    const int classes = spec->kind == FL_TARGET_CLASSES;
    fl_row_spec teacher_spec;
    const fl_row_spec* row_spec = &spec->row;
    if (spec->kind == FL_TEACHER_LOGITS) {
        /* The teacher's probabilities are exp((t - max t) s - log S_t). */
        t_maxs = work + 8 * FL_ROW_BATCH;
        FL_SFX(fl_batch_row_stats)(t, n_rows, n_classes, s, NULL, t_maxs, target_exps,
                                   t_log_sums, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
        teacher_spec = spec->row;
        row_spec = &teacher_spec;
    }
    if (classes)
        for (ptrdiff_t r = 0; r < n_rows; r++) {
            /* Before the exponentials, which may overwrite the rows in place. */
            const ptrdiff_t y = target[r];
            target_logits[r] = 0 <= y && y < n_classes ? (double)x[r * n_classes + y] : 0.0;
        }
    for (ptrdiff_t r = 0; r < n_rows; r++) {
        coef_sums[r] = 0.0;
        coef_dots[r] = 0.0;
        coef_entropies[r] = 0.0;
    }
    FL_SFX(fl_batch_row_stats)(x, n_rows, n_classes, s, grad, maxs, sums, log_sums, NULL,
                               spec->row.with_coefs ? &spec->row.coefs : NULL, t, t_maxs,
                               t_log_sums, coef_sums, coef_dots, coef_entropies);
    if (grad != NULL && classes) {
        for (ptrdiff_t r = 0; r < n_rows; r++) target_exps[r] = (target_logits[r] - maxs[r]) * s;
        fl_exp_n(target_exps, n_rows);
    }
    for (ptrdiff_t r = 0; r < n_rows; r++) {
        const ptrdiff_t y = classes ? target[r] : 0;
        const FL_T* t_row = t != NULL ? t + r * n_classes : NULL;
        const double weight = spec->sample_weight != NULL ? spec->sample_weight[row0 + r] : 1.0;
        const double log_sum = log_sums[r];
        const double lse = maxs[r] * s + log_sum;
        /* the rows are intact: a caller asking for lse writes the gradient elsewhere */
        if (lse_out != NULL)
            lse_out[r] = FL_SFX(fl_refined_lse)(x + r * n_classes, n_classes, maxs[r], sums[r], lse);
        FL_T* grad_row = grad != NULL ? grad + r * n_classes : NULL;
        if (weight == 0.0 || (classes && y == spec->ignore_index)) {
            loss_out[r] = 0.0;
            if (grad_row != NULL)
                for (ptrdiff_t j = 0; j < n_classes; j++) grad_row[j] = 0;
            continue;
        }
        if (t_maxs != NULL) {
            teacher_spec.coefs.t_max = t_maxs[r];
            teacher_spec.coefs.t_shift = t_log_sums[r];
        }
        double hard = 0.0, a_target = 0.0;
        if (classes) {
            hard = spec->hard_scale;
            if (spec->class_weight != NULL) hard = hard * spec->class_weight[y];
            if (spec->row.with_coefs) a_target = FL_SFX(fl_coef_at)(t_row, y, &spec->row.coefs);
        }
        loss_out[r] = fl_row_loss_value(spec, maxs[r], log_sum, coef_sums[r], coef_dots[r],
                                        coef_entropies[r], hard, target_logits[r], weight);
        double scale = weight * spec->grad_scale * spec->loss_factor * s;
        if (spec->focal_gamma != 0.0) {
            double grad_factor;
            loss_out[r] *= fl_focal_factors((maxs[r] - target_logits[r]) + log_sum,
                                            spec->focal_gamma, &grad_factor);
            scale *= grad_factor;
        }
        if (spec->kind >= FL_TEACHER_PROBS &&
            fl_kl_terms_cancel(coef_dots[r] * s, coef_sums[r] * log_sum, coef_entropies[r])) {
            const double kl = FL_SFX(fl_kl_refined)(x + r * n_classes, t_row, n_classes,
                                                    spec->kind, s, grad_row, scale);
            loss_out[r] = weight * (kl * spec->loss_factor);
            continue;
        }
        if (grad_row == NULL) continue;
        const double slope = hard + coef_sums[r] + 2.0 * spec->z_loss * lse / spec->loss_factor;
        if (row_spec->with_coefs)
            FL_SFX(fl_scale_stored_exp)(grad_row, n_classes, maxs + r,
                                        fl_chunk_stats(maxs[r], sums[r]), scale * slope, t_row,
                                        row_spec, scale);
        else        /* fl_scale_stored_exp's one chunk without coefficients, inline */
            FL_SFX(fl_scale)(grad_row, n_classes, 1.0 / sums[r] * (scale * slope));
        if (classes)
            grad_row[y] = (FL_T)(scale * (slope * target_exps[r] / sums[r] - a_target - hard));
    }
}
