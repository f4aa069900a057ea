/* Whether this build has GCC/Clang vector extensions: the one test the layers above
 * simd/ make to choose between the vector code and the plain-C code of compilers without
 * them (MSVC; FASTLOSS_SCALAR tests that code with GCC). */
#ifndef FL_SIMD_FEATURES_H
#define FL_SIMD_FEATURES_H

#if defined(__GNUC__) && !defined(FASTLOSS_SCALAR)
#define FL_VECTORS 1
#else
#define FL_VECTORS 0
#endif

#endif
