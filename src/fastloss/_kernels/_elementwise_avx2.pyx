# _elementwise compiled for AVX2 (setup.py's SIMD_VARIANTS): the same source, so the
# same results bit for bit, in wider vectors. Chosen at run time by the CPU's features.
include "_elementwise.pyx"
