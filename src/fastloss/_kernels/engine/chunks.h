/* How the engine cuts rows: the chunk a row is processed in, and the batch of short rows
 * computed together. */
#ifndef FL_ENGINE_CHUNKS_H
#define FL_ENGINE_CHUNKS_H

#include "../simd/features.h"

/* 2048 elements: 8 KiB of float32 or 16 KiB of float64, well inside L1. */
#define FL_ROW_CHUNK 2048
/* Rows of one chunk computed together by fl_batch_row_stats_T. */
#define FL_ROW_BATCH 16

/* Rows of at most this many classes take the blocks of engine/blocks.h (one row per
 * vector lane), which only the vector builds have. */
#if FL_VECTORS
#define FL_SMALL_C 16
#else
#define FL_SMALL_C 0
#endif

#endif
