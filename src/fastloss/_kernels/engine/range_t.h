/* The extremes of an array, for one element type: included once per type by
 * engine/range.h, with FL_T, FL_VT, FL_IT, FL_L, FL_SEL and FL_SFX(name).
 * (No include guard: it is meant to be included twice.)
 */

/* The extremes of v[0:n], NaN skipped (+inf and -inf if all are NaN), and whether any is
 * NaN (1 or 0 into *nan): four vectors of running extremes, then their lanes, then the
 * tail. */
static __attribute__((unused)) void FL_SFX(fl_ew_range)(const FL_T* v, ptrdiff_t n,
                                                          double* low, double* high,
                                                          double* nan) {
    const FL_VT pinf = ((FL_VT){0}) + (FL_T)INFINITY;
    FL_VT lo[4] = {pinf, pinf, pinf, pinf}, hi[4] = {-pinf, -pinf, -pinf, -pinf};
    FL_IT unordered = {0};
    ptrdiff_t i = 0;
    for (; i + 4 * FL_L <= n; i += 4 * FL_L) {
        for (int q = 0; q < 4; q++) {
            FL_VT a;
            memcpy(&a, v + i + q * FL_L, sizeof a);
            lo[q] = FL_SEL(a < lo[q], a, lo[q]);
            hi[q] = FL_SEL(a > hi[q], a, hi[q]);
            unordered |= a != a;
        }
    }
    FL_T l = INFINITY, h = -INFINITY;
    int any_nan = 0;
    for (int q = 0; q < 4; q++)
        for (int k = 0; k < FL_L; k++) {
            l = lo[q][k] < l ? lo[q][k] : l;
            h = hi[q][k] > h ? hi[q][k] : h;
        }
    for (int k = 0; k < FL_L; k++) any_nan |= unordered[k] != 0;
    for (; i < n; i++) {
        l = v[i] < l ? v[i] : l;
        h = v[i] > h ? v[i] : h;
        any_nan |= v[i] != v[i];
    }
    *low = l;
    *high = h;
    *nan = any_nan;
}
