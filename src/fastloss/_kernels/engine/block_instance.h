/* One compilation of FL_BLOCK_TEMPLATE, once per element type with FL_BLOCK_PER_TYPE:
 * engine/block_instances.h's step (and the plans' only one, engine/blocks.h).
 * (No include guard: it is meant to be included again.)
 */
#if FL_BLOCK_PER_TYPE
#define FL_TEMPLATE FL_BLOCK_TEMPLATE
#include "../each_type.h"
#undef FL_TEMPLATE
#else
#include FL_BLOCK_TEMPLATE
#endif
