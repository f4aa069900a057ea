/* The transposition plan of a block of rows of few classes, for one element type:
 * included once per type by engine/blocks.h, with the parameters of engine/blocks_t.h.
 * (No include guard: it is meant to be included twice.)
 */

typedef struct {
    int n_classes;
    FL_IT to_cols[FL_SMALL_C][FL_SMALL_C / 2];    /* [j][a]: class j from vectors 2a, 2a+1 */
    FL_IT cols_take[FL_SMALL_C][FL_SMALL_C / 2];
    FL_IT to_rows[FL_SMALL_C][FL_SMALL_C / 2];    /* [i][b]: vector i from classes 2b, 2b+1 */
    FL_IT rows_take[FL_SMALL_C][FL_SMALL_C / 2];
} FL_SFX(fl_small_plan);

static inline void FL_SFX(fl_small_plan_init)(FL_SFX(fl_small_plan)* p, int c) {
    p->n_classes = c;
    for (int j = 0; j < c; j++)
        for (int a = 0; 2 * a < c; a++)
            for (int r = 0; r < FL_L; r++) {
                /* row r's class j, counted from vector 2a; the pair ends at vector c */
                const int pos = r * c + j - 2 * a * FL_L;
                const int ok = pos >= 0 && pos < 2 * FL_L && (pos < FL_L || 2 * a + 1 < c);
                p->to_cols[j][a][r] = ok ? pos : 0;
                p->cols_take[j][a][r] = ok ? -1 : 0;
            }
    for (int i = 0; i < c; i++)
        for (int b = 0; 2 * b < c; b++)
            for (int l = 0; l < FL_L; l++) {
                const int pos = i * FL_L + l, r = pos / c, j = pos % c;
                const int ok = j == 2 * b || j == 2 * b + 1;
                p->to_rows[i][b][l] = ok ? (j == 2 * b ? r : FL_L + r) : 0;
                p->rows_take[i][b][l] = ok ? -1 : 0;
            }
}

/* The plan for C = c classes, made on first use and kept for the life of the process
 * (call it holding the GIL: the cache is not locked); NULL when out of memory. Aligned
 * to its vectors' size by hand: malloc's alignment is less, and aligned_alloc is not
 * everywhere. */
static FL_SFX(fl_small_plan)* FL_SFX(fl_small_plans)[FL_SMALL_C + 1];
static inline const FL_SFX(fl_small_plan)* FL_SFX(fl_small_plan_get)(int c) {
    if (!FL_SFX(fl_small_plans)[c]) {
        char* raw = malloc(sizeof(FL_SFX(fl_small_plan)) + FL_WIDTH);
        if (!raw) return NULL;
        FL_SFX(fl_small_plan)* p =
            (FL_SFX(fl_small_plan)*)(raw + FL_WIDTH - (uintptr_t)raw % FL_WIDTH);
        FL_SFX(fl_small_plan_init)(p, c);
        FL_SFX(fl_small_plans)[c] = p;
    }
    return FL_SFX(fl_small_plans)[c];
}
