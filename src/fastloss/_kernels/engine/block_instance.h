/* One compilation of FL_BLOCK_TEMPLATE, once per element type with FL_BLOCK_PER_TYPE:
 * engine/block_instances.h's step (and the plans' only one, engine/blocks.h).
 * (No include guard: it is meant to be included again.)
 */
#if FL_BLOCK_PER_TYPE
#define FL_BLOCK_TYPE 32
#include "block_types.h"
#include FL_BLOCK_TEMPLATE
#undef FL_BLOCK_TYPE
#define FL_BLOCK_TYPE 64
#include "block_types.h"
#include FL_BLOCK_TEMPLATE
#undef FL_BLOCK_TYPE
#define FL_BLOCK_TYPE 0
#include "block_types.h"
#undef FL_BLOCK_TYPE
#else
#include FL_BLOCK_TEMPLATE
#endif
