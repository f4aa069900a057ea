# Declarations that compile with or without OpenMP, so that each kernel is written once.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #else
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_num_procs(void) { return 1; }
    #endif
    """
    int omp_get_max_threads() noexcept nogil
    int omp_get_num_procs() noexcept nogil
