"""What the kernels were built with, and OpenMP's view of the thread count."""

from fastloss._kernels._openmp cimport omp_get_max_threads, omp_get_num_procs

cdef extern from "_build_info.h":
    const char* FASTLOSS_CFLAGS
    const char* FASTLOSS_SIMD_LEVEL
    const char* FASTLOSS_COMPILER
    int FASTLOSS_OPENMP_VERSION


def openmp_enabled():
    """Return True if the kernels were compiled with OpenMP (run in parallel)."""
    return FASTLOSS_OPENMP_VERSION != 0


def max_threads():
    """OpenMP's current maximum thread count (1 in a serial build).

    It follows ``OMP_NUM_THREADS`` and ``omp_set_num_threads`` (which threadpoolctl uses).
    """
    return omp_get_max_threads()


def num_procs():
    """Processors available to OpenMP (1 in a serial build)."""
    return omp_get_num_procs()


def build_info():
    """How the kernels were compiled: a dict of plain Python values."""
    return {
        "openmp": FASTLOSS_OPENMP_VERSION != 0,
        "openmp_version": FASTLOSS_OPENMP_VERSION,
        "simd": FASTLOSS_SIMD_LEVEL.decode(),
        "compiler": FASTLOSS_COMPILER.decode(),
        "cflags": FASTLOSS_CFLAGS.decode(),
    }
