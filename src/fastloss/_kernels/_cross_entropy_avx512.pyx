# _cross_entropy compiled for AVX-512 with FMA (setup.py's SIMD_VARIANTS): the same source in wider
# vectors, chosen at run time by the CPU's features (fastloss._common.simd_kernels).
include "_cross_entropy.pyx"
