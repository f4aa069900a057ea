/* The losses of a row of scores against a target, fused with their gradient: the
 * specification every path of the engine computes them by.
 *
 * With scores x s (s = 1 / T: 1 but for distillation), per row,
 *
 *   loss = f (h (lse - x_y s) + sum_j a_j (lse - x_j s) + N_a) + z lse^2
 *   grad = w / D  f s ((h + A + 2 z lse / f) softmax(x s) - a - h onehot(y))
 *
 * and the focal loss (class targets, no smoothing, z-loss or temperature): with the row's
 * cross-entropy ce = lse - x_y, loss (1 - p_y)^g h ce and the gradient above times
 * (1 - p_y)^(g - 1) (1 - p_y + g p_y ce) (fl_focal_factors).
 *
 * - h, the hard coefficient: (1 - eps) w_y for a class index y (cross-entropy), 0
 *   otherwise;
 * - a_j, the coefficients (fl_coef_spec): label smoothing's eps / C w_j; probability
 *   targets' ((1 - eps) t_j + eps / C) w_j; a teacher's probabilities p_j (given as such,
 *   as log-probabilities, or as logits at temperature T); A = sum_j a_j;
 * - N_a = sum_j a_j log a_j for distillation (the loss is then KL(a || softmax(x s))),
 *   else 0;
 * - f, the loss factor (T^2 or 1); z, the z-loss; w, the sample weight; D, the
 *   reduction's denominator.
 *
 * The rows of a call share one fl_row_loss, made once by fl_row_loss_init.
 */
#ifndef FL_LOSSES_ROW_LOSS_H
#define FL_LOSSES_ROW_LOSS_H

#include "../engine/row_stats.h"

/* What a row's target is. */
typedef enum {
    FL_TARGET_CLASSES = 0,          /* integer class indices */
    FL_TARGET_PROBS = 1,            /* probability rows */
    /* distillation, KL(teacher || softmax(x / T)), the teacher's row as */
    FL_TEACHER_PROBS = 2,           /* probabilities */
    FL_TEACHER_LOG_PROBS = 3,       /* log-probabilities */
    FL_TEACHER_LOGITS = 4,          /* logits, divided by T like the student's */
} fl_target_kind;

/* The options as the blocks of few classes take them: each a lane-wise constant. */
typedef struct {
    const double* class_weight;     /* NULL: 1 */
    const double* sample_weight;    /* NULL: 1; per row */
    double hard_scale;              /* 1 - eps */
    double smoothing;               /* eps / C: a_j = smoothing w_j */
    double coef_sum;                /* A = sum_j a_j of the smoothing */
    double z_loss;
    double grad_scale;              /* 1 / the reduction's denominator */
    ptrdiff_t ignore_index;
    int teacher_kind;               /* FL_TEACHER_* - FL_TEACHER_PROBS for target rows */
    int with_entropy;               /* distillation: KL(a || softmax(x s)) */
    double x_scale, loss_factor;
    double focal_gamma;             /* the focal loss's g (class targets); 0: none */
} fl_block_loss;

enum { FL_SOFT_PROBS = 0, FL_SOFT_LOG_PROBS = 1, FL_SOFT_LOGITS = 2 };

/* A call's constants. */
typedef struct {
    fl_row_spec row;                /* x_scale = 1 / T; coefficients from the target row */
    const double* class_weight;     /* NULL: 1 (also inside row.coefs) */
    const double* sample_weight;    /* NULL: 1; a row of weight 0 is skipped like an ignored one */
    double hard_scale;              /* 1 - eps: the hard target's weight (class indices) */
    double z_loss;
    double loss_factor;             /* T^2 (distillation's usual scaling) or 1 */
    double focal_gamma;             /* the focal loss's g (class targets); 0: none */
    double grad_scale;              /* 1 / the reduction's denominator (1 for sum and none) */
    ptrdiff_t ignore_index;
    fl_target_kind kind;
    int with_grad, with_lse;
    ptrdiff_t n_classes;
    fl_block_loss blocks;           /* valid where use_blocks */
    int use_blocks;                 /* rows of few classes take the blocks */
} fl_row_loss;

/* Streamed rows, per thread: two rows of exponentials in scratch, used alternately
 * (n_classes items and 64 bytes each, to align them as the gradient rows), their chunk
 * shifts, the row whose second pass waits for the next row's first pass, and the thread's
 * last row loss. */
typedef struct {
    char* buffers[2];
    double* shifts[2];
    int next;
    fl_row_drain waiting;
    double loss;
} fl_row_stream;

/* The constants of a call; NULL weights mean no weights. in_float: the rows are float (the
 * class-target blocks compute float rows in float lanes, whose range the options must
 * fit). */
static inline void fl_row_loss_init(fl_row_loss* spec, fl_target_kind kind,
                                    const double* class_weight, const double* sample_weight,
                                    ptrdiff_t n_rows, ptrdiff_t n_classes,
                                    double label_smoothing, double z_loss,
                                    ptrdiff_t ignore_index, double grad_scale,
                                    double temperature, double loss_factor,
                                    double focal_gamma, int with_grad, int with_lse,
                                    int in_float) {
    const int distill = kind >= FL_TEACHER_PROBS;
    spec->class_weight = class_weight;
    spec->sample_weight = sample_weight;
    spec->kind = kind;
    spec->hard_scale = 1.0 - label_smoothing;
    spec->row.x_scale = 1.0 / temperature;
    spec->row.self_dot = 0;
    spec->row.coefs.class_weight = class_weight;
    spec->row.coefs.alpha = kind != FL_TARGET_CLASSES ? 1.0 - label_smoothing : 0.0;
    spec->row.coefs.beta = label_smoothing / n_classes;
    spec->row.coefs.exp_kind = kind == FL_TEACHER_LOG_PROBS || kind == FL_TEACHER_LOGITS;
    spec->row.coefs.t_scale = kind == FL_TEACHER_LOGITS ? spec->row.x_scale : 1.0;
    spec->row.coefs.t_max = 0.0;
    spec->row.coefs.t_shift = 0.0;
    spec->row.with_coefs = kind != FL_TARGET_CLASSES || label_smoothing != 0.0;
    spec->row.coefs.with_entropy = distill;
    spec->row.coefs.weights_fit_float = 1;
    if (class_weight != NULL)
        for (ptrdiff_t j = 0; j < n_classes; j++)
            if (class_weight[j] != 0.0 &&
                !(0x1p-100 <= class_weight[j] && class_weight[j] <= 0x1p64))
                spec->row.coefs.weights_fit_float = 0;
    spec->z_loss = z_loss;
    spec->loss_factor = loss_factor;
    spec->focal_gamma = focal_gamma;
    spec->grad_scale = grad_scale;
    spec->ignore_index = ignore_index;
    spec->with_grad = with_grad;
    spec->with_lse = with_lse;
    spec->n_classes = n_classes;

    /* The blocks of few classes serve every call but class targets with a temperature,
     * and (class targets in float rows, which that block kernel computes in float)
     * weights, z-loss or a gradient scale that float's range would not hold. Probability
     * targets and a teacher's KL are computed in double lanes. */
    spec->use_blocks = 0;
#if FL_SMALL_C > 0
    if (!(0 < n_classes && n_classes <= FL_SMALL_C &&
          (kind != FL_TARGET_CLASSES ||
           (spec->row.x_scale == 1.0 && spec->loss_factor == 1.0))))
        return;
    fl_block_loss* b = &spec->blocks;
    double top = z_loss;
    b->with_entropy = distill;
    b->teacher_kind = kind == FL_TEACHER_LOGITS ? FL_SOFT_LOGITS
                      : kind == FL_TEACHER_LOG_PROBS ? FL_SOFT_LOG_PROBS : FL_SOFT_PROBS;
    b->x_scale = spec->row.x_scale;
    b->loss_factor = loss_factor;
    b->focal_gamma = focal_gamma;
    b->class_weight = class_weight;
    b->sample_weight = sample_weight;
    b->hard_scale = spec->hard_scale;
    b->smoothing = spec->row.with_coefs ? spec->row.coefs.beta : 0.0;
    b->coef_sum = 0.0;
    for (ptrdiff_t j = 0; j < n_classes; j++) {
        const double w = class_weight ? class_weight[j] : 1.0;
        b->coef_sum += b->smoothing * w;
        top = top > w ? top : w;
    }
    b->z_loss = z_loss;
    b->grad_scale = grad_scale;
    b->ignore_index = ignore_index;
    if (in_float && kind == FL_TARGET_CLASSES) {
        if (sample_weight)
            for (ptrdiff_t r = 0; r < n_rows; r++)
                top = top > sample_weight[r] ? top : sample_weight[r];
        if (top > 1e30 || !(grad_scale == 0.0 || (1e-30 < grad_scale && grad_scale < 1e30)))
            return;
    }
    spec->use_blocks = 1;
#else
    (void)n_rows, (void)in_float;
#endif
}

/* The gradient at a class target, in double from the target logit: p_y - 1 cancels, so
 * round only once. */
static inline double fl_target_gradient(double scale, double slope, double target_logit,
                                        fl_row_stats st, double s, double a_target,
                                        double hard) {
    return scale * (slope * fl_exp_1((target_logit - st.max) * s) / st.sumexp - a_target - hard);
}

/* A row's loss from its statistics (fl_row_stats or a batch's), per the formula above:
 * differences from the max first (exact for nearby values, so large logits lose nothing),
 * and a zero coefficient contributes 0 even against a -inf logit. */
static inline double fl_row_loss_value(const fl_row_loss* spec, double max, double log_sum,
                                       double coef_sum, double coef_dot, double coef_entropy,
                                       double hard, double target_logit, double weight) {
    const double s = spec->row.x_scale;
    double loss = coef_dot * s + coef_sum * log_sum + coef_entropy;
    if (hard != 0.0) loss = loss + hard * ((max - target_logit) * s + log_sum);
    loss = loss * spec->loss_factor;
    if (spec->z_loss != 0.0) {
        const double lse = max * s + log_sum;
        loss = loss + spec->z_loss * lse * lse;
    }
    return weight * loss;
}

/* The focal loss's finishing of a row of cross-entropy ce: returns (1 - p_y)^g, its loss's
 * factor, and sets *grad_factor to (1 - p_y)^(g - 1) (1 - p_y + g p_y ce), its gradient's,
 * the derivative of (1 - p_y)^g ce over that of ce. 1 - p_y is -expm1(-ce): no
 * cancellation where p_y is near 1. Where 1 - p_y = 0 both are their limits, 0; where ce
 * is infinite (the target masked by -inf), p_y ce is its limit 0. */
static inline double fl_focal_factors(double ce, double gamma, double* grad_factor) {
    const double m = -expm1(-ce);
    const double m_g1 = !(m > 0.0) ? 0.0 : gamma == 2.0 ? m : pow(m, gamma - 1.0);
    const double p_ce = ce < INFINITY ? (1.0 - m) * ce : 0.0;
    *grad_factor = m_g1 * (m + gamma * p_ce);
    return m_g1 * m;
}

/* Whether a distillation row's KL, the sum of its three terms (sum_j a_j (m - x_j) s,
 * A log S, sum_j a_j log a_j), is below 2^-16 of their magnitude, so that their rounding
 * errors may be a visible part of it: losses/kl_refined.h then computes the row again, at
 * about 15 times the cost (docs/performance.md). Below that, the terms' errors are at
 * most 2^16 times their rounding relative to the KL (double lanes: 2^-36; float rows'
 * exponentials: 2^-13). (Infinite or NaN terms are not: their row's loss is infinite or
 * NaN either way.) */
static inline int fl_kl_terms_cancel(double dot_term, double log_term, double entropy_term) {
    const double magnitude = fabs(dot_term) + fabs(log_term) + fabs(entropy_term);
    return magnitude < INFINITY &&
           fabs(dot_term + log_term + entropy_term) * 0x1p16 < magnitude;
}

#endif
