/* The kernels as the Cython seam (_kernels.pyx) calls them.
 *
 * kernels.c is compiled once per instruction set of instruction_sets.py and defines one
 * table of entry points (fl_kernels); dispatch.c, compiled once, hands out the table of
 * the widest instruction set the CPU runs (or the one asked for). Each entry computes a
 * whole call, its loops parallel with OpenMP, and expects what the Python layer has
 * validated: C-contiguous, aligned arrays of the stated shapes. Each returns 0, or
 * FL_ENOMEM where it could not allocate its scratch memory.
 */
#ifndef FL_API_H
#define FL_API_H

#include <stddef.h>

#define FL_ENOMEM 1

typedef enum { FL_FLOAT32 = 0, FL_FLOAT64 = 1 } fl_dtype;

typedef enum { FL_SOFTMAX = 0, FL_LOG_SOFTMAX = 1, FL_LOGSUMEXP = 2 } fl_rows_op;

/* A row loss (losses/row_loss.h: cross-entropy, distillation) over logits seen as
 * (outer, C, inner): row r = o inner + i has the C scores logits[o, :, i]. */
typedef struct {
    fl_dtype dtype;
    ptrdiff_t outer, classes, inner;
    const void* logits;
    const ptrdiff_t* target;        /* (outer inner) class indices, or NULL */
    const void* target_rows;        /* like logits: probabilities or the teacher, or NULL */
    const double* class_weight;     /* (C) or NULL */
    const double* sample_weight;    /* (outer inner) or NULL */
    int kind;                       /* fl_target_kind (losses/row_loss.h) */
    double label_smoothing, z_loss, temperature, loss_factor;
    double focal_gamma;             /* focal loss (class targets): (1 - p_y)^g; 0: none */
    double grad_scale;              /* the gradient's scale: 1 / (denominator unit) */
    ptrdiff_t ignore_index;
    double* loss_out;               /* one loss per row, or with rows_per_sum > 0 the sums
                                     * of spans of rows_per_sum rows (class axis last) */
    ptrdiff_t rows_per_sum;
    void* grad;                     /* like logits, or NULL; may be logits itself */
    double* lse;                    /* (outer inner), or NULL */
    int n_threads;
} fl_row_loss_call;

/* An elementwise loss over n elements (losses/elementwise.h). */
typedef struct {
    int kind;                       /* FL_EW_BCE, FL_EW_LOGITS, FL_EW_KL, FL_EW_LOG_KL,
                                       FL_EW_FOCAL */
    fl_dtype dtype;
    ptrdiff_t n;
    const void* x;
    const void* y;
    const void* weight;             /* one period (>= FL_EW_BLOCK elements) of the weights */
    ptrdiff_t w_period;
    int has_weight;                 /* 0: weight holds ones, which are not read */
    const void* pos_weight;         /* likewise, BCE with logits */
    ptrdiff_t pw_period;
    int has_pos_weight;
    double label_smoothing, loss_scale, grad_scale;
    double focal_alpha, focal_gamma;  /* FL_EW_FOCAL: alpha (< 0: none) and gamma >= 0 */
    double* partials;               /* (ceil(n / FL_EW_BLOCK)): weighted block sums */
    void* loss_out;                 /* (n) terms * loss_scale, or NULL */
    void* grad_out;                 /* (n) derivatives * grad_scale, or NULL; may be x */
    double* ranges;                 /* (ceil(n / FL_EW_BLOCK), 4): extremes of x and y, or NULL */
    int n_threads;
} fl_elementwise_call;

typedef struct {
    const char* isa;                /* its instruction set's name */
    /* softmax, log_softmax (out: N x C, may be x) or logsumexp (out: N) of N x C rows */
    int (*rows)(fl_rows_op op, fl_dtype dtype, const void* x, ptrdiff_t n_rows,
                ptrdiff_t n_cols, void* out, int n_threads);
    /* -sum_j p_j log p_j of each row, times unit */
    int (*entropy)(fl_dtype dtype, const void* p, ptrdiff_t n_rows, ptrdiff_t n_cols,
                   double* out, double unit, int n_threads);
    /* H(softmax(x)) of each row times unit, and grad_scale unit dH/dx into grad (N x C,
     * may be x; NULL: none) */
    int (*entropy_from_logits)(fl_dtype dtype, const void* x, ptrdiff_t n_rows,
                               ptrdiff_t n_cols, double* out, void* grad, double grad_scale,
                               double unit, int n_threads);
    /* a row loss; *total gets the sum of loss_out in order where rows_per_sum > 0 */
    int (*row_loss)(const fl_row_loss_call* call, double* total);
    /* one pass over class targets: *first_bad, the first index of a target outside
     * [0, C) that is not ignore_index (or -1); *denominator, the sum over the others of
     * sample_weight class_weight[y] (the denominator of a mean) */
    int (*class_targets)(const ptrdiff_t* target, ptrdiff_t n, ptrdiff_t n_classes,
                         ptrdiff_t ignore_index, const double* class_weight,
                         const double* sample_weight, int n_threads, ptrdiff_t* first_bad,
                         double* denominator);
    int (*elementwise)(const fl_elementwise_call* call);
    /* each block's NaN-skipping min and max, and whether it has a NaN */
    int (*value_range)(fl_dtype dtype, const void* v, ptrdiff_t n, double* lows,
                       double* highs, double* nans, int n_threads);
} fl_kernels;

/* dispatch.c */
int fl_isa_count(void);                         /* instruction sets built, widest first */
const char* fl_isa_name(int k);
int fl_isa_runs(int k);                         /* whether this CPU (and OS) runs it */
const fl_kernels* fl_isa_kernels(int k);

/* Rows per partial sum of a reduced row loss (fl_row_loss_call.rows_per_sum), set by the
 * shape alone: the partition, and so the sum, do not depend on the thread count; there
 * are at most FL_MAX_SUMS of them. */
ptrdiff_t fl_rows_per_sum(ptrdiff_t n_rows, ptrdiff_t n_classes);
#define FL_MAX_SUMS 64

/* Elements per partial sum of the elementwise losses, and the shortest period of their
 * weights. */
#define FL_EW_BLOCK 4096

/* Gradients of at least this many bytes (rows of more than a chunk, class targets, no
 * label smoothing, out of place) are streamed (kernels.c); tests lower it. */
extern ptrdiff_t fl_stream_min_bytes;

#endif
