/* The hot loops of a row (max; exp + store + sum; rescale), written once in GCC/Clang
 * vector extensions for float and double.
 *
 * One source serves every instruction set: the vectors are as wide as the registers of
 * the flags that the including extension is compiled with (setup.py's SIMD_VARIANTS:
 * SSE2, AVX2 with FMA, AVX-512). A handful of primitives (max, the float-to-double widening,
 * the scaling by 2^n) use the instruction set's own instructions where the generic form
 * compiles badly; every formula is written once. The wider builds fuse multiplies and
 * adds, so their results may differ from the baseline's in the last bits.
 * -fno-trapping-math lets the compiler turn the NaN-preserving clamps into selects.
 *
 * exp is branch-free: exp(x) = 2^n p(r), x = n ln2 + r, |r| <= ln2 / 2, the reduction in
 * two steps (Cody-Waite) and p a polynomial (degree 6 for float, within 2 ulp; degree 13
 * for double, within 1e-15 relative); subnormal results round once. exp(-inf) = 0,
 * exp(NaN) = NaN.
 *
 * float rows are computed in float, with two safeguards that keep them within a few ulps
 * of the float64 result:
 * - the argument x - shift is carried as an unevaluated float sum d + lo (TwoSum, or
 *   Fast2Sum where the row's range allows: fl_shift_kind), so it is exact: rounding it
 *   would cost |x - shift| / 2 ulps of the result;
 * - the sum of a row's exponentials leaves out the terms at the shift (x = shift, exactly
 *   1) and counts them, sums the others in float only eight at a time (a tree of three
 *   roundings), then in double.
 *   A 1 in a float sum would round away the small terms, and with them the relative
 *   accuracy of a small loss log(1 + sum of the others).
 *
 * Sums are formed in a fixed order that depends on n alone (never on the data's
 * alignment or the threads).
 */
#ifndef FASTLOSS_SIMD_ROWS_H
#define FASTLOSS_SIMD_ROWS_H

#include <stddef.h>

/* Streamed rows (streamed_rows_loop in _cross_entropy.pyx: gradients beyond the caches):
 * a row's second pass runs inside the next row's first. For each group of exponentials
 * the first pass computes, a group of the previous row's (kept in per-thread scratch) is
 * rescaled and sent to its gradient by streaming (non-temporal) stores, so that memory
 * takes the gradient while the core computes exp, and the gradient's lines are never read
 * for ownership. One chunk of the previous row: */
typedef struct {
    const void* src;    /* its exponentials, aligned as dst modulo 64 bytes */
    void* dst;          /* its gradient */
    double factor;      /* their factor (scale_stored_exp's: the same products) */
    ptrdiff_t fix_at;   /* an index whose gradient is fix_value instead, or -1 */
    double fix_value;
} fl_drain;

#if !defined(__GNUC__) || defined(FASTLOSS_SCALAR)
/* No vector extensions (MSVC): the same primitives in plain C. */
#include "_scalar_rows.h"
#else

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* Inlined always: a vector argument of a call that is not inlined goes through memory. */
#define FL_INLINE static inline __attribute__((always_inline))

/* Vectors as wide as the machine's registers (GCC splits wider generic vectors badly). */
#if defined(__AVX512F__)
#define FL_WIDTH 64
#define FL_LO 0, 1, 2, 3, 4, 5, 6, 7
#define FL_HI 8, 9, 10, 11, 12, 13, 14, 15
#elif defined(__AVX__)
#define FL_WIDTH 32
#define FL_LO 0, 1, 2, 3
#define FL_HI 4, 5, 6, 7
#else
#define FL_WIDTH 16
#define FL_LO 0, 1
#define FL_HI 2, 3
#endif
#define FL_NF (FL_WIDTH / 4)    /* float lanes */
#define FL_ND (FL_WIDTH / 8)    /* double lanes */

typedef float fl_vf __attribute__((vector_size(FL_WIDTH)));
typedef int32_t fl_vi __attribute__((vector_size(FL_WIDTH)));
typedef double fl_vd __attribute__((vector_size(FL_WIDTH)));
typedef int64_t fl_vl __attribute__((vector_size(FL_WIDTH)));
typedef uint64_t fl_vu __attribute__((vector_size(FL_WIDTH)));
typedef uint32_t fl_vui __attribute__((vector_size(FL_WIDTH)));
/* Half a float vector: as many floats as a double vector has doubles. */
typedef float fl_vh __attribute__((vector_size(FL_WIDTH / 2)));

/* The rows' loops fetch the memory this far ahead of the element they work on: a chunk
 * of a row is scanned for its max, then exponentiated from L1, and without the prefetches
 * the next chunk's loads would wait for memory between the two. A whole chunk ahead in
 * chunks of FL_AHEAD elements (ROW_CHUNK in _rows.pxd: rows longer than a chunk), else
 * FL_AHEAD_BYTES. With 8192 bytes for every row, half a chunk of float64, 1024 x 32000
 * float64 cross-entropy took 12% longer; with 16384 for every row, soft targets and
 * distillation at 4096 x 1000 took 7-14% longer (A/B, 1 thread). */
#define FL_AHEAD 2048
#define FL_AHEAD_BYTES 8192

/* Prefetch the cache lines `ahead` bytes past those of [x, x + bytes) for reading, and of
 * out (unless NULL) for writing. The float rows prefetch their output only in rows of one
 * chunk: in rows of 32000 float32 it cost 3-4% (C harness), in rows of 1000 to 2000 it
 * saves 2-3% (A/B). The double rows always do: without it, entropy_from_logits and
 * cross-entropy at 4096 x 1000 float64 took 4-10% longer, and 1024 x 32000 3-5% (A/B;
 * all at 1 thread). */
FL_INLINE void fl_prefetch(const void* x, void* out, size_t bytes, size_t ahead) {
    for (size_t b = 0; b < bytes; b += 64) {
        __builtin_prefetch((const char*)x + ahead + b, 0, 3);
        if (out) __builtin_prefetch((char*)out + ahead + b, 1, 3);
    }
}

/* ---- primitives ---- */

#if defined(__AVX512F__)
#define FL_MM_FMA(OP) _mm512_##OP
#define FL_MMV_FMA(D) __m512##D
#elif defined(__AVX__)
#define FL_MM_FMA(OP) _mm256_##OP
#define FL_MMV_FMA(D) __m256##D
#else
#define FL_MM_FMA(OP) _mm_##OP
#define FL_MMV_FMA(D) __m128##D
#endif

/* Lane-wise select without branches: m ? a : b (m all ones or all zeros). */
FL_INLINE fl_vf fl_select_f(fl_vi m, fl_vf a, fl_vf b) {
    return (fl_vf)((m & (fl_vi)a) | (~m & (fl_vi)b));
}
FL_INLINE fl_vd fl_select_d(fl_vl m, fl_vd a, fl_vd b) {
#if defined(__SSE2__) && !defined(__SSE4_1__) && !defined(__AVX__) && !defined(__clang__)
    /* Opaque to the optimiser: GCC 12 folds some of these selects of 64-bit lanes into a
     * conditional it cannot expand without SSE4.1 (an internal compiler error). */
    __asm__("" : "+x"(m));
#endif
    return (fl_vd)((m & (fl_vl)a) | (~m & (fl_vl)b));
}

/* a b + c lane by lane, rounded once where the instruction set fuses multiply-add (the
 * AVX2 and AVX-512 builds: __FMA__), twice elsewhere. The kernels are compiled with
 * -ffp-contract=off, so these are the only fused products: an expression gives the same
 * bits on every path that evaluates it, whatever the optimisation level or the flags a
 * packager adds (-O1, sanitizers). fl_mla_f/d take a scalar c (a polynomial's
 * coefficient), fl_fma_f/d a vector. */
FL_INLINE fl_vf fl_fma_f(fl_vf a, fl_vf b, fl_vf c) {
#if defined(__FMA__)
    return (fl_vf)FL_MM_FMA(fmadd_ps)((FL_MMV_FMA())a, (FL_MMV_FMA())b, (FL_MMV_FMA())c);
#else
    return a * b + c;
#endif
}
FL_INLINE fl_vd fl_fma_d(fl_vd a, fl_vd b, fl_vd c) {
#if defined(__FMA__)
    return (fl_vd)FL_MM_FMA(fmadd_pd)((FL_MMV_FMA(d))a, (FL_MMV_FMA(d))b, (FL_MMV_FMA(d))c);
#else
    return a * b + c;
#endif
}
FL_INLINE fl_vf fl_mla_f(fl_vf a, fl_vf b, float c) {
    const fl_vf zero = {0};
    return fl_fma_f(a, b, zero + c);
}
FL_INLINE fl_vd fl_mla_d(fl_vd a, fl_vd b, double c) {
    const fl_vd zero = {0};
    return fl_fma_d(a, b, zero + c);
}

/* Whether any lane of a mask (all ones or all zeros per lane) is set. */
FL_INLINE int fl_any_i(fl_vi m) {
#if defined(__AVX512F__)
    return _mm512_test_epi32_mask((__m512i)m, (__m512i)m) != 0;
#elif defined(__AVX__)
    return _mm256_movemask_ps((__m256)m) != 0;
#elif defined(__SSE2__)
    return _mm_movemask_ps((__m128)m) != 0;
#else
    int any = 0;
    for (int k = 0; k < FL_NF; k++) any |= m[k] != 0;
    return any;
#endif
}

/* The same for 64-bit lanes: a set lane is two set 32-bit ones. */
FL_INLINE int fl_any_l(fl_vl m) { return fl_any_i((fl_vi)m); }

/* The instruction set's intrinsics: FL_MM(max_ps) is _mm512_max_ps with AVX-512,
 * _mm256_max_ps with AVX, _mm_max_ps with SSE2; FL_MMV(d) is __m512d, __m256d or __m128d
 * (FL_MMV() the float vector). Undefined without SSE2: generic code instead. */
#if defined(__AVX512F__)
#define FL_MM(OP) _mm512_##OP
#define FL_MMV(D) __m512##D
#elif defined(__AVX__)
#define FL_MM(OP) _mm256_##OP
#define FL_MMV(D) __m256##D
#elif defined(__SSE2__)
#define FL_MM(OP) _mm_##OP
#define FL_MMV(D) __m128##D
#endif

/* Lane-wise max and min: fl_vmax_f(a, b), fl_vmin_f, fl_vmax_d, fl_vmin_d, which are b
 * where either is NaN (x86's max and min instructions do that). NAME: max or min, SUF:
 * f or d, VT the vector type, P: the intrinsics' ps or pd, D: their vector type's suffix
 * (none or d), CMP: the comparison that picks a. */
#ifdef FL_MM
#define FL_DEFINE_MINMAX(NAME, SUF, VT, P, D, CMP)                                        \
    FL_INLINE VT fl_v##NAME##_##SUF(VT a, VT b) {                                         \
        return (VT)FL_MM(NAME##_##P)((FL_MMV(D))a, (FL_MMV(D))b);                         \
    }
#else
#define FL_DEFINE_MINMAX(NAME, SUF, VT, P, D, CMP)                                        \
    FL_INLINE VT fl_v##NAME##_##SUF(VT a, VT b) {                                         \
        return fl_select_##SUF(a CMP b, a, b);                                            \
    }
#endif
FL_DEFINE_MINMAX(max, f, fl_vf, ps, , >)
FL_DEFINE_MINMAX(max, d, fl_vd, pd, d, >)
FL_DEFINE_MINMAX(min, f, fl_vf, ps, , <)
FL_DEFINE_MINMAX(min, d, fl_vd, pd, d, <)

/* float lanes in double: the low and high halves of a float vector, exactly. */
FL_INLINE fl_vd fl_widen_lo(fl_vf v) {
#if defined(__AVX512F__)
    return (fl_vd)_mm512_cvtps_pd(_mm512_castps512_ps256((__m512)v));
#else
    return __builtin_convertvector(__builtin_shufflevector(v, v, FL_LO), fl_vd);
#endif
}
FL_INLINE fl_vd fl_widen_hi(fl_vf v) {
#if defined(__AVX512F__)
    return (fl_vd)_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd((__m512d)v, 1)));
#else
    return __builtin_convertvector(__builtin_shufflevector(v, v, FL_HI), fl_vd);
#endif
}
FL_INLINE fl_vf fl_narrow(fl_vd lo, fl_vd hi) {
    const fl_vh a = __builtin_convertvector(lo, fl_vh), b = __builtin_convertvector(hi, fl_vh);
    return __builtin_shufflevector(a, b, FL_LO, FL_HI);
}

/* Horizontal sums and max as a tree of halves (a fixed order, for a given width): at the
 * end of a row they are on the path to the next pass, which a tree shortens (log2 of the
 * lanes deep, where a lane-order loop chains 16 dependent steps in float lanes). */
typedef double fl_vd2 __attribute__((vector_size(16)));
typedef double fl_vd4 __attribute__((vector_size(32)));
typedef int32_t fl_vi4 __attribute__((vector_size(16)));
typedef int32_t fl_vi8 __attribute__((vector_size(32)));
typedef int64_t fl_vl2 __attribute__((vector_size(16)));
typedef int64_t fl_vl4 __attribute__((vector_size(32)));
typedef float fl_vf4 __attribute__((vector_size(16)));
typedef float fl_vf8 __attribute__((vector_size(32)));

/* v's lanes halved down to 4 (or 2 for 64-bit lanes) by an element-wise operation OP:
 * a 512-bit vector to 256 bits, a 256-bit one to 128. */
#if FL_WIDTH == 64
#define FL_FOLD_128(v, OP, V8)                                                    \
    __extension__({                                                                       \
        const V8 h8_ = OP(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7),          \
                          __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));   \
        OP(__builtin_shufflevector(h8_, h8_, 0, 1, 2, 3),                                 \
           __builtin_shufflevector(h8_, h8_, 4, 5, 6, 7));                                \
    })
#define FL_FOLD_128_64(v, OP, V4)                                                     \
    __extension__({                                                                       \
        const V4 h4_ = OP(__builtin_shufflevector(v, v, 0, 1, 2, 3),                      \
                          __builtin_shufflevector(v, v, 4, 5, 6, 7));                     \
        OP(__builtin_shufflevector(h4_, h4_, 0, 1), __builtin_shufflevector(h4_, h4_, 2, 3)); \
    })
#elif FL_WIDTH == 32
#define FL_FOLD_128(v, OP, V8)                                                    \
    OP(__builtin_shufflevector(v, v, 0, 1, 2, 3), __builtin_shufflevector(v, v, 4, 5, 6, 7))
#define FL_FOLD_128_64(v, OP, V4)                                                     \
    OP(__builtin_shufflevector(v, v, 0, 1), __builtin_shufflevector(v, v, 2, 3))
#else
#define FL_FOLD_128(v, OP, V8) (v)
#define FL_FOLD_128_64(v, OP, V4) (v)
#endif
#define FL_ADD(a, b) ((a) + (b))
/* Lane-wise max of vectors without NaN (as selects: the fold's types are generic). */
#define FL_MAX(a, b)                                                                      \
    __extension__({                                                                       \
        const __typeof__(a) a_ = (a), b_ = (b);                                           \
        const __typeof__(a_ > b_) m_ = a_ > b_;                                           \
        (__typeof__(a_))((m_ & (__typeof__(m_))a_) | (~m_ & (__typeof__(m_))b_));         \
    })

/* Sum of a double vector's lanes. */
FL_INLINE double fl_hsum(fl_vd v) {
    const fl_vd2 h = FL_FOLD_128_64(v, FL_ADD, fl_vd4);
    return h[0] + h[1];
}

/* Sum of int32 lanes (counts: exact in any order), as a double. */
FL_INLINE double fl_hsum_i32(fl_vi v) {
    const fl_vi4 h = FL_FOLD_128(v, FL_ADD, fl_vi8);
    return (double)((h[0] + h[2]) + (h[1] + h[3]));
}

/* Sum of int64 lanes (counts), as a double. */
FL_INLINE double fl_hsum_i64(fl_vl v) {
    const fl_vl2 h = FL_FOLD_128_64(v, FL_ADD, fl_vl4);
    return (double)(h[0] + h[1]);
}

/* ---- exp ---- */

#define FL_LN2_HI 6.93147180369123816490e-01    /* n * LN2_HI exact for |n| < 2^20 */
#define FL_LN2_LO 1.90821492927058770002e-10


/* exp(r) - 1 by Taylor's series from its r^8 term on, given p = the sum of the terms from
 * r^8 up divided by r^8 (1/8! where they stop at r^8). */
FL_INLINE fl_vd fl_expm1_taylor_d(fl_vd p, fl_vd r) {
    p = fl_mla_d(p, r, 1.9841269841269841e-4);
    p = fl_mla_d(p, r, 1.3888888888888889e-3);
    p = fl_mla_d(p, r, 8.3333333333333333e-3);
    p = fl_mla_d(p, r, 4.1666666666666667e-2);
    p = fl_mla_d(p, r, 1.6666666666666667e-1);
    p = fl_mla_d(p, r, 0.5);
    p = fl_mla_d(p, r, 1.0);
    return p * r;
}

/* exp(x) of double lanes for -746 <= x <= 710 (or NaN) by Taylor's polynomial of degree
 * 13 on |r| <= ln2/2, within about 1 ulp. */
FL_INLINE fl_vd fl_exp_poly_d(fl_vd x) {
    const double round = 6755399441055744.0;                /* 1.5 * 2^52 */
    const fl_vd zero = {0};
    const fl_vd t = fl_fma_d(x, zero + 1.4426950408889634, zero + round);
    const fl_vd n = t - round;
    fl_vd r = fl_fma_d(n, zero - FL_LN2_HI, x);             /* exact: ln2's high 32 bits */
    r = fl_fma_d(n, zero - FL_LN2_LO, r);
    fl_vd p = fl_mla_d(zero + 1.6059043836821613e-10, r, 2.0876756987868099e-9);
    p = fl_mla_d(p, r, 2.5052108385441718e-8);
    p = fl_mla_d(p, r, 2.7557319223985893e-7);
    p = fl_mla_d(p, r, 2.7557319223985888e-6);
    p = fl_mla_d(p, r, 2.4801587301587302e-5);
    p = fl_expm1_taylor_d(p, r) + 1.0;
#if defined(__AVX512F__)
    return (fl_vd)_mm512_scalef_pd((__m512d)p, (__m512d)n);
#else
    /* n from t's low bits, and 2^n in halves (subnormals round once); unsigned where a
     * NaN's bits would make a signed shift undefined */
    const fl_vl ni = (fl_vl)((fl_vu)t - (fl_vu)(zero + round));
    const fl_vl n1 = ni >> 1, n2 = ni - n1;
    return p * (fl_vd)((fl_vu)(n1 + 1023) << 52) * (fl_vd)((fl_vu)(n2 + 1023) << 52);
#endif
}

/* The same, with AVX-512 by a table: 2^(k/8) from 8 entries (one register, one
 * permute), x = (8m + k) ln2/8 + r with |r| <= ln2/16, exp(x) = 2^m 2^(k/8) exp(r), and
 * exp(r) - 1 to 1e-18 by its Taylor polynomial of degree 8: five multiply-adds fewer
 * (the float64 exp pass: 0.54 -> 0.49 ns an element in L2), within 1.01 ulp. */
FL_INLINE fl_vd fl_exp_range_d(fl_vd x) {
#if defined(__AVX512F__)
    const fl_vd zero = {0};
    const double round = 6755399441055744.0;                /* 1.5 * 2^52 */
    const fl_vd table = {1.0, 1.090507732665257659207011, 1.1892071150027210667175,
                         1.296839554651009665933754, 1.414213562373095048801689,
                         1.542210825407940823612292, 1.681792830507429086062251,
                         1.834008086409342463487083};
    const fl_vd t = fl_fma_d(x, zero + 8 * 1.4426950408889634, zero + round);
    const fl_vd n = t - round;                              /* 8m + k */
    const fl_vl k = (fl_vl)t & 7;                           /* n mod 8, from t's low bits */
    fl_vd r = fl_fma_d(n, zero - FL_LN2_HI / 8, x);         /* exact: |n| < 2^14 */
    r = fl_fma_d(n, zero - FL_LN2_LO / 8, r);
    const fl_vd scale = __builtin_shuffle(table, k);
    /* 2^(k/8) exp(r), rounded once */
    const fl_vd p = fl_fma_d(fl_expm1_taylor_d(zero + 2.4801587301587302e-5, r), scale, scale);
    const fl_vd m = (n - __builtin_convertvector(k, fl_vd)) * 0.125;      /* exact */
    return (fl_vd)_mm512_scalef_pd((__m512d)p, (__m512d)m);
#else
    return fl_exp_poly_d(x);
#endif
}

/* exp(x) of double lanes (any x). */
FL_INLINE fl_vd fl_exp_d(fl_vd x) {
    const fl_vd zero = {0};
    x = fl_vmax_d(zero - 746.0, x);                         /* NaN stays NaN */
    return fl_exp_range_d(fl_select_d(x > zero + 710.0, zero + 710.0, x));
}

/* exp(x) for x <= 0 (or NaN), as the exponentials of a row relative to its max are:
 * without the overflow clamp (a fifth of the float64 exp pass). */
FL_INLINE fl_vd fl_exp_neg_d(fl_vd x) {
    const fl_vd zero = {0};
    return fl_exp_range_d(fl_vmax_d(zero - 746.0, x));     /* NaN stays NaN */
}

/* exp(d + lo) of float lanes, for d <= 0 (or NaN) and |lo| <= ulp(d) (or NaN where d is
 * -inf): d is clamped where the result underflows, and lo, where d is not, joins the
 * reduced argument. (Up to d = 64 as well: fl_coef_scale_exp_f32's log-probabilities.) */
FL_INLINE fl_vf fl_exp_neg_f(fl_vf d, fl_vf lo) {
    const fl_vf zero = {0};
    const float round = 12582912.0f;                         /* 1.5 * 2^23 */
    const fl_vf clamped = fl_vmax_f(zero - 104.0f, d);       /* exp(-104) rounds to 0 */
    lo = fl_select_f(d == clamped, lo, zero);
    d = clamped;
    const fl_vf t = fl_fma_f(d, zero + 1.44269504f, zero + round);
    const fl_vf n = t - round;
    fl_vf r = fl_fma_f(n, zero - 0.693359375f, d);           /* ln2's high part: exact */
    r = fl_fma_f(n, zero + 2.12194440e-4f, r);
    r = r + lo;
    fl_vf p = fl_mla_f(zero + 1.38146130920354e-3f, r, 8.368709831816333e-3f);
    p = fl_mla_f(p, r, 4.1668387364721171e-2f);
    p = fl_mla_f(p, r, 1.6666520689750436e-1f);
    p = fl_mla_f(p, r, 4.9999993451691255e-1f);
    p = fl_mla_f(p, r, 1.0f);
    p = fl_mla_f(p, r, 1.0f);
#if defined(__AVX512F__)
    return (fl_vf)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
    /* as in fl_exp_poly_d */
    const fl_vi ni = (fl_vi)((fl_vui)t - (fl_vui)(zero + round));
    const fl_vi n1 = ni >> 1, n2 = ni - n1;
    return p * (fl_vf)((fl_vui)(n1 + 127) << 23) * (fl_vf)((fl_vui)(n2 + 127) << 23);
#endif
}

/* How fl_shift_f finds the rounding error of x - sub: Knuth's TwoSum (6 operations) for
 * any x, or Dekker's Fast2Sum (3), exact where the operand of the larger exponent is
 * known: sub's (every x of the row below 2^(e + 1) in magnitude, sub in [2^e, 2^(e + 1)))
 * or x's (sub <= 0, so |x| >= |sub|). All three give the same bits where they apply. */
enum { FL_SHIFT_ANY, FL_SHIFT_SUB_WIDER, FL_SHIFT_X_WIDER };

/* (x - sub) s as d + lo, with d = fl(x - sub) and lo its rounding error, times s (the
 * product by s != 1 rounds once more). */
FL_INLINE fl_vf fl_shift_f(fl_vf x, float sub, float s, fl_vf* lo, int kind) {
    const fl_vf d = x - sub;
    if (kind == FL_SHIFT_SUB_WIDER) {
        *lo = (x - (d + sub)) * s;
    } else if (kind == FL_SHIFT_X_WIDER) {
        *lo = (-sub - (d - x)) * s;
    } else {
        const fl_vf x_seen = d + sub, sub_seen = x_seen - d;
        *lo = ((x - x_seen) + (sub_seen - sub)) * s;
    }
    return d * s;
}

/* The subtraction fl_shift_f may use for a row of max sub (a float) and least element
 * lowest (-inf where unknown). */
FL_INLINE int fl_shift_kind(float sub, double lowest) {
    if (sub <= 0.0f) return FL_SHIFT_X_WIDER;
    /* 2^e <= sub (0 for a subnormal sub: then never) from the exponent's bits */
    uint32_t bits;
    memcpy(&bits, &sub, sizeof bits);
    bits &= 0x7f800000u;
    float power;
    memcpy(&power, &bits, sizeof power);
    if (sub < INFINITY && lowest > -2.0 * power) return FL_SHIFT_SUB_WIDER;
    return FL_SHIFT_ANY;
}

/* ---- log ---- */

/* log(v) within 1 ulp for positive, finite, normal v (anything else: a wrong finite
 * value). fdlibm's algorithm without branches: v = 2^k m, m in [sqrt(2)/2, sqrt(2)),
 * f = m - 1, s = f / (2 + f), log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)). k goes to
 * double through the exponent field (AVX2 has no int64 conversion). */
FL_INLINE fl_vd fl_log_normal_d(fl_vd v) {
    const fl_vu ix = (fl_vu)v + (0x3ff0000000000000ULL - 0x3fe6a09e00000000ULL);
    const fl_vd k = (fl_vd)((ix >> 52) | 0x4330000000000000ULL) - (4503599627370496.0 + 1023.0);
    const fl_vd f = (fl_vd)((ix & 0x000fffffffffffffULL) + 0x3fe6a09e00000000ULL) - 1.0;
    const fl_vd hfsq = 0.5 * f * f;
    const fl_vd s = f / (2.0 + f);
    const fl_vd z = s * s, w = z * z;
    const fl_vd zero = {0};
    const fl_vd t1 = w * fl_mla_d(fl_mla_d(zero + 1.531383769920937332e-01, w,
                                           2.222219843214978396e-01), w,
                                  3.999999999940941908e-01);
    const fl_vd t2 = z * fl_mla_d(fl_mla_d(fl_mla_d(zero + 1.479819860511658591e-01, w,
                                                    1.818357216161805012e-01), w,
                                           2.857142874366239149e-01), w,
                                  6.666666666666735130e-01);
    return fl_fma_d(k, zero + FL_LN2_HI,
                    (fl_fma_d(s, hfsq + (t2 + t1), k * FL_LN2_LO) - hfsq) + f);
}

/* log(v) for any double: -inf at 0, inf at inf, NaN for NaN and v < 0; a subnormal v is
 * scaled by 2^54 first. */
FL_INLINE fl_vd fl_log_d(fl_vd v) {
    const fl_vd zero = {0};
    const fl_vl tiny = v < 2.2250738585072014e-308;
    const fl_vd r = fl_log_normal_d(fl_select_d(tiny, v * 18014398509481984.0, v));
    fl_vd out = fl_select_d(tiny, r - 54.0 * FL_LN2_HI - 54.0 * FL_LN2_LO, r);
    out = fl_select_d(v == zero, zero - INFINITY, out);
    out = fl_select_d(v < zero + INFINITY, out, v);          /* inf stays inf, NaN NaN */
    return fl_select_d(v < zero, zero + NAN, out);
}

/* log1p(z) for z >= -1 (-inf at -1; NaN and +inf pass through): log(1 + z) with the
 * rounding of 1 + z corrected. */
FL_INLINE fl_vd fl_log1p_f64(fl_vd z) {
    const fl_vd zero = {0};
    const fl_vd u = z + 1.0;
    fl_vd r = fl_log_normal_d(u) + (z - (u - 1.0)) / u;
    r = fl_select_d(u == zero, zero - INFINITY, r);
    return fl_select_d(u == zero + INFINITY, u, r);
}

/* log(m (1 + f)) parts for u = 2^k m, m in [sqrt(2)/2, sqrt(2)), of a positive normal
 * float u: returns log(1 + f) less its leading term f (Cephes' logf polynomial), sets f
 * and k. Within about 1 ulp once assembled as (f + r) + k ln2. */
FL_INLINE fl_vf fl_logf_parts(fl_vf u, fl_vf* f_out, fl_vf* k_out) {
    /* the exponent's bits in unsigned arithmetic: for a negative u (a wrong value, but
     * computed) a signed difference or shift would be undefined */
    const fl_vi k = (fl_vi)((fl_vui)u - 0x3f3504f3u) >> 23;
    const fl_vf f = (fl_vf)((fl_vui)u - ((fl_vui)k << 23)) - 1.0f;
    const fl_vf zero = {0};
    const fl_vf f2 = f * f;
    fl_vf p = fl_mla_f(zero + 7.0376836292e-2f, f, -1.1514610310e-1f);
    p = fl_mla_f(p, f, 1.1676998740e-1f);
    p = fl_mla_f(p, f, -1.2420140846e-1f);
    p = fl_mla_f(p, f, 1.4249322787e-1f);
    p = fl_mla_f(p, f, -1.6668057665e-1f);
    p = fl_mla_f(p, f, 2.0000714765e-1f);
    p = fl_mla_f(p, f, -2.4999993993e-1f);
    p = fl_mla_f(p, f, 3.3333331174e-1f);
    *f_out = f;
    *k_out = __builtin_convertvector(k, fl_vf);
    return fl_fma_f(f2 * f, p, zero - 0.5f * f2);
}

/* log1p and exp of one double (a row's log S, its target's probability): the vector
 * functions' lane 0. glibc's scalar log1p took ~25 ns a row, a fifth of the time of a row
 * of 100 classes; these run in a few cycles of throughput, off the rows' critical path. */
FL_INLINE double fl_log1p_1(double z) {
    const fl_vd zero = {0};
    return fl_log1p_f64(zero + z)[0];
}
FL_INLINE double fl_exp_1(double z) {
    const fl_vd zero = {0};
    return fl_exp_d(zero + z)[0];
}

/* ---- the row primitives ----
 * fl_max_T(x, n): max of x[0:n] as double; NaN never wins a comparison, so it is skipped
 *   (exp(NaN) = NaN catches it in the sum); -inf when there is no other value.
 * fl_exp_sum_T(x, n, sub, s, out, self_dot, ones): sum_i exp((x_i - sub) s) for x_i <= sub
 *   (sub is the max of x, or above it) and s > 0, less the terms with x_i = sub (exactly
 *   1), whose count goes to *ones (so that S - 1 is exact: see log S), storing each
 *   exponential in out[i] unless out is NULL (out may be x: x_i is read before out[i] is
 *   written). Unless self_dot is NULL it also returns sum_i e_i (sub - x_i) over e_i != 0
 *   there (entropy; x_i = -inf has e_i = 0 and adds 0).
 * fl_scale_T(e, n, factor): e_i <- e_i * factor.
 * fl_sub_shift_T(x, n, a, b, out): out_i <- (x_i - a) - b, in double (log_softmax: x - a is
 *   exact for x near the max a, so large logits lose nothing).
 * The tail of a row is processed in vectors with -inf in their unused lanes, so that the
 * order of the sums depends on n only. */

/* The first m < lanes elements of a row's tail: loads padded with -inf (whose exp is 0)
 * and stores of the first m lanes. AVX-512 masks them, without touching memory past the
 * row; elsewhere they go lane by lane. */
#if defined(__AVX512F__)
FL_INLINE fl_vf fl_load_tail_f32(const float* x, int m) {
    return (fl_vf)_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), (__mmask16)((1u << m) - 1), x);
}
FL_INLINE void fl_store_tail_f32(float* out, fl_vf v, int m) {
    _mm512_mask_storeu_ps(out, (__mmask16)((1u << m) - 1), (__m512)v);
}
FL_INLINE fl_vd fl_load_tail_f64(const double* x, int m) {
    return (fl_vd)_mm512_mask_loadu_pd(_mm512_set1_pd(-INFINITY), (__mmask8)((1u << m) - 1), x);
}
FL_INLINE void fl_store_tail_f64(double* out, fl_vd v, int m) {
    _mm512_mask_storeu_pd(out, (__mmask8)((1u << m) - 1), (__m512d)v);
}
#else
#define FL_DEFINE_TAIL(SUFFIX, T, VT, NL)                                                 \
    FL_INLINE VT fl_load_tail_##SUFFIX(const T* x, int m) {                               \
        VT v;                                                                             \
        for (int k = 0; k < (NL); k++) v[k] = k < m ? x[k] : -INFINITY;                   \
        return v;                                                                         \
    }                                                                                     \
    FL_INLINE void fl_store_tail_##SUFFIX(T* out, VT v, int m) {                          \
        /* m < NL, which GCC cannot always see (a spurious -Warray-bounds) */             \
        if (m > 0) memcpy(out, &v, (size_t)(m < (NL) ? m : (NL)) * sizeof(T));            \
    }
FL_DEFINE_TAIL(f32, float, fl_vf, FL_NF)
FL_DEFINE_TAIL(f64, double, fl_vd, FL_ND)
#endif

/* Vector k of a group of four starting at x, of which n elements remain: a full load, a
 * padded one, or all -inf. */
#define FL_DEFINE_GROUP_IO(SUFFIX, T, VT, NL)                                             \
    FL_INLINE VT fl_group_load_##SUFFIX(const T* x, ptrdiff_t n, int k) {                 \
        const ptrdiff_t m = n - k * (NL);                                                 \
        if (m >= (NL)) {                                                                  \
            VT v;                                                                         \
            memcpy(&v, x + k * (NL), sizeof v);                                           \
            return v;                                                                     \
        }                                                                                 \
        return fl_load_tail_##SUFFIX(x + k * (NL), m > 0 ? (int)m : 0);                   \
    }                                                                                     \
    FL_INLINE void fl_group_store_##SUFFIX(T* out, ptrdiff_t n, int k, VT v) {            \
        const ptrdiff_t m = n - k * (NL);                                                 \
        if (m >= (NL)) memcpy(out + k * (NL), &v, sizeof v);                              \
        else if (m > 0) fl_store_tail_##SUFFIX(out + k * (NL), v, (int)m);                \
    }
FL_DEFINE_GROUP_IO(f32, float, fl_vf, FL_NF)
FL_DEFINE_GROUP_IO(f64, double, fl_vd, FL_ND)

/* Rows of at most FL_SHORT_ROW elements (the last chunk of a row, or rows of few classes
 * that the block kernels of _simd_small.h do not take: teachers given as logits or
 * log-probabilities, entropy) go through a scalar loop with libm's exp in double: a vector's latency costs
 * more than a few scalar exps, and there is nothing to overlap it with inside one row.
 * With the float exp of this file the crossing is lower than it was with libm's vector
 * one (16): 1M x 10 soft-target cross-entropy 152 -> 128 ms, entropy_from_logits 115 ->
 * 81 ms on Zen 5, 1 thread, with 4. */
#define FL_SHORT_ROW 4
#define FL_SHORT_EXP_SUM(x, n, sub, s, out, self_dot, ones)                                 \
    __extension__({                                                                       \
        double sum_ = 0.0, dot_ = 0.0, ones_ = 0.0;                                       \
        for (ptrdiff_t i_ = 0; i_ < (n); i_++) {                                          \
            const double xi_ = (x)[i_];     /* before a store in place overwrites it */   \
            const double e_ = exp((xi_ - (sub)) * (s));                                   \
            if (out) (out)[i_] = e_;                                                      \
            if (xi_ == (sub)) ones_ += 1.0;                                               \
            else sum_ += e_;                                                              \
            if ((self_dot) && e_ != 0.0) dot_ += e_ * ((sub) - xi_);                      \
        }                                                                                 \
        if (self_dot) *(self_dot) = dot_;                                                 \
        *(ones) = ones_;                                                                  \
        sum_;                                                                             \
    })

/* Max of a vector's lanes (never NaN here: the accumulators skip it). */
FL_INLINE double fl_hmax_f32(fl_vf v) {
    const fl_vf4 h = FL_FOLD_128(v, FL_MAX, fl_vf8);
    const fl_vf4 h2 = FL_MAX(h, __builtin_shufflevector(h, h, 2, 3, 0, 1));
    return h2[0] > h2[1] ? h2[0] : h2[1];
}
FL_INLINE double fl_hmax_f64(fl_vd v) {
    const fl_vd2 h = FL_FOLD_128_64(v, FL_MAX, fl_vd4);
    return h[0] > h[1] ? h[0] : h[1];
}

/* Rows shorter than this do not look for their least element (fl_max_f32): in a row of
 * 100 float32 it cost about as much as the cheaper subtraction saves (C harness). */
#define FL_LOWEST_MIN_ROW 256

/* fl_max_f32 and fl_max_f64: one definition for both types (T, its vector VT, lanes NL,
 * lane-wise max and min VMAX, VMIN). Four accumulators hide the max's latency; the rest of
 * the row goes a vector at a time, its last partial vector padded with -inf. With
 * lowest_out (NULL: not), also the least element, NaN skipped (-inf for rows below
 * FL_LOWEST_MIN_ROW: unknown). */
#define FL_DEFINE_MAX(SUFFIX, T, VT, NL, VMAX, VMIN)                                      \
    FL_INLINE double fl_max_##SUFFIX(const T* x, ptrdiff_t n, double* lowest_out) {       \
        if (lowest_out && n < FL_LOWEST_MIN_ROW) {                                        \
            *lowest_out = -INFINITY;                                                      \
            lowest_out = NULL;                                                            \
        }                                                                                 \
        VT lowest, highest;                                                               \
        for (int k = 0; k < (NL); k++) lowest[k] = -INFINITY, highest[k] = INFINITY;      \
        VT m[4] = {lowest, lowest, lowest, lowest};                                       \
        VT low[4] = {highest, highest, highest, highest};                                 \
        ptrdiff_t i = 0;                                                                  \
        for (; i + 4 * (NL) <= n; i += 4 * (NL)) {                                        \
            for (int q = 0; q < 4; q++) {                                                 \
                VT a;                                                                     \
                memcpy(&a, x + i + q * (NL), sizeof a);                                   \
                m[q] = VMAX(a, m[q]);            /* a NaN in a keeps m */                 \
                if (lowest_out) low[q] = VMIN(a, low[q]);                                 \
            }                                                                             \
        }                                                                                 \
        for (; i < n; i += (NL)) {                                                        \
            VT a;                                                                         \
            if (n - i >= (NL)) {                                                          \
                memcpy(&a, x + i, sizeof a);                                              \
                if (lowest_out) low[0] = VMIN(a, low[0]);                                 \
            } else {                                                                      \
                a = fl_load_tail_##SUFFIX(x + i, (int)(n - i));                           \
                if (lowest_out) {       /* the row's last NL elements: some seen again */ \
                    VT b;                                                                 \
                    memcpy(&b, x + n - (NL), sizeof b);                                   \
                    low[0] = VMIN(b, low[0]);                                             \
                }                                                                         \
            }                                                                             \
            m[0] = VMAX(a, m[0]);                                                         \
        }                                                                                 \
        if (lowest_out) {                                                                 \
            low[0] = VMIN(VMIN(low[1], low[0]), VMIN(low[3], low[2]));                    \
            *lowest_out = -fl_hmax_##SUFFIX(-low[0]);                                     \
        }                                                                                 \
        m[0] = VMAX(VMAX(m[1], m[0]), VMAX(m[3], m[2]));                                  \
        return fl_hmax_##SUFFIX(m[0]);                                                    \
    }
FL_DEFINE_MAX(f32, float, fl_vf, FL_NF, fl_vmax_f, fl_vmin_f)
FL_DEFINE_MAX(f64, double, fl_vd, FL_ND, fl_vmax_d, fl_vmin_d)

/* ---- streamed rows: the previous row's second pass (fl_drain) ---- */

/* fl_stream_f32(p, v), fl_stream_f64: a streaming store of a vector to an address
 * aligned to FL_WIDTH bytes (an ordinary store without SSE2). */
#ifdef FL_MM
#define FL_DEFINE_STREAM(SUFFIX, T, VT, P, D)                                             \
    FL_INLINE void fl_stream_##SUFFIX(T* p, VT v) { FL_MM(stream_##P)(p, (FL_MMV(D))v); }
#else
#define FL_DEFINE_STREAM(SUFFIX, T, VT, P, D)                                             \
    FL_INLINE void fl_stream_##SUFFIX(T* p, VT v) { memcpy(p, &v, sizeof v); }
#endif
FL_DEFINE_STREAM(f32, float, fl_vf, ps, )
FL_DEFINE_STREAM(f64, double, fl_vd, pd, d)

/* Orders a thread's streaming stores before what follows (the end of its rows). */
FL_INLINE void fl_stream_fence(void) {
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

/* e * factor as fl_scale_f32 and fl_scale_f64 form it (and the drains below): in float
 * where the factor is a float (lanes), else in double (fl_factor_lanes_* returns 0:
 * element by element). */
FL_INLINE int fl_factor_lanes_f32(double factor) { return fabs(factor) <= 3.0e38; }
FL_INLINE int fl_factor_lanes_f64(double factor) { (void)factor; return 1; }
FL_INLINE float fl_drain_one_f32(float e, double factor) {
    return fl_factor_lanes_f32(factor) ? e * (float)factor : (float)(e * factor);
}
FL_INLINE double fl_drain_one_f64(double e, double factor) { return e * factor; }

/* fl_drain_start_*: the first element of the chunk from which dst is aligned for
 * streaming stores (n where the product is element by element). fl_drain_vectors_*:
 * elements [i, i + m) streamed, m a multiple of NL. fl_drain_edges_*: elements [0, start)
 * and [stop, n) stored as usual. fl_drain_*: a whole chunk of n. */
#define FL_DEFINE_DRAIN(SUFFIX, T, VT, NL)                                                \
    FL_INLINE ptrdiff_t fl_drain_start_##SUFFIX(const fl_drain* d, ptrdiff_t n) {          \
        if (!fl_factor_lanes_##SUFFIX(d->factor)) return n;                                \
        const size_t off = (uintptr_t)d->dst % FL_WIDTH;                                  \
        const ptrdiff_t head = off ? (ptrdiff_t)((FL_WIDTH - off) / sizeof(T)) : 0;       \
        return head < n ? head : n;                                                       \
    }                                                                                     \
    FL_INLINE void fl_drain_vectors_##SUFFIX(const fl_drain* d, ptrdiff_t i, ptrdiff_t m) { \
        const T* src = (const T*)d->src;                                                  \
        T* dst = (T*)d->dst;                                                              \
        const T f = (T)d->factor;                                                         \
        for (ptrdiff_t j = i; j < i + m; j += (NL)) {                                     \
            VT v;                                                                         \
            memcpy(&v, src + j, sizeof v);                                                \
            v = v * f;                                                                    \
            if (d->fix_at >= j && d->fix_at < j + (NL)) v[d->fix_at - j] = (T)d->fix_value; \
            fl_stream_##SUFFIX(dst + j, v);                                               \
        }                                                                                 \
    }                                                                                     \
    FL_INLINE void fl_drain_edges_##SUFFIX(const fl_drain* d, ptrdiff_t start,             \
                                           ptrdiff_t stop, ptrdiff_t n) {                 \
        const T* src = (const T*)d->src;                                                  \
        T* dst = (T*)d->dst;                                                              \
        for (int part = 0; part < 2; part++) {                                            \
            for (ptrdiff_t j = part ? stop : 0; j < (part ? n : start); j++)              \
                dst[j] = j == d->fix_at ? (T)d->fix_value                                \
                                        : fl_drain_one_##SUFFIX(src[j], d->factor);       \
        }                                                                                 \
    }                                                                                     \
    FL_INLINE void fl_drain_##SUFFIX(const fl_drain* d, ptrdiff_t n) {                     \
        const ptrdiff_t start = fl_drain_start_##SUFFIX(d, n);                            \
        const ptrdiff_t m = (n - start) / (NL) * (NL);                                    \
        fl_drain_vectors_##SUFFIX(d, start, m);                                           \
        fl_drain_edges_##SUFFIX(d, start, start + m, n);                                  \
    }
FL_DEFINE_DRAIN(f32, float, fl_vf, FL_NF)
FL_DEFINE_DRAIN(f64, double, fl_vd, FL_ND)

/* Four vectors of float exponentials from x[0:n] (n < 4 lanes: padded): stored in out
 * unless it is NULL, the terms at the shift counted in ones; returns the others' sum lane
 * by lane, in float. Unless dot is NULL, *dot gets the sum of e (x - sub) s lane by lane
 * (e (d + lo): the exact argument; terms of e = 0 add 0, x = -inf too), in float: its
 * terms share a sign, so the sum of a few loses no more than their roundings. */
FL_INLINE fl_vf fl_exp_group_f32(const float* x, ptrdiff_t n, float sub, float s, float* out,
                                 fl_vi* ones, int kind, fl_vf* dot) {
    const fl_vf zero = {0};
    fl_vf e[4], t[4];
    for (int k = 0; k < 4; k++) {
        const fl_vf v = fl_group_load_f32(x, n, k);
        fl_vf lo;
        const fl_vf d = fl_shift_f(v, sub, s, &lo, kind);
        e[k] = fl_exp_neg_f(d, lo);
        if (out) fl_group_store_f32(out, n, k, e[k]);
        if (dot) t[k] = fl_select_f(e[k] != zero, fl_fma_f(e[k], d, e[k] * lo), zero);
        const fl_vi at_shift = v == sub;
        *ones -= at_shift;
        e[k] = (fl_vf)(~at_shift & (fl_vi)e[k]);
    }
    if (dot) *dot = (t[0] + t[1]) + (t[2] + t[3]);
    return (e[0] + e[1]) + (e[2] + e[3]);
}

/* acc (two double vectors) += the float lanes of sum. */
FL_INLINE void fl_add_widened(fl_vd* acc, fl_vf sum) {
    acc[0] += fl_widen_lo(sum);
    acc[1] += fl_widen_hi(sum);
}

/* fl_exp_sum_f32's exponentials, with the subtraction kind (a literal at each call: one
 * copy of the loop each), their dot (fl_exp_group_f32's, widened into dot[0:2]) unless dot
 * is NULL, and the previous row's chunk drained (drain unless NULL: a group of it after
 * each group of exponentials, the rest at the end). */
FL_INLINE void fl_exp_rest_f32(const float* x, ptrdiff_t n, float sub, float s, float* out,
                               fl_vd* acc, fl_vi* ones, int kind, const fl_drain* drain,
                               fl_vd* dot) {
    const size_t ahead = n >= FL_AHEAD ? FL_AHEAD * sizeof(float) : FL_AHEAD_BYTES;
    const ptrdiff_t start = drain ? fl_drain_start_f32(drain, n) : 0;
    ptrdiff_t drained = start;
    ptrdiff_t i = 0;
    fl_vf dot_first, dot_second;
    /* Whole groups (no tail checks), two at a time: their sums are added in float before
     * they are widened (8 terms a lane in a tree of 3 roundings), which halves the
     * conversions, 3% of the pass. */
    for (; i + 8 * FL_NF <= n; i += 8 * FL_NF) {
        fl_prefetch(x + i, n < FL_AHEAD && out ? out + i : NULL, 8 * FL_WIDTH, ahead);
        const fl_vf first = fl_exp_group_f32(x + i, 4 * FL_NF, sub, s, out ? out + i : NULL,
                                             ones, kind, dot ? &dot_first : NULL);
        const fl_vf second = fl_exp_group_f32(x + i + 4 * FL_NF, 4 * FL_NF, sub, s,
                                              out ? out + i + 4 * FL_NF : NULL, ones, kind,
                                              dot ? &dot_second : NULL);
        fl_add_widened(acc, first + second);
        if (dot) fl_add_widened(dot, dot_first + dot_second);
        if (drain && drained + 8 * FL_NF <= n) {
            fl_drain_vectors_f32(drain, drained, 8 * FL_NF);
            drained += 8 * FL_NF;
        }
    }
    if (i + 4 * FL_NF <= n) {
        fl_add_widened(acc, fl_exp_group_f32(x + i, 4 * FL_NF, sub, s, out ? out + i : NULL,
                                             ones, kind, dot ? &dot_first : NULL));
        if (dot) fl_add_widened(dot, dot_first);
        i += 4 * FL_NF;
    }
    if (i < n) {
        fl_add_widened(acc, fl_exp_group_f32(x + i, n - i, sub, s, out ? out + i : NULL,
                                             ones, kind, dot ? &dot_first : NULL));
        if (dot) fl_add_widened(dot, dot_first);
    }
    if (drain) {
        const ptrdiff_t m = (n - drained) / FL_NF * FL_NF;
        fl_drain_vectors_f32(drain, drained, m);
        fl_drain_edges_f32(drain, start, drained + m, n);
    }
}

/* sum of exp((x - sub) s) over x[0:n] but for the terms at sub (counted in ones_out), the
 * terms stored in out unless it is NULL; with self_dot, also sum exp(...) (sub - x).
 * lowest: the least x (-inf where unknown), which may allow a cheaper subtraction.
 * drain (NULL: none): a chunk of n of the previous row, drained meanwhile (fl_drain). */
FL_INLINE double fl_exp_sum_f32(const float* x, ptrdiff_t n, double sub, double s,
                                float* out, double* self_dot, double* ones_out,
                                double lowest, const fl_drain* drain) {
    if (n <= FL_SHORT_ROW) {
        const double sum = FL_SHORT_EXP_SUM(x, n, sub, s, out, self_dot, ones_out);
        if (drain) fl_drain_f32(drain, n);
        return sum;
    }
    /* sub is a float (a max of floats), or 0 */
    const float sub_f = (float)sub, s_f = (float)s;
    fl_vd acc[2] = {{0}};
    fl_vi ones = {0};
    /* Short rows (their least element unknown) keep TwoSum: one copy of the loop in the
     * batches of short rows, not three. */
    const int kind = n < FL_LOWEST_MIN_ROW ? FL_SHIFT_ANY : fl_shift_kind(sub_f, lowest);
    if (self_dot) {
        /* the sum of e (x - sub) s, negated and unscaled; TwoSum only (one copy of the
         * loop: the cheaper subtractions measured the same at 4096 x 1000) */
        fl_vd dot[2] = {{0}};
        fl_exp_rest_f32(x, n, sub_f, s_f, out, acc, &ones, FL_SHIFT_ANY, drain, dot);
        *self_dot = -fl_hsum(dot[0] + dot[1]) / s;
    } else {
        /* The loop for the row's kind, a literal at each call (one copy each), and a
         * literal scale of 1 for every row but distillation's: the products by s drop out
         * of the loop, the same bits (cross-entropy 4096 x 1000: 0.95-0.96 of the time). */
#define FL_EXP_REST_KIND(S_)                                                              \
    (kind == FL_SHIFT_SUB_WIDER                                                           \
         ? fl_exp_rest_f32(x, n, sub_f, S_, out, acc, &ones, FL_SHIFT_SUB_WIDER, drain, NULL) \
     : kind == FL_SHIFT_X_WIDER                                                           \
         ? fl_exp_rest_f32(x, n, sub_f, S_, out, acc, &ones, FL_SHIFT_X_WIDER, drain, NULL) \
         : fl_exp_rest_f32(x, n, sub_f, S_, out, acc, &ones, FL_SHIFT_ANY, drain, NULL))
        if (s_f == 1.0f) FL_EXP_REST_KIND(1.0f);
        else FL_EXP_REST_KIND(s_f);
#undef FL_EXP_REST_KIND
    }
    *ones_out = fl_hsum_i32(ones);
    return fl_hsum(acc[0] + acc[1]);
}

/* Four vectors of double exponentials, as fl_exp_group_f32 (the terms at the shift are
 * counted apart here too: a 1 in the sum would round the others to 1e-16 of it). */
FL_INLINE void fl_exp_group_f64(const double* x, ptrdiff_t n, double sub, double s,
                                double* out, fl_vd* acc, fl_vl* ones, fl_vd* dot) {
    const fl_vd zero = {0};
    for (int k = 0; k < 4; k++) {
        const fl_vd v = fl_group_load_f64(x, n, k);
        const fl_vd e = fl_exp_neg_d((v - sub) * s);
        if (out) fl_group_store_f64(out, n, k, e);
        const fl_vl at_shift = v == sub;
        *ones -= at_shift;
        acc[k] += (fl_vd)(~at_shift & (fl_vl)e);
        if (dot) dot[k] += fl_select_d(e != zero, e * (sub - v), zero);
    }
}

/* fl_exp_sum_f64's loop, with its self dot's accumulators or NULL, and a chunk drained
 * as in fl_exp_rest_f32 (drain unless NULL). */
FL_INLINE void fl_exp_rest_f64(const double* x, ptrdiff_t n, double sub, double s,
                               double* out, fl_vd* acc, fl_vl* ones, fl_vd* dot,
                               const fl_drain* drain) {
    const size_t ahead = n >= FL_AHEAD ? FL_AHEAD * sizeof(double) : FL_AHEAD_BYTES;
    const ptrdiff_t start = drain ? fl_drain_start_f64(drain, n) : 0;
    ptrdiff_t drained = start;
    ptrdiff_t i = 0;
    for (; i + 4 * FL_ND <= n; i += 4 * FL_ND) {      /* whole groups: no tail checks */
        fl_prefetch(x + i, out ? out + i : NULL, 4 * FL_WIDTH, ahead);
        fl_exp_group_f64(x + i, 4 * FL_ND, sub, s, out ? out + i : NULL, acc, ones, dot);
        if (drain && drained + 4 * FL_ND <= n) {
            fl_drain_vectors_f64(drain, drained, 4 * FL_ND);
            drained += 4 * FL_ND;
        }
    }
    if (i < n) fl_exp_group_f64(x + i, n - i, sub, s, out ? out + i : NULL, acc, ones, dot);
    if (drain) {
        const ptrdiff_t m = (n - drained) / FL_ND * FL_ND;
        fl_drain_vectors_f64(drain, drained, m);
        fl_drain_edges_f64(drain, start, drained + m, n);
    }
}

/* fl_exp_sum_f32 in double lanes; lowest is not used (no rounding error term here). */
FL_INLINE double fl_exp_sum_f64(const double* x, ptrdiff_t n, double sub, double s,
                                double* out, double* self_dot, double* ones_out,
                                double lowest, const fl_drain* drain) {
    (void)lowest;
    if (n <= FL_SHORT_ROW) {
        const double sum = FL_SHORT_EXP_SUM(x, n, sub, s, out, self_dot, ones_out);
        if (drain) fl_drain_f64(drain, n);
        return sum;
    }
    fl_vd acc[4] = {{0}}, dot[4] = {{0}};
    fl_vl ones = {0};
    /* A literal NULL for the loop without a self dot: with the pointer known only at run
     * time, the loop kept dot on the stack and spilled its registers there. */
    if (self_dot) {
        fl_exp_rest_f64(x, n, sub, s, out, acc, &ones, dot, drain);
        *self_dot = fl_hsum((dot[0] + dot[1]) + (dot[2] + dot[3]));
    } else if (s == 1.0) {            /* as in fl_exp_sum_f32: 0.90-0.96 of the time */
        fl_exp_rest_f64(x, n, sub, 1.0, out, acc, &ones, NULL, drain);
    } else {
        fl_exp_rest_f64(x, n, sub, s, out, acc, &ones, NULL, drain);
    }
    *ones_out = fl_hsum_i64(ones);
    return fl_hsum((acc[0] + acc[1]) + (acc[2] + acc[3]));
}

/* e_i <- e_i * factor: in float, where the factor is a float (it rounds once more, half an
 * ulp); in double where it is not (a factor beyond float's range, from extreme weights). */
FL_INLINE void fl_scale_f32(float* e, ptrdiff_t n, double factor) {
    ptrdiff_t i = 0;
    if (fl_factor_lanes_f32(factor)) {
        const float f = (float)factor;
        for (; i + FL_NF <= n; i += FL_NF) {
            fl_vf v;
            memcpy(&v, e + i, sizeof v);
            v = v * f;
            memcpy(e + i, &v, sizeof v);
        }
        for (; i < n; i++) e[i] = e[i] * f;
    }
    for (; i < n; i++) e[i] = (float)(e[i] * factor);
}

FL_INLINE void fl_scale_f64(double* e, ptrdiff_t n, double factor) {
    ptrdiff_t i = 0;
    for (; i + FL_ND <= n; i += FL_ND) {
        fl_vd v;
        memcpy(&v, e + i, sizeof v);
        v = v * factor;
        memcpy(e + i, &v, sizeof v);
    }
    for (; i < n; i++) e[i] = e[i] * factor;
}

FL_INLINE void fl_sub_shift_f32(const float* x, ptrdiff_t n, double a, double b,
                                    float* out) {
    ptrdiff_t i = 0;
    for (; i + FL_NF <= n; i += FL_NF) {
        fl_vf v;
        memcpy(&v, x + i, sizeof v);
        v = fl_narrow((fl_widen_lo(v) - a) - b, (fl_widen_hi(v) - a) - b);
        memcpy(out + i, &v, sizeof v);
    }
    for (; i < n; i++) out[i] = (float)(((double)x[i] - a) - b);
}

FL_INLINE void fl_sub_shift_f64(const double* x, ptrdiff_t n, double a, double b,
                                    double* out) {
    ptrdiff_t i = 0;
    for (; i + FL_ND <= n; i += FL_ND) {
        fl_vd v;
        memcpy(&v, x + i, sizeof v);
        v = (v - a) - b;
        memcpy(out + i, &v, sizeof v);
    }
    for (; i < n; i++) out[i] = (x[i] - a) - b;
}

/* ---- the coefficient terms of a row (soft targets, smoothing, distillation) ----
 * A weighted sum of -log softmax(x s)_j over the classes has coefficients a_j from a
 * target row t (NULL: none) and class weights w (NULL: 1): a_j = (alpha t_j + beta) w_j,
 * or a_j = exp((t_j - t_max) t_scale - t_shift) w_j for teacher log-probabilities or
 * logits (t_j - t_max exact for nearby values: 1e4 logits lose nothing). They are
 * computed in double lanes (FL_ND elements at a time), the linear ones of float rows in
 * float lanes (fl_coef_in_float). */
typedef struct {
    const double* class_weight;
    double alpha, beta, t_max, t_scale, t_shift;
    int exp_kind;                   /* a_j = exp((t_j - t_max) t_scale - t_shift) w_j */
    int with_entropy;               /* also sum_j a_j log a_j */
    int weights_fit_float;          /* each w_j 0 or within [2^-100, 2^64] */
} fl_coef_spec;

/* m (<= FL_ND) values from p as double lanes, 0 in the others. */
FL_INLINE fl_vd fl_load_d_f32(const float* p, ptrdiff_t m) {
    if (m >= FL_ND) {
        fl_vh h;
        memcpy(&h, p, sizeof h);
        return __builtin_convertvector(h, fl_vd);
    }
    fl_vd v = {0};
    for (int k = 0; k < m; k++) v[k] = p[k];
    return v;
}
FL_INLINE fl_vd fl_load_d_f64(const double* p, ptrdiff_t m) {
    if (m >= FL_ND) {
        fl_vd v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    fl_vd v = {0};
    for (int k = 0; k < m; k++) v[k] = p[k];
    return v;
}
/* m (<= FL_NF) doubles from p (weights) rounded to float lanes, 0 in the others. */
FL_INLINE fl_vf fl_load_f_f64(const double* p, ptrdiff_t m) {
    const fl_vd zero = {0};
    return fl_narrow(fl_load_d_f64(p, m),
                     m > FL_ND ? fl_load_d_f64(p + FL_ND, m - FL_ND) : zero);
}
/* The first m (<= FL_ND) double lanes into p, rounded to the storage type. */
FL_INLINE void fl_store_d_f32(float* p, fl_vd v, ptrdiff_t m) {
    const fl_vh h = __builtin_convertvector(v, fl_vh);
    if (m >= FL_ND) memcpy(p, &h, sizeof h);
    else for (int k = 0; k < m; k++) p[k] = h[k];
}
FL_INLINE void fl_store_d_f64(double* p, fl_vd v, ptrdiff_t m) {
    if (m >= FL_ND) memcpy(p, &v, sizeof v);
    else for (int k = 0; k < m; k++) p[k] = v[k];
}

/* log1p and exp of z[0:n] in place, a vector of them at a time: each the same bits as
 * fl_log1p_1 and fl_exp_1 of it (the rows of a batch: one call, not one per row). */
FL_INLINE void fl_log1p_n(double* z, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i += FL_ND) {
        const ptrdiff_t m = n - i < FL_ND ? n - i : FL_ND;
        fl_store_d_f64(z + i, fl_log1p_f64(fl_load_d_f64(z + i, m)), m);
    }
}
FL_INLINE void fl_exp_n(double* z, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i += FL_ND) {
        const ptrdiff_t m = n - i < FL_ND ? n - i : FL_ND;
        fl_store_d_f64(z + i, fl_exp_d(fl_load_d_f64(z + i, m)), m);
    }
}

/* Sum of exp(x_j - max) over a float row in double lanes, the terms at max (exactly 1)
 * counted into *ones_out; max is the row's max (a float). A float row's exponentials are
 * within 2^-23 of each term, which a loss (max - x_y + log S, both parts >= 0) keeps, but
 * its logsumexp max + log S does not where a negative max cancels log S (rows of
 * log-probabilities, whose logsumexp is near 0): fl_lse_wide_f32 recomputes those. x_j -
 * max is exact in double for every term that is not 0. The sum is compensated (Neumaier,
 * lane by lane): within 2^-52 of it whatever the row's length, for the rare rows that
 * take this path. */
FL_INLINE double fl_exp_sum_wide_f32(const float* x, ptrdiff_t n, double max,
                                     double* ones_out) {
    const fl_vd zero = {0};
    fl_vd sum = zero, err = zero;
    fl_vl ones = {0};
    for (ptrdiff_t i = 0; i < n; i += FL_ND) {
        const ptrdiff_t m = n - i;
        fl_vd v = fl_load_d_f32(x + i, m < FL_ND ? m : FL_ND);
        for (int k = 0; k < FL_ND; k++)
            if (k >= m) v[k] = -INFINITY;                       /* past the row: exp = 0 */
        const fl_vl at_max = v == zero + max;
        const fl_vd e = (fl_vd)(~at_max & (fl_vl)fl_exp_neg_d(v - max));
        ones -= at_max;
        const fl_vd t = sum + e;
        const fl_vl sum_larger = fl_vmax_d(sum, zero - sum) >= fl_vmax_d(e, zero - e);
        err += fl_select_d(sum_larger, (sum - t) + e, (e - t) + sum);
        sum = t;
    }
    *ones_out = fl_hsum_i64(ones);
    return fl_hsum(sum) + fl_hsum(err);
}

/* A float row's logsumexp max + log S from its exponentials in double lanes (max its max,
 * finite). */
FL_INLINE double fl_lse_wide_f32(const float* x, ptrdiff_t n, double max) {
    double ones;
    const double rest = fl_exp_sum_wide_f32(x, n, max, &ones);
    return max + fl_log1p_1((ones - 1.0) + rest);
}

#define FL_DEFINE_COEFS(SUFFIX, T)                                                        \
/* a_j of the m (<= FL_ND) elements from j, 0 past them, and log a_j into *log_a where   \
 * log_a is not NULL (exact for the exp kind). */                                         \
FL_INLINE fl_vd fl_coef_lanes_##SUFFIX(const T* t, ptrdiff_t j, ptrdiff_t m,              \
                                       const fl_coef_spec* c, fl_vd* log_a) {             \
    const fl_vd zero = {0};                                                               \
    fl_vl valid;                                                                          \
    for (int k = 0; k < FL_ND; k++) valid[k] = k < m ? -1 : 0;                            \
    fl_vd a;                                                                              \
    if (c->exp_kind) {                                                                    \
        const fl_vd arg =                                                                 \
            (fl_load_d_##SUFFIX(t + j, m) - c->t_max) * c->t_scale - c->t_shift;          \
        a = fl_exp_d(arg);                                                                \
        if (log_a) *log_a = arg;                                                          \
    } else {                                                                              \
        a = zero + c->beta;                                                               \
        if (t) a = fl_fma_d(zero + c->alpha, fl_load_d_##SUFFIX(t + j, m), a);            \
    }                                                                                     \
    if (c->class_weight) a = a * fl_load_d_f64(c->class_weight + j, m);                   \
    a = fl_select_d(valid, a, zero);                                                      \
    /* log of a normal a is all that counts: a 0 or subnormal a_j's a_j log a_j is 0 or  \
     * below 1e-305, whatever log gives */                                               \
    if (log_a && !c->exp_kind) *log_a = fl_log_normal_d(a);                               \
    return a;                                                                             \
}                                                                                         \
                                                                                          \
/* a_j of one element. */                                                                 \
FL_INLINE double fl_coef_at_##SUFFIX(const T* t, ptrdiff_t j, const fl_coef_spec* c) {    \
    return fl_coef_lanes_##SUFFIX(t, j, 1, c, NULL)[0];                                   \
}                                                                                         \
                                                                                          \
/* The terms of the m (<= FL_ND) elements from j into the accumulators s, d, h. */        \
FL_INLINE void fl_coef_terms_##SUFFIX(const T* x, const T* t, ptrdiff_t j, ptrdiff_t m,   \
                                      double shift, const fl_coef_spec* c, fl_vd* s,      \
                                      fl_vd* d, fl_vd* h) {                               \
    const fl_vd zero = {0};                                                               \
    fl_vd log_a;                                                                          \
    const fl_vd a = fl_coef_lanes_##SUFFIX(t, j, m, c, c->with_entropy ? &log_a : NULL);  \
    const fl_vl used = a != zero;                                                         \
    *s += a;                                                                              \
    *d += fl_select_d(used, a * (shift - fl_load_d_##SUFFIX(x + j, m)), zero);            \
    if (c->with_entropy) *h += fl_select_d(used, a * log_a, zero);                        \
}                                                                                         \
                                                                                          \
/* Over j in [start, stop): sum_j a_j, sum_j a_j (shift - x_j) and (with_entropy)        \
 * sum_j a_j log a_j; a zero a_j adds 0, even against x_j = -inf. Four interleaved       \
 * accumulators, added in an order set by the positions alone. */                       \
FL_INLINE void fl_coef_sums_wide_##SUFFIX(const T* x, const T* t, ptrdiff_t start,        \
                                          ptrdiff_t stop, double shift,                   \
                                          const fl_coef_spec* c, double* sum,             \
                                          double* dot, double* entropy) {                 \
    fl_vd s[4] = {{0}}, d[4] = {{0}}, h[4] = {{0}};                                       \
    ptrdiff_t j = start;                                                                  \
    for (; j + 4 * FL_ND <= stop; j += 4 * FL_ND)       /* whole vectors: no masks */     \
        for (int q = 0; q < 4; q++)                                                       \
            fl_coef_terms_##SUFFIX(x, t, j + q * FL_ND, FL_ND, shift, c, &s[q], &d[q],    \
                                   &h[q]);                                                \
    for (int q = 0; j < stop; j += FL_ND, q++)                                            \
        fl_coef_terms_##SUFFIX(x, t, j, stop - j, shift, c, &s[q], &d[q], &h[q]);         \
    *sum = fl_hsum((s[0] + s[1]) + (s[2] + s[3]));                                        \
    *dot = fl_hsum((d[0] + d[1]) + (d[2] + d[3]));                                        \
    *entropy = fl_hsum((h[0] + h[1]) + (h[2] + h[3]));                                    \
}                                                                                         \
                                                                                          \
/* e_j <- e_j factor - coef_scale a_j over j in [start, stop), in double. */              \
FL_INLINE void fl_coef_scale_lanes_##SUFFIX(T* e, const T* t, ptrdiff_t j, ptrdiff_t m,   \
                                            double factor, double coef_scale,             \
                                            const fl_coef_spec* c) {                      \
    const fl_vd a = fl_coef_lanes_##SUFFIX(t, j, m, c, NULL);                             \
    const fl_vd zero = {0};                                                               \
    fl_store_d_##SUFFIX(e + j, fl_fma_d(fl_load_d_##SUFFIX(e + j, m), zero + factor,      \
                                        zero - coef_scale * a), m);                       \
}                                                                                         \
FL_INLINE void fl_coef_scale_wide_##SUFFIX(T* e, const T* t, ptrdiff_t start,            \
                                           ptrdiff_t stop, double factor,                 \
                                           double coef_scale, const fl_coef_spec* c) {    \
    ptrdiff_t j = start;                                                                  \
    for (; j + FL_ND <= stop; j += FL_ND)                                                 \
        fl_coef_scale_lanes_##SUFFIX(e, t, j, FL_ND, factor, coef_scale, c);              \
    if (j < stop) fl_coef_scale_lanes_##SUFFIX(e, t, j, stop - j, factor, coef_scale, c); \
}                                                                                         \
                                                                                          \
/* The entropy gradient from stored exponentials and the row x beside them: e_j <- e_j  \
 * factor (offset + (max - x_j)), 0 where e_j is 0 (x_j = -inf). */                      \
FL_INLINE void fl_entropy_grad_lanes_##SUFFIX(T* e, const T* x, ptrdiff_t m, double factor,\
                                              double max, double offset) {                \
    const fl_vd zero = {0};                                                               \
    const fl_vd v = fl_load_d_##SUFFIX(e, m);                                             \
    const fl_vd g = v * factor * (offset + (max - fl_load_d_##SUFFIX(x, m)));             \
    fl_store_d_##SUFFIX(e, fl_select_d(v != zero, g, zero), m);                           \
}                                                                                         \
FL_INLINE void fl_entropy_grad_wide_##SUFFIX(T* e, const T* x, ptrdiff_t n, double factor,\
                                             double max, double offset) {                 \
    ptrdiff_t j = 0;                                                                      \
    for (; j + FL_ND <= n; j += FL_ND)                                                    \
        fl_entropy_grad_lanes_##SUFFIX(e + j, x + j, FL_ND, factor, max, offset);         \
    if (j < n) fl_entropy_grad_lanes_##SUFFIX(e + j, x + j, n - j, factor, max, offset);  \
}

FL_DEFINE_COEFS(f32, float)
FL_DEFINE_COEFS(f64, double)

FL_INLINE void fl_coef_sums_f64(const double* x, const double* t, ptrdiff_t start,
                                ptrdiff_t stop, double shift, const fl_coef_spec* c,
                                double* sum, double* dot, double* entropy) {
    fl_coef_sums_wide_f64(x, t, start, stop, shift, c, sum, dot, entropy);
}
FL_INLINE void fl_coef_scale_f64(double* e, const double* t, ptrdiff_t start,
                                 ptrdiff_t stop, double factor, double coef_scale,
                                 const fl_coef_spec* c) {
    fl_coef_scale_wide_f64(e, t, start, stop, factor, coef_scale, c);
}

/* Float rows' linear coefficients (a_j = (beta + alpha t_j) w_j: probability targets,
 * label smoothing, teacher probabilities, class weights rounded to float where each is 0
 * or within [2^-100, 2^64], which keeps their relative precision) go in float lanes,
 * twice as many as double ones and with fewer conversions. (Teachers given as logits or
 * log-probabilities: fl_coef_scale_exp_f32 for the gradient, double for the sums.) */
FL_INLINE int fl_coef_in_float(const fl_coef_spec* c) {
    return !c->exp_kind && (!c->class_weight || c->weights_fit_float);
}

/* Their sums too, but for distillation's (with_entropy): their terms all have one sign
 * (a_j >= 0, shift >= x_j), so nothing cancels in them, but the teacher's entropy cancels
 * against them and stays in double with them. (The gradient, q - a, has no such sum.) */
FL_INLINE int fl_coef_sums_in_float(const fl_coef_spec* c) {
    return fl_coef_in_float(c) && !c->with_entropy;
}

/* a_j = b_j w_j of m (<= FL_NF) float lanes from j as b_j = beta + alpha t_j (0 past
 * them) and w_j into *w_out (1 without weights): a product with a weight may underflow
 * where b_j is tiny, so the callers multiply w_j into a normal factor first. */
FL_INLINE fl_vf fl_coef_lanes_f(const float* t, const double* w, ptrdiff_t j, int m,
                                float alpha, float beta, fl_vf* w_out) {
    const fl_vf zero = {0};
    fl_vf b = zero + beta;
    if (t) {
        fl_vf tv;
        if (m == FL_NF) memcpy(&tv, t + j, sizeof tv);
        else tv = fl_load_tail_f32(t + j, m);
        b = fl_mla_f(tv, zero + alpha, beta);
    }
    *w_out = w ? fl_load_f_f64(w + j, m) : zero + 1.0f;
    if (m < FL_NF) {
        fl_vi valid;
        for (int k = 0; k < FL_NF; k++) valid[k] = k < m ? -1 : 0;
        b = fl_select_f(valid, b, zero);
    }
    return b;
}

/* Four vectors of coefficients from j, of which n (<= 4 FL_NF) elements remain, and
 * their terms a_j (shift - x_j): summed in float (a tree of two roundings), then into the
 * double accumulators s and d. */
FL_INLINE void fl_coef_group_f(const float* x, const float* t, const double* w, ptrdiff_t j,
                               ptrdiff_t n, float shift, float alpha, float beta, fl_vd* s,
                               fl_vd* d) {
    const fl_vf zero = {0};
    fl_vf a[4], term[4];
    for (int q = 0; q < 4; q++) {
        const ptrdiff_t left = n - q * FL_NF;
        const int m = left >= FL_NF ? FL_NF : left > 0 ? (int)left : 0;
        fl_vf wv;
        const fl_vf b = fl_coef_lanes_f(t, w, j + q * FL_NF, m, alpha, beta, &wv);
        const fl_vf xv = fl_group_load_f32(x + j, n, q);
        a[q] = b * wv;                  /* without weights wv is 1: no multiply */
        term[q] = fl_select_f(a[q] != zero, b * (wv * (shift - xv)), zero);
    }
    fl_add_widened(s, (a[0] + a[1]) + (a[2] + a[3]));
    fl_add_widened(d, (term[0] + term[1]) + (term[2] + term[3]));
}

/* fl_coef_sums_f32 in float lanes, whole groups then the rest. Returns 0 where a term or
 * a sum overflowed float (shift - x_j beyond its range, or a sum of such terms), or a
 * sum is nonzero but below 2^-100, where terms below float's normal range (their
 * absolute error 2^-150) could count: the caller then sums in double. */
FL_INLINE int fl_coef_sums_loop_f32(const float* x, const float* t, const double* w,
                                    ptrdiff_t start, ptrdiff_t stop, float shift,
                                    float alpha, float beta, double* sum, double* dot) {
    fl_vd s[2] = {{0}}, d[2] = {{0}};
    ptrdiff_t j = start;
    for (; j + 4 * FL_NF <= stop; j += 4 * FL_NF)
        fl_coef_group_f(x, t, w, j, 4 * FL_NF, shift, alpha, beta, s, d);
    if (j < stop) fl_coef_group_f(x, t, w, j, stop - j, shift, alpha, beta, s, d);
    *sum = fl_hsum(s[0] + s[1]);
    *dot = fl_hsum(d[0] + d[1]);
    return (*sum == 0.0 || (*sum >= 0x1p-100 && *sum < 3.0e38)) &&
           (*dot == 0.0 || (*dot >= 0x1p-100 && *dot < 3.0e38));
}

/* LOOP(t, w) with the target row t and the weights w each a constant NULL where absent:
 * one copy of the float lanes' loop for each case (a run-time test inside it cost most
 * of their gain). */
#define FL_COEF_LOOP_CASES(LOOP, t, w)                                                    \
    ((t) && (w) ? LOOP((t), (w)) : (t) ? LOOP((t), NULL) : (w) ? LOOP(NULL, (w))          \
                                                              : LOOP(NULL, NULL))

FL_INLINE int fl_coef_sums_lanes_f32(const float* x, const float* t, const double* w,
                                     ptrdiff_t start, ptrdiff_t stop, float shift,
                                     float alpha, float beta, double* sum, double* dot) {
#define FL_COEF_SUMS_LOOP(T_, W_) \
    fl_coef_sums_loop_f32(x, T_, W_, start, stop, shift, alpha, beta, sum, dot)
    return FL_COEF_LOOP_CASES(FL_COEF_SUMS_LOOP, t, w);
#undef FL_COEF_SUMS_LOOP
}

FL_INLINE void fl_coef_sums_f32(const float* x, const float* t, ptrdiff_t start,
                                ptrdiff_t stop, double shift, const fl_coef_spec* c,
                                double* sum, double* dot, double* entropy) {
    if (fl_coef_sums_in_float(c) &&
        fl_coef_sums_lanes_f32(x, t, c->class_weight, start, stop, (float)shift,
                               (float)c->alpha, (float)c->beta, sum, dot)) {
        *entropy = 0.0;
        return;
    }
    fl_coef_sums_wide_f32(x, t, start, stop, shift, c, sum, dot, entropy);
}

/* Whether a chunk's factor may be rounded to float for float lanes: a normal float (it
 * keeps its 24 bits; a chunk far below the row's max has a tiny one) below 2^100. */
FL_INLINE int fl_factor_fits_float(double factor) {
    return factor >= 0x1p-126 && factor <= 0x1p100;
}

/* e_j <- e_j f - cs a_j over [start, stop) in float lanes, whole vectors then the rest;
 * t and w as in fl_coef_sums_loop_f32. */
FL_INLINE void fl_coef_scale_loop_f32(float* e, const float* t, const double* w,
                                      ptrdiff_t start, ptrdiff_t stop, float f, float cs,
                                      float alpha, float beta) {
    for (ptrdiff_t j = start; j < stop; j += FL_NF) {
        const int m = stop - j < FL_NF ? (int)(stop - j) : FL_NF;
        fl_vf wv;
        const fl_vf b = fl_coef_lanes_f(t, w, j, m, alpha, beta, &wv);
        const fl_vf zero = {0};
        const fl_vf g = fl_fma_f(fl_group_load_f32(e + j, m, 0), zero + f, zero - (cs * wv) * b);
        fl_group_store_f32(e + j, m, 0, g);
    }
}

/* e_j <- e_j factor - coef_scale a_j over [start, stop) for a teacher given as logits or
 * log-probabilities, a_j = exp((t_j - t_max) t_scale - t_shift), in float lanes (the
 * caller's conditions on the factor and the scale as below). The argument rounds a few
 * times in float, each within 2^-24 of |arg| + t_shift, and a |arg| <= 1/e: a_j is off by
 * a few 2^-24 at most (absolute), and the gradient by a few 2^-24 of its terms, as with
 * probability targets (measured: 1.5e-7 at most, against 1.3e-7 in double lanes). t_scale
 * (1 / T) must be a float within [2^-100, 2^100]; distillation's coef_scale (T or 1 / T
 * over the reduction's denominator) keeps it there already. The loss's sums stay in
 * double: the teacher's entropy cancels against them. A vector with an argument above 64
 * (log-probabilities above 1, which are not: a float exponential would overflow where the
 * double one does not) goes in double lanes. */
FL_INLINE void fl_coef_scale_exp_f32(float* e, const float* t, ptrdiff_t start,
                                     ptrdiff_t stop, double factor, double coef_scale,
                                     const fl_coef_spec* c) {
    const fl_vf zero = {0};
    const float f = (float)factor, cs = (float)coef_scale;
    const float t_max = (float)c->t_max, t_scale = (float)c->t_scale;
    const float t_shift = (float)c->t_shift;
    for (ptrdiff_t j = start; j < stop; j += FL_NF) {
        const int m = stop - j < FL_NF ? (int)(stop - j) : FL_NF;
        /* the padding lanes' -inf gives a = 0 */
        const fl_vf arg = (fl_group_load_f32(t + j, m, 0) - t_max) * t_scale - t_shift;
        if (__builtin_expect(fl_any_i(arg > zero + 64.0f), 0)) {
            fl_coef_scale_wide_f32(e, t, j, j + m, factor, coef_scale, c);
            continue;
        }
        const fl_vf g = fl_fma_f(fl_group_load_f32(e + j, m, 0), zero + f,
                                 zero - cs * fl_exp_neg_f(arg, zero));
        fl_group_store_f32(e + j, m, 0, g);
    }
}

/* fl_coef_scale_f32 in float lanes where the factor is a normal float below 2^100 (a
 * chunk far below the row's max, whose factor is tiny, stays in double) and coef_scale
 * within [2^-60, 2^60] (times a_j <= 2^64: within float's range); one more rounding
 * than in double, of coef_scale a_j. */
FL_INLINE void fl_coef_scale_f32(float* e, const float* t, ptrdiff_t start, ptrdiff_t stop,
                                 double factor, double coef_scale, const fl_coef_spec* c) {
    const int lanes = fl_factor_fits_float(factor) && fabs(coef_scale) >= 0x1p-60 &&
                      fabs(coef_scale) <= 0x1p60;
    if (lanes && c->exp_kind && !c->class_weight && c->t_scale >= 0x1p-100 &&
        c->t_scale <= 0x1p100) {
        fl_coef_scale_exp_f32(e, t, start, stop, factor, coef_scale, c);
        return;
    }
    if (!(lanes && fl_coef_in_float(c))) {
        fl_coef_scale_wide_f32(e, t, start, stop, factor, coef_scale, c);
        return;
    }
    const float f = (float)factor, cs = (float)coef_scale;
    const float alpha = (float)c->alpha, beta = (float)c->beta;
#define FL_COEF_SCALE_LOOP(T_, W_) \
    fl_coef_scale_loop_f32(e, T_, W_, start, stop, f, cs, alpha, beta)
    FL_COEF_LOOP_CASES(FL_COEF_SCALE_LOOP, t, c->class_weight);
#undef FL_COEF_SCALE_LOOP
}

FL_INLINE void fl_entropy_grad_f64(double* e, const double* x, ptrdiff_t n, double factor,
                                   double max, double offset) {
    fl_entropy_grad_wide_f64(e, x, n, factor, max, offset);
}

/* The same for float rows, in float lanes (twice as many, no conversions: 0.68 -> 0.49
 * of the time of entropy_from_logits at 4096 x 1000, with the exponentials' pass in float
 * before it) where the factor is a normal float below 2^100 and the offset is finite
 * (below 2^100); elsewhere in double lanes, among them the chunks far below the max.
 * Such a factor, exp(shift - max) scale / S, puts the chunk's shift within 800 of the
 * max (scale is a double), so max - x_j is finite where e_j != 0: it overflows float
 * only where e_j = 0, whose lanes are set to 0 (in a chunk of factor 0 at -3e38 below a
 * max of 3e38, 0 * inf would make NaN). The roundings of max - x_j and of offset +
 * (max - x_j), 2^-24 of max - x_j + |offset| each, are at most a few 2^-24 of the row's
 * largest entry (a class at the max has e f |offset|): measured up to 4.8 2^-24 against
 * 1.9 in double lanes (1.5e-7 absolute; C = 17 to 40000, scales 0.01 to 1e4). */
FL_INLINE void fl_entropy_grad_f32(float* e, const float* x, ptrdiff_t n, double factor,
                                   double max, double offset) {
    if (!(fl_factor_fits_float(factor) && fabs(offset) <= 0x1p100)) {
        fl_entropy_grad_wide_f32(e, x, n, factor, max, offset);
        return;
    }
    const fl_vf zero = {0};
    const float f = (float)factor, top = (float)max, off = (float)offset;
    for (ptrdiff_t j = 0; j < n; j += FL_NF) {
        const int m = n - j < FL_NF ? (int)(n - j) : FL_NF;
        const fl_vf v = fl_group_load_f32(e + j, m, 0), xv = fl_group_load_f32(x + j, m, 0);
        fl_group_store_f32(e + j, m, 0,
                           fl_select_f(v != zero, (v * f) * (off + (top - xv)), zero));
    }
}

#endif  /* vector extensions */
#endif
