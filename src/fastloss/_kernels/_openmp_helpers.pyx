"""What the kernels were built with, and how many OpenMP threads a call may use."""

from fastloss._kernels._openmp cimport omp_get_max_threads, omp_get_num_procs

cdef extern from "_build_info.h":
    const char* FASTLOSS_CFLAGS
    const char* FASTLOSS_SIMD_LEVEL
    const char* FASTLOSS_COMPILER
    int FASTLOSS_OPENMP_VERSION

# The thread policy's state, in C so that a fork made from C is seen as well as one made
# from Python. GNU libgomp keeps its worker threads across fork(), though the child has
# none of them: the child's first parallel region with more than one thread waits for them
# forever. So a process forked after this one started a team (more than one thread) runs
# every call on one thread, and so do its own children. A region of one thread does not
# touch the team, and runs.
cdef extern from *:
    """
    static int fl_team_started = 0;        /* a call was given more than one thread */
    static int fl_forked_after_team = 0;   /* this process is such a process's fork */
    static int fl_cpu_limit_override = 0;  /* tests: a limit other than the CPUs (0: none) */

    static void fl_after_fork_in_child(void) {
        fl_forked_after_team = fl_forked_after_team || fl_team_started;
    }

    #if defined(_OPENMP) && !defined(_WIN32)
    #include <pthread.h>
    static int fl_register_fork_handler(void) {
        return pthread_atfork(NULL, NULL, fl_after_fork_in_child);
    }
    #else
    static int fl_register_fork_handler(void) { return 0; }
    #endif

    /* The threads for a call that asks for `requested` (>= 1, or <= -1 for all the CPUs
     * but -requested - 1): at most the CPUs this thread may run on, and 1 in a process
     * forked after a team. */
    static int fl_resolve_threads(long long requested) {
        long long cpus = fl_cpu_limit_override > 0 ? fl_cpu_limit_override
                                                   : omp_get_num_procs();
        long long n = requested > 0 ? requested : cpus + 1 + requested;
        if (n > cpus) n = cpus;
        if (n <= 1 || fl_forked_after_team) return 1;
        fl_team_started = 1;
        return (int)n;
    }
    """
    int fl_register_fork_handler() noexcept nogil
    int fl_resolve_threads(long long requested) noexcept nogil
    int fl_forked_after_team
    int fl_cpu_limit_override

if fl_register_fork_handler() != 0:
    raise ImportError("fastloss: cannot register its fork handler (pthread_atfork)")


def openmp_enabled():
    """Return True if the kernels were compiled with OpenMP (run in parallel)."""
    return FASTLOSS_OPENMP_VERSION != 0


def max_threads():
    """OpenMP's current maximum thread count (1 in a serial build).

    It follows ``OMP_NUM_THREADS`` and ``omp_set_num_threads`` (which threadpoolctl uses).
    """
    return omp_get_max_threads()


def num_procs():
    """Processors this thread may run on, as OpenMP counts them (1 in a serial build)."""
    return omp_get_num_procs()


def resolve_threads(long long requested):
    """The threads a call that asks for ``requested`` runs with: at most the processors
    (:func:`num_procs`), all but ``-requested - 1`` of them for a negative count, and 1
    in a process forked after one that ran a team of threads (and in a serial build).
    ``requested`` is an int within a C int's range, not 0: the caller has checked it."""
    if FASTLOSS_OPENMP_VERSION == 0:
        return 1
    return fl_resolve_threads(requested)


def forked_after_team():
    """Whether this process was forked (directly or not) from one that had run fastloss
    on several threads: it then runs every call on one thread."""
    return fl_forked_after_team != 0


def _set_cpu_limit(int limit):
    """Tests: cap thread counts at ``limit`` instead of the processors (0: the
    processors again). Returns the previous override."""
    global fl_cpu_limit_override
    cdef int previous = fl_cpu_limit_override
    fl_cpu_limit_override = limit
    return previous


def build_info():
    """How the kernels were compiled: a dict of plain Python values."""
    return {
        "openmp": FASTLOSS_OPENMP_VERSION != 0,
        "openmp_version": FASTLOSS_OPENMP_VERSION,
        "simd": FASTLOSS_SIMD_LEVEL.decode(),
        "compiler": FASTLOSS_COMPILER.decode(),
        "cflags": FASTLOSS_CFLAGS.decode(),
    }
