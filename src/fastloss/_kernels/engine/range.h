/* The NaN-skipping extremes of a float or double array and whether it holds a NaN, in one
 * parallel-friendly pass (the validation of probabilities and weights: NumPy's min and max
 * take two serial passes). */
#ifndef FL_ENGINE_RANGE_H
#define FL_ENGINE_RANGE_H

#include "../simd/vec.h"

#define FL_TEMPLATE "engine/range_t.h"
#include "../each_type.h"
#undef FL_TEMPLATE

#endif
