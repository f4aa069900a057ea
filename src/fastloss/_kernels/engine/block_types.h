/* The parameters of the block templates for one element type: FL_BLOCK_TYPE 32 or 64 sets
 * FL_T, FL_VT (its vector), FL_IT (the integer vector of its lane width), FL_L (its lanes:
 * rows per block), FL_SEL (its select), FL_VMAX (its NaN-skipping max) and FL_SFX(name)
 * (name##_f32 or name##_f64); FL_BLOCK_TYPE 0 undefines them.
 * (No include guard: it is meant to be included again.)
 */
#undef FL_T
#undef FL_VT
#undef FL_IT
#undef FL_L
#undef FL_SEL
#undef FL_VMAX
#undef FL_SFX
#if FL_BLOCK_TYPE == 32
#define FL_T float
#define FL_VT fl_vf
#define FL_IT fl_vi
#define FL_L FL_NF
#define FL_SEL fl_select_f
#define FL_VMAX fl_vmax_f
#define FL_SFX(name) name##_f32
#elif FL_BLOCK_TYPE == 64
#define FL_T double
#define FL_VT fl_vd
#define FL_IT fl_vl
#define FL_L FL_ND
#define FL_SEL fl_select_d
#define FL_VMAX fl_vmax_d
#define FL_SFX(name) name##_f64
#endif
