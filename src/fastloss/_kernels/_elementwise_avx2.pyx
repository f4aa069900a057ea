# _elementwise compiled for AVX2 with FMA (setup.py's SIMD_VARIANTS): the same source in
# wider vectors, with fused multiply-adds (so the last bits of a result may differ from
# the baseline build's), chosen at run time by the CPU's features.
include "_elementwise.pyx"
