/* Facts about how the kernels were compiled, read by `python -m fastloss info`. */
#ifndef FASTLOSS_BUILD_INFO_H
#define FASTLOSS_BUILD_INFO_H

#ifndef FASTLOSS_CFLAGS
#define FASTLOSS_CFLAGS "unknown"
#endif

#ifdef _OPENMP
#define FASTLOSS_OPENMP_VERSION _OPENMP
#else
#define FASTLOSS_OPENMP_VERSION 0
#endif

/* The widest SIMD instruction set the compiler was allowed to use for every kernel. */
#if defined(__AVX512F__)
#define FASTLOSS_SIMD_LEVEL "avx512f"
#elif defined(__AVX2__) && defined(__FMA__)
#define FASTLOSS_SIMD_LEVEL "avx2+fma"
#elif defined(__AVX__)
#define FASTLOSS_SIMD_LEVEL "avx"
#elif defined(__SSE2__) || defined(_M_X64)
#define FASTLOSS_SIMD_LEVEL "sse2 (x86-64 baseline)"
#elif defined(__ARM_NEON) || defined(__aarch64__)
#define FASTLOSS_SIMD_LEVEL "neon"
#else
#define FASTLOSS_SIMD_LEVEL "none (portable C)"
#endif

#if defined(__clang__)
#define FASTLOSS_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define FASTLOSS_COMPILER "gcc " __VERSION__
#elif defined(_MSC_VER)
#define FASTLOSS_COMPILER "msvc"
#else
#define FASTLOSS_COMPILER "unknown"
#endif

#endif
