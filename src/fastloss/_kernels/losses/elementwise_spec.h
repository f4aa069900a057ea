/* The elementwise losses as the drivers see them: which loss, and a call's options. The
 * vector implementation is losses/elementwise.h, the plain-C one elementwise_scalar.h. */
#ifndef FL_LOSSES_ELEMENTWISE_SPEC_H
#define FL_LOSSES_ELEMENTWISE_SPEC_H

#include "../api.h"

#define FL_EW_GROUP 16      /* elements per group: the lanes of the block sum */

/* Which loss (fl_elementwise_call.kind). */
enum { FL_EW_BCE = 0, FL_EW_LOGITS = 1, FL_EW_KL = 2, FL_EW_LOG_KL = 3, FL_EW_FOCAL = 4 };

/* Options of a call (constant over the elements). */
typedef struct {
    int kind;
    int has_weight;         /* else the weights are 1 and not read */
    int has_pos_weight;     /* BCE with logits; else pos_weight is 1 and not read */
    double alpha, beta;     /* BCE with logits: smoothed target t = alpha y + beta */
    double focal_alpha;     /* sigmoid focal loss: the positives' weight (< 0: none) */
    double focal_gamma;     /* and the focusing exponent, >= 0 */
    double loss_scale;      /* loss_out = weighted term * loss_scale */
    double grad_scale;      /* grad_out = weighted derivative * grad_scale */
} fl_ew_opts;

/* PyTorch's 1e-12f, the floor of BCE's derivative's denominator. */
#define FL_EW_PROB_EPS 9.999999960041972e-13

#endif
