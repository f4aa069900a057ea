/* The NaN-skipping extremes of a float or double array and whether it holds a NaN, in one
 * parallel-friendly pass (the validation of probabilities and weights: NumPy's min and max
 * take two serial passes). */
#ifndef FL_ENGINE_RANGE_H
#define FL_ENGINE_RANGE_H

#include "../simd/vec.h"

#define FL_T float
#define FL_VT fl_vf
#define FL_IT fl_vi
#define FL_NL FL_NF
#define FL_SEL fl_select_f
#define FL_SFX(name) name##_f32
#include "range_t.h"
#undef FL_T
#undef FL_VT
#undef FL_IT
#undef FL_NL
#undef FL_SEL
#undef FL_SFX
#define FL_T double
#define FL_VT fl_vd
#define FL_IT fl_vl
#define FL_NL FL_ND
#define FL_SEL fl_select_d
#define FL_SFX(name) name##_f64
#include "range_t.h"
#undef FL_T
#undef FL_VT
#undef FL_IT
#undef FL_NL
#undef FL_SEL
#undef FL_SFX

#endif
