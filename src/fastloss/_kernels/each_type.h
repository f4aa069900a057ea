/* Compiles the template FL_TEMPLATE (a file name, from this folder) once per element type,
 * with its parameters defined: FL_T (float, then double), FL_SFX(name) (name##_f32 or
 * name##_f64), FL_IS_F32, and for the vector builds the type's vector FL_VT, the integer
 * vector of its lane width FL_IT, its lanes FL_L (FL_NF or FL_ND), its select FL_SEL and
 * its NaN-skipping FL_VMAX and FL_VMIN. A template uses those it needs.
 * (No include guard: it is meant to be included once per template.)
 */
#define FL_T float
#define FL_SFX(name) name##_f32
#define FL_IS_F32 1
#define FL_VT fl_vf
#define FL_IT fl_vi
#define FL_L FL_NF
#define FL_SEL fl_select_f
#define FL_VMAX fl_vmax_f
#define FL_VMIN fl_vmin_f
#include FL_TEMPLATE
#undef FL_T
#undef FL_SFX
#undef FL_IS_F32
#undef FL_VT
#undef FL_IT
#undef FL_L
#undef FL_SEL
#undef FL_VMAX
#undef FL_VMIN
#define FL_T double
#define FL_SFX(name) name##_f64
#define FL_IS_F32 0
#define FL_VT fl_vd
#define FL_IT fl_vl
#define FL_L FL_ND
#define FL_SEL fl_select_d
#define FL_VMAX fl_vmax_d
#define FL_VMIN fl_vmin_d
#include FL_TEMPLATE
#undef FL_T
#undef FL_SFX
#undef FL_IS_F32
#undef FL_VT
#undef FL_IT
#undef FL_L
#undef FL_SEL
#undef FL_VMAX
#undef FL_VMIN
