/* Compiles the block template FL_BLOCK_TEMPLATE (a file name, from the kernels' folder)
 * twice, as engine/blocks.h describes: first with the class count known at run time
 * (FL_BLK(name) is FL_LOOPS(name), FL_UNROLL empty), then with it a constant (FL_BLK(name)
 * is name, FL_UNROLL unrolls), the template's entry points with it (FL_BLOCK_ENTRIES 1).
 * With FL_BLOCK_PER_TYPE, each time once per element type (each_type.h's parameters).
 * (No include guard: it is meant to be included once per template.)
 */
#define FL_BLK(name) FL_LOOPS(name)
#define FL_UNROLL
#define FL_BLOCK_ENTRIES 0
#include "block_instance.h"
#undef FL_BLK
#undef FL_UNROLL
#undef FL_BLOCK_ENTRIES
#define FL_BLK(name) name
#define FL_UNROLL FL_UNROLL_PRAGMA
#define FL_BLOCK_ENTRIES 1
#include "block_instance.h"
#undef FL_BLK
#undef FL_UNROLL
#undef FL_BLOCK_ENTRIES
