/* The entry of one block of an elementwise loss for one element type: included once per
 * type by losses/elementwise.h, with FL_T and FL_SFX(name).
 * (No include guard: it is meant to be included twice.)
 */
static __attribute__((unused)) double FL_SFX(fl_ew_block)(
    const FL_T* x, const FL_T* y, const FL_T* w, ptrdiff_t w_period, ptrdiff_t w_phase,
    const FL_T* pw, ptrdiff_t pw_period, ptrdiff_t pw_phase, ptrdiff_t n, FL_T* loss_out,
    FL_T* grad_out, double* range_out, const fl_ew_opts* o) {
    const int w1 = o->has_weight != 0;
    switch (o->kind) {
    case FL_EW_BCE:
        if (w1) FL_EW_CALL(FL_EW_BCE, 1, 0, 0);
        FL_EW_CALL(FL_EW_BCE, 0, 0, 0);
    case FL_EW_KL:
        if (w1) FL_EW_CALL(FL_EW_KL, 1, 0, 0);
        FL_EW_CALL(FL_EW_KL, 0, 0, 0);
    case FL_EW_LOG_KL:
        if (w1) FL_EW_CALL(FL_EW_LOG_KL, 1, 0, 0);
        FL_EW_CALL(FL_EW_LOG_KL, 0, 0, 0);
    case FL_EW_FOCAL:
        if (w1) FL_EW_CALL(FL_EW_FOCAL, 1, 0, 0);
        FL_EW_CALL(FL_EW_FOCAL, 0, 0, 0);
    default: {
        const int p1 = o->has_pos_weight != 0;
        const int s1 = o->alpha != 1.0 || o->beta != 0.0;
        switch (w1 + 2 * p1 + 4 * s1) {
        case 0: FL_EW_CALL(FL_EW_LOGITS, 0, 0, 0);
        case 1: FL_EW_CALL(FL_EW_LOGITS, 1, 0, 0);
        case 2: FL_EW_CALL(FL_EW_LOGITS, 0, 1, 0);
        case 3: FL_EW_CALL(FL_EW_LOGITS, 1, 1, 0);
        case 4: FL_EW_CALL(FL_EW_LOGITS, 0, 0, 1);
        case 5: FL_EW_CALL(FL_EW_LOGITS, 1, 0, 1);
        case 6: FL_EW_CALL(FL_EW_LOGITS, 0, 1, 1);
        default: FL_EW_CALL(FL_EW_LOGITS, 1, 1, 1);
        }
    }
    }
}
