/* The instruction-set layer: vector types and the primitives every kernel is written
 * with. Every test of an instruction set (__AVX512F__, __AVX__, __FMA__, __SSE2__) lives
 * in this file; the layers above ask for a capability (FL_HAS_*) or call a primitive.
 *
 * The vectors are GCC/Clang vector extensions as wide as the registers of the flags the
 * translation unit is compiled with (instruction_sets.py: SSE2, AVX2 with FMA, AVX-512):
 * FL_WIDTH bytes, FL_NF float lanes, FL_ND double lanes. The arithmetic operators work on
 * them lane by lane; the primitives below are what the operators do not express, or
 * express badly on some instruction set.
 *
 * Compilers without vector extensions (MSVC), and FASTLOSS_SCALAR builds, do not include
 * this file: engine/scalar.h serves them.
 */
#ifndef FL_SIMD_VEC_H
#define FL_SIMD_VEC_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

/* Inlined always: a vector argument of a call that is not inlined goes through memory. */
#define FL_INLINE static inline __attribute__((always_inline))

/* ---- widths and types ---- */

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
typedef uint32_t fl_vui __attribute__((vector_size(FL_WIDTH)));
typedef double fl_vd __attribute__((vector_size(FL_WIDTH)));
typedef int64_t fl_vl __attribute__((vector_size(FL_WIDTH)));
typedef uint64_t fl_vu __attribute__((vector_size(FL_WIDTH)));
/* Half a float vector: as many floats as a double vector has doubles. */
typedef float fl_vh __attribute__((vector_size(FL_WIDTH / 2)));
typedef int32_t fl_vih __attribute__((vector_size(FL_WIDTH / 2)));

/* Capabilities the maths and the engine choose by. */
#if defined(__FMA__)
#define FL_HAS_FMA 1            /* fl_fma_* round once */
#else
#define FL_HAS_FMA 0
#endif
#if defined(__AVX512F__)
#define FL_HAS_SCALEF 1         /* fl_scalef_* is one instruction (and exact scaling) */
#define FL_HAS_PERMUTE_TABLE 1  /* an 8-entry table of doubles fits one register */
#else
#define FL_HAS_SCALEF 0
#define FL_HAS_PERMUTE_TABLE 0
#endif

/* The instruction set's intrinsics: FL_MM(max_ps) is _mm512_max_ps with AVX-512,
 * _mm256_max_ps with AVX, _mm_max_ps with SSE2; FL_MMV(d) is __m512d, __m256d or __m128d
 * (FL_MMV() the float vector). */
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

/* ---- select, fused multiply-add, masks ---- */

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

/* a b + c lane by lane, rounded once where the instruction set fuses multiply-add, twice
 * elsewhere. The kernels are compiled with -ffp-contract=off, so these are the only fused
 * products: an expression gives the same bits on every path that evaluates it, whatever
 * the optimisation level or the flags a packager adds. fl_mla_* take a scalar c (a
 * polynomial's coefficient). */
FL_INLINE fl_vf fl_fma_f(fl_vf a, fl_vf b, fl_vf c) {
#if FL_HAS_FMA
    return (fl_vf)FL_MM(fmadd_ps)((FL_MMV())a, (FL_MMV())b, (FL_MMV())c);
#else
    return a * b + c;
#endif
}
FL_INLINE fl_vd fl_fma_d(fl_vd a, fl_vd b, fl_vd c) {
#if FL_HAS_FMA
    return (fl_vd)FL_MM(fmadd_pd)((FL_MMV(d))a, (FL_MMV(d))b, (FL_MMV(d))c);
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

/* Whether any lane of a mask (all ones or all zeros per lane) is set; a set 64-bit lane
 * is two set 32-bit ones. */
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
FL_INLINE int fl_any_l(fl_vl m) { return fl_any_i((fl_vi)m); }

/* Lane-wise max and min, b where either is NaN (as x86's max and min instructions: a
 * NaN never wins, so a running max skips it). */
FL_INLINE fl_vf fl_vmax_f(fl_vf a, fl_vf b) {
#ifdef FL_MM
    return (fl_vf)FL_MM(max_ps)((FL_MMV())a, (FL_MMV())b);
#else
    return fl_select_f(a > b, a, b);
#endif
}
FL_INLINE fl_vd fl_vmax_d(fl_vd a, fl_vd b) {
#ifdef FL_MM
    return (fl_vd)FL_MM(max_pd)((FL_MMV(d))a, (FL_MMV(d))b);
#else
    return fl_select_d(a > b, a, b);
#endif
}
FL_INLINE fl_vf fl_vmin_f(fl_vf a, fl_vf b) {
#ifdef FL_MM
    return (fl_vf)FL_MM(min_ps)((FL_MMV())a, (FL_MMV())b);
#else
    return fl_select_f(a < b, a, b);
#endif
}
FL_INLINE fl_vd fl_vmin_d(fl_vd a, fl_vd b) {
#ifdef FL_MM
    return (fl_vd)FL_MM(min_pd)((FL_MMV(d))a, (FL_MMV(d))b);
#else
    return fl_select_d(a < b, a, b);
#endif
}

/* ---- float and double lanes ---- */

/* The low and high halves of a float vector in double, exactly. */
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

/* p 2^n lane by lane for an integral n: one instruction with AVX-512, which also rounds a
 * subnormal result once; elsewhere 2^n is built in two halves from n's bits (t = n +
 * 1.5 2^52, or 1.5 2^23 for floats, as the exponentials' range reduction forms it: its
 * low bits hold n), so that a subnormal result rounds once too. Unsigned arithmetic where
 * a NaN's bits would make a signed shift undefined. */
FL_INLINE fl_vd fl_scalef_d(fl_vd p, fl_vd n, fl_vd t) {
#if FL_HAS_SCALEF
    (void)t;
    return (fl_vd)_mm512_scalef_pd((__m512d)p, (__m512d)n);
#else
    (void)n;
    const fl_vd zero = {0};
    const fl_vl ni = (fl_vl)((fl_vu)t - (fl_vu)(zero + 6755399441055744.0));
    const fl_vl n1 = ni >> 1, n2 = ni - n1;
    return p * (fl_vd)((fl_vu)(n1 + 1023) << 52) * (fl_vd)((fl_vu)(n2 + 1023) << 52);
#endif
}
FL_INLINE fl_vf fl_scalef_f(fl_vf p, fl_vf n, fl_vf t) {
#if FL_HAS_SCALEF
    (void)t;
    return (fl_vf)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
    (void)n;
    const fl_vf zero = {0};
    const fl_vi ni = (fl_vi)((fl_vui)t - (fl_vui)(zero + 12582912.0f));
    const fl_vi n1 = ni >> 1, n2 = ni - n1;
    return p * (fl_vf)((fl_vui)(n1 + 127) << 23) * (fl_vf)((fl_vui)(n2 + 127) << 23);
#endif
}

/* table[k] lane by lane for k in [0, 8) (AVX-512: one permute of a one-register table). */
#if FL_HAS_PERMUTE_TABLE
FL_INLINE fl_vd fl_lookup8_d(fl_vd table, fl_vl k) { return __builtin_shuffle(table, k); }
#endif

/* ---- horizontal sums and max (a fixed tree for a given width) ----
 * At the end of a row they are on the path to the next pass, which a tree shortens:
 * log2 of the lanes deep, where a lane-order loop chains 16 dependent steps. */
typedef double fl_vd2 __attribute__((vector_size(16)));
typedef double fl_vd4 __attribute__((vector_size(32)));
typedef int32_t fl_vi4 __attribute__((vector_size(16)));
typedef int32_t fl_vi8 __attribute__((vector_size(32)));
typedef int64_t fl_vl2 __attribute__((vector_size(16)));
typedef int64_t fl_vl4 __attribute__((vector_size(32)));
typedef float fl_vf4 __attribute__((vector_size(16)));
typedef float fl_vf8 __attribute__((vector_size(32)));

/* v's lanes halved down to 4 (or 2 for 64-bit lanes) by an element-wise OP. */
#if FL_WIDTH == 64
#define FL_FOLD_128(v, OP, V8)                                                            \
    __extension__({                                                                       \
        const V8 h8_ = OP(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7),          \
                          __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));   \
        OP(__builtin_shufflevector(h8_, h8_, 0, 1, 2, 3),                                 \
           __builtin_shufflevector(h8_, h8_, 4, 5, 6, 7));                                \
    })
#define FL_FOLD_128_64(v, OP, V4)                                                         \
    __extension__({                                                                       \
        const V4 h4_ = OP(__builtin_shufflevector(v, v, 0, 1, 2, 3),                      \
                          __builtin_shufflevector(v, v, 4, 5, 6, 7));                     \
        OP(__builtin_shufflevector(h4_, h4_, 0, 1), __builtin_shufflevector(h4_, h4_, 2, 3)); \
    })
#elif FL_WIDTH == 32
#define FL_FOLD_128(v, OP, V8)                                                            \
    OP(__builtin_shufflevector(v, v, 0, 1, 2, 3), __builtin_shufflevector(v, v, 4, 5, 6, 7))
#define FL_FOLD_128_64(v, OP, V4)                                                         \
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

FL_INLINE double fl_hsum(fl_vd v) {
    const fl_vd2 h = FL_FOLD_128_64(v, FL_ADD, fl_vd4);
    return h[0] + h[1];
}
/* Sums of integer lanes (counts: exact in any order), as double. */
FL_INLINE double fl_hsum_i32(fl_vi v) {
    const fl_vi4 h = FL_FOLD_128(v, FL_ADD, fl_vi8);
    return (double)((h[0] + h[2]) + (h[1] + h[3]));
}
FL_INLINE double fl_hsum_i64(fl_vl v) {
    const fl_vl2 h = FL_FOLD_128_64(v, FL_ADD, fl_vl4);
    return (double)(h[0] + h[1]);
}
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

/* ---- loads and stores ----
 * memcpy into and out of a vector: defined for any alignment, and one instruction. */

/* The first m < lanes elements of a row's tail: loads padded with -inf (whose exp is 0)
 * and stores of the first m lanes. AVX-512 masks them without touching memory past the
 * row; elsewhere they go lane by lane. */
FL_INLINE fl_vf fl_load_tail_f32(const float* x, int m) {
#if defined(__AVX512F__)
    return (fl_vf)_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), (__mmask16)((1u << m) - 1), x);
#else
    fl_vf v;
    for (int k = 0; k < FL_NF; k++) v[k] = k < m ? x[k] : -INFINITY;
    return v;
#endif
}
FL_INLINE fl_vd fl_load_tail_f64(const double* x, int m) {
#if defined(__AVX512F__)
    return (fl_vd)_mm512_mask_loadu_pd(_mm512_set1_pd(-INFINITY), (__mmask8)((1u << m) - 1), x);
#else
    fl_vd v;
    for (int k = 0; k < FL_ND; k++) v[k] = k < m ? x[k] : -INFINITY;
    return v;
#endif
}
FL_INLINE void fl_store_tail_f32(float* out, fl_vf v, int m) {
#if defined(__AVX512F__)
    _mm512_mask_storeu_ps(out, (__mmask16)((1u << m) - 1), (__m512)v);
#else
    /* m < lanes, which GCC cannot always see (a spurious -Warray-bounds) */
    if (m > 0) memcpy(out, &v, (size_t)(m < FL_NF ? m : FL_NF) * sizeof(float));
#endif
}
FL_INLINE void fl_store_tail_f64(double* out, fl_vd v, int m) {
#if defined(__AVX512F__)
    _mm512_mask_storeu_pd(out, (__mmask8)((1u << m) - 1), (__m512d)v);
#else
    if (m > 0) memcpy(out, &v, (size_t)(m < FL_ND ? m : FL_ND) * sizeof(double));
#endif
}

/* Vector k of a group of four starting at x, of which n elements remain: a full load, a
 * padded one, or all -inf; and the matching store. */
FL_INLINE fl_vf fl_group_load_f32(const float* x, ptrdiff_t n, int k) {
    const ptrdiff_t m = n - k * FL_NF;
    if (m >= FL_NF) {
        fl_vf v;
        memcpy(&v, x + k * FL_NF, sizeof v);
        return v;
    }
    return fl_load_tail_f32(x + k * FL_NF, m > 0 ? (int)m : 0);
}
FL_INLINE fl_vd fl_group_load_f64(const double* x, ptrdiff_t n, int k) {
    const ptrdiff_t m = n - k * FL_ND;
    if (m >= FL_ND) {
        fl_vd v;
        memcpy(&v, x + k * FL_ND, sizeof v);
        return v;
    }
    return fl_load_tail_f64(x + k * FL_ND, m > 0 ? (int)m : 0);
}
FL_INLINE void fl_group_store_f32(float* out, ptrdiff_t n, int k, fl_vf v) {
    const ptrdiff_t m = n - k * FL_NF;
    if (m >= FL_NF) memcpy(out + k * FL_NF, &v, sizeof v);
    else if (m > 0) fl_store_tail_f32(out + k * FL_NF, v, (int)m);
}
FL_INLINE void fl_group_store_f64(double* out, ptrdiff_t n, int k, fl_vd v) {
    const ptrdiff_t m = n - k * FL_ND;
    if (m >= FL_ND) memcpy(out + k * FL_ND, &v, sizeof v);
    else if (m > 0) fl_store_tail_f64(out + k * FL_ND, v, (int)m);
}

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

/* A streaming (non-temporal) store of a vector to an address aligned to FL_WIDTH bytes:
 * the line is written without being read for ownership, and skips the caches (an
 * ordinary store without SSE2). fl_stream_fence orders a thread's streaming stores
 * before what follows. */
FL_INLINE void fl_stream_f32(float* p, fl_vf v) {
#ifdef FL_MM
    FL_MM(stream_ps)(p, (FL_MMV())v);
#else
    memcpy(p, &v, sizeof v);
#endif
}
FL_INLINE void fl_stream_f64(double* p, fl_vd v) {
#ifdef FL_MM
    FL_MM(stream_pd)(p, (FL_MMV(d))v);
#else
    memcpy(p, &v, sizeof v);
#endif
}
FL_INLINE void fl_stream_fence(void) {
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

/* Prefetch the cache lines `ahead` bytes past those of [x, x + bytes) for reading, and of
 * out (unless NULL) for writing. */
FL_INLINE void fl_prefetch(const void* x, void* out, size_t bytes, size_t ahead) {
    for (size_t b = 0; b < bytes; b += 64) {
        __builtin_prefetch((const char*)x + ahead + b, 0, 3);
        if (out) __builtin_prefetch((char*)out + ahead + b, 1, 3);
    }
}

/* ---- compiler facilities ---- */

/* Two-source shuffle: lane k of the result is (idx[k] < lanes ? a[idx[k]] : b[idx[k] -
 * lanes]). GCC compiles __builtin_shuffle to the permute instructions; elsewhere a loop. */
#if defined(__GNUC__) && !defined(__clang__)
#define FL_SHUFFLE2(a, b, idx) __builtin_shuffle((a), (b), (idx))
#else
#define FL_SHUFFLE2(a, b, idx)                                                            \
    __extension__({                                                                       \
        __typeof__(a) r_;                                                                 \
        const int n_ = (int)(sizeof(r_) / sizeof(r_[0]));                                 \
        for (int k_ = 0; k_ < n_; k_++)                                                   \
            r_[k_] = (idx)[k_] < n_ ? (a)[(idx)[k_]] : (b)[(idx)[k_] - n_];               \
        r_;                                                                               \
    })
#endif

/* A loop over a block's classes unrolled, so that its class vectors stay in registers
 * (engine/blocks.h sets FL_UNROLL to this where the class count is a constant). */
#if defined(__GNUC__) && !defined(__clang__)
#define FL_UNROLL_PRAGMA _Pragma("GCC unroll 16")
#else
#define FL_UNROLL_PRAGMA
#endif

#endif
