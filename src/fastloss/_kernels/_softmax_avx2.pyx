# _softmax compiled for AVX2 with FMA (setup.py's SIMD_VARIANTS): the same source in wider
# vectors, chosen at run time by the CPU's features (fastloss._common.simd_kernels).
include "_softmax.pyx"
