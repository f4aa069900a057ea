/* How the engine computes rows of a given length: the one place that decides.
 *
 * - blocks: rows of at most FL_SMALL_C classes, FL_NF or FL_ND rows to a block, one row per
 *   vector lane (engine/blocks.h), where the computation has a block kernel;
 * - batches: rows of one chunk (at most FL_ROW_CHUNK), FL_ROW_BATCH rows phase by phase
 *   (fl_batch_row_stats): one row of a hundred classes is too short to hide the latency of
 *   its own chain (max, sum, log, 1 / S, rescale), sixteen independent ones overlap;
 * - rows: longer rows one at a time, in chunks merged online;
 * - streamed rows: rows whose gradient goes past the caches (fl_stream_min_bytes), their
 *   second pass inside the next row's first, by streaming stores.
 */
#ifndef FL_ENGINE_STRATEGY_H
#define FL_ENGINE_STRATEGY_H

#include <stddef.h>

#include "../api.h"
#include "row_stats.h"

typedef enum { FL_PATH_BLOCKS, FL_PATH_BATCHES, FL_PATH_ROWS, FL_PATH_STREAM } fl_path;

/* The path of rows of n_classes; blocks_serve: the computation has a block kernel;
 * stream_bytes: the gradient's size where it may be streamed (0: not). */
static inline fl_path fl_choose_path(ptrdiff_t n_classes, int blocks_serve,
                                     ptrdiff_t stream_bytes) {
#if FL_SMALL_C > 0
    if (blocks_serve && 0 < n_classes && n_classes <= FL_SMALL_C) return FL_PATH_BLOCKS;
#else
    (void)blocks_serve;
#endif
    if (n_classes <= FL_ROW_CHUNK) return FL_PATH_BATCHES;
    if (stream_bytes > 0 && stream_bytes >= fl_stream_min_bytes) return FL_PATH_STREAM;
    return FL_PATH_ROWS;
}

#endif
