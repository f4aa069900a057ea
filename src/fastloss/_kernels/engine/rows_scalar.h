/* The row primitives of engine/rows.h in plain C, for compilers without vector extensions
 * (MSVC), or with FASTLOSS_SCALAR defined (to test this file with GCC).
 *
 * Same functions, same contracts, one element at a time with libm's exp and log, in
 * double; slower, and not bit-identical to the vector builds (within their tolerances).
 * There are no blocks of few classes here: rows of any length take the row engine.
 */
#ifndef FL_ENGINE_ROWS_SCALAR_H
#define FL_ENGINE_ROWS_SCALAR_H

#include <math.h>
#include <stddef.h>

#include "row_types.h"

#define FL_INLINE static __inline

FL_INLINE double fl_log1p_1(double z) { return log1p(z); }
FL_INLINE double fl_exp_1(double z) { return exp(z); }
FL_INLINE void fl_log1p_n(double* z, ptrdiff_t n) {
    ptrdiff_t i;
    for (i = 0; i < n; i++) z[i] = log1p(z[i]);
}
FL_INLINE void fl_exp_n(double* z, ptrdiff_t n) {
    ptrdiff_t i;
    for (i = 0; i < n; i++) z[i] = exp(z[i]);
}

/* Streaming stores are ordinary ones here. */
FL_INLINE void fl_stream_fence(void) {}

#define FL_TEMPLATE "engine/rows_scalar_t.h"
#include "../each_type.h"
#undef FL_TEMPLATE

/* A float row's logsumexp from its exponentials in double (see engine/rows.h): here every
 * row's already are, so this is the row's own sum, for refined_lse. */
FL_INLINE double fl_lse_wide_f32(const float* x, ptrdiff_t n, double max) {
    double ones = 0.0, sum = 0.0, err = 0.0;
    ptrdiff_t i;
    for (i = 0; i < n; i++) {           /* compensated (Neumaier), as in engine/rows.h */
        const double e = exp((double)x[i] - max);
        double t;
        if ((double)x[i] == max) {
            ones += 1.0;
            continue;
        }
        t = sum + e;
        err += fabs(sum) >= fabs(e) ? (sum - t) + e : (e - t) + sum;
        sum = t;
    }
    return max + log1p((ones - 1.0) + (sum + err));
}

#endif
