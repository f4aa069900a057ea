"""The seam between Python and the C kernels, compiled once.

Each function takes arrays that the Python layer has validated (their dtype, shape,
C-contiguity and alignment are checked again here, cheaply: a wrong call must raise, not
crash), fills the C call (api.h), releases the GIL and calls the table of the instruction
set in use (use_isa; dispatch.c finds which the CPU runs). Thread counts arrive resolved
(fastloss._threads). Also here: what the kernels were built with, and the thread
policy's state in C (a fork must be seen from C as well as from Python).
"""

cimport numpy as cnp
from libc.stdint cimport uintptr_t

cnp.import_array()

cdef extern from "api.h" nogil:
    int FL_ENOMEM
    ctypedef enum fl_dtype:
        FL_FLOAT32
        FL_FLOAT64
    ctypedef enum fl_rows_op:
        FL_SOFTMAX
        FL_LOG_SOFTMAX
        FL_LOGSUMEXP
    ctypedef struct fl_row_loss_call:
        fl_dtype dtype
        Py_ssize_t outer, classes, inner
        const void* logits
        const Py_ssize_t* target
        const void* target_rows
        const double* class_weight
        const double* sample_weight
        int kind
        double label_smoothing, z_loss, temperature, loss_factor, grad_scale
        double focal_gamma
        Py_ssize_t ignore_index
        double* loss_out
        Py_ssize_t rows_per_sum
        void* grad
        double* lse
        int n_threads
    ctypedef struct fl_elementwise_call:
        int kind
        fl_dtype dtype
        Py_ssize_t n
        const void* x
        const void* y
        const void* weight
        Py_ssize_t w_period
        int has_weight
        const void* pos_weight
        Py_ssize_t pw_period
        int has_pos_weight
        double label_smoothing, loss_scale, grad_scale
        double focal_alpha, focal_gamma
        double* partials
        void* loss_out
        void* grad_out
        double* ranges
        int n_threads
    ctypedef struct fl_kernels:
        const char* isa
        int (*rows)(fl_rows_op, fl_dtype, const void*, Py_ssize_t, Py_ssize_t, void*,
                    int) noexcept nogil
        int (*entropy)(fl_dtype, const void*, Py_ssize_t, Py_ssize_t, double*, double,
                       int) noexcept nogil
        int (*entropy_from_logits)(fl_dtype, const void*, Py_ssize_t, Py_ssize_t, double*,
                                   void*, double, double, int) noexcept nogil
        int (*row_loss)(const fl_row_loss_call*, double*) noexcept nogil
        int (*class_targets)(const Py_ssize_t*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                             const double*, const double*, int, Py_ssize_t*,
                             double*) noexcept nogil
        int (*elementwise)(const fl_elementwise_call*) noexcept nogil
        int (*value_range)(fl_dtype, const void*, Py_ssize_t, double*, double*, double*,
                           int) noexcept nogil
    int fl_isa_count()
    const char* fl_isa_name(int k)
    int fl_isa_runs(int k)
    const fl_kernels* fl_isa_kernels(int k)
    Py_ssize_t fl_rows_per_sum(Py_ssize_t n_rows, Py_ssize_t n_classes)
    enum:
        FL_EW_BLOCK
        FL_MAX_SUMS
    Py_ssize_t fl_stream_min_bytes

cdef extern from "_build_info.h":
    const char* FASTLOSS_CFLAGS
    const char* FASTLOSS_SIMD_LEVEL
    const char* FASTLOSS_COMPILER
    int FASTLOSS_OPENMP_VERSION

from fastloss._kernels._openmp cimport omp_get_max_threads, omp_get_num_procs

# ---- the kernels' constants ----------------------------------------------------------

#: Elements per partial sum of the elementwise losses (and the shortest weight period).
BLOCK_SIZE = FL_EW_BLOCK

# The elementwise losses (fl_elementwise_call.kind) and the row losses' targets
# (fl_row_loss_call.kind): losses/elementwise_spec.h and losses/row_loss.h.
BCE, BCE_WITH_LOGITS, KL_DIV, KL_DIV_LOG_TARGET, SIGMOID_FOCAL = range(5)
TARGET_CLASSES, TARGET_PROBS, TEACHER_PROBS, TEACHER_LOG_PROBS, TEACHER_LOGITS = range(5)

# ---- instruction sets ------------------------------------------------------------------

cdef const fl_kernels* table = NULL


def isa_names():
    """The instruction sets the kernels were built for, widest first (the last is the
    baseline, built everywhere)."""
    return [fl_isa_name(k).decode() for k in range(fl_isa_count())]


def isas_this_cpu_runs():
    """The built instruction sets that this CPU (and OS) runs, widest first."""
    return [fl_isa_name(k).decode() for k in range(fl_isa_count()) if fl_isa_runs(k)]


def use_isa(str name):
    """Run the kernels of instruction set ``name`` from now on; ValueError unless it was
    built and this CPU runs it."""
    global table
    for k in range(fl_isa_count()):
        if fl_isa_name(k).decode() == name:
            if not fl_isa_runs(k):
                break
            table = fl_isa_kernels(k)
            return
    raise ValueError(f"no kernels for {name!r} that this CPU runs; it runs "
                     f"{', '.join(isas_this_cpu_runs())}")


def current_isa():
    """The instruction set whose kernels run (None before use_isa)."""
    return table.isa.decode() if table != NULL else None


def rows_per_sum(Py_ssize_t n_rows, Py_ssize_t n_classes):
    """Rows per partial sum of a reduced row loss: set by the shape alone."""
    return fl_rows_per_sum(n_rows, n_classes)


def _set_stream_min_bytes(Py_ssize_t n):
    """Set the gradient size from which rows are streamed; returns the previous one."""
    global fl_stream_min_bytes
    cdef Py_ssize_t previous = fl_stream_min_bytes
    fl_stream_min_bytes = n
    return previous


# ---- arrays ------------------------------------------------------------------------------

cdef double no_data     # the address of an empty array's data (NULL means an error)

cdef inline fl_dtype dtype_of(cnp.ndarray a) except *:
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        return FL_FLOAT32
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64:
        return FL_FLOAT64
    raise TypeError(f"fastloss kernels take float32 or float64 arrays, got {a.dtype}")


cdef inline void* data(cnp.ndarray a, int typenum, Py_ssize_t size) except NULL:
    """The data of an array the kernels may read: of typenum, C-contiguous, aligned, of
    size elements."""
    if (cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(a)
            or not cnp.PyArray_ISALIGNED(a) or cnp.PyArray_SIZE(a) != size):
        raise ValueError("fastloss kernels: an array of the wrong dtype, layout or size "
                         f"({a.dtype}, {(<object> a).shape}, expected {size} elements)")
    return cnp.PyArray_DATA(a) if size else <void*> &no_data


cdef inline void* out_data(cnp.ndarray a, int typenum, Py_ssize_t size) except NULL:
    if not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError("fastloss kernels: a read-only output")
    return data(a, typenum, size)


cdef inline const double* weights(object w, Py_ssize_t size) except? NULL:
    if w is None:
        return NULL
    return <const double*> data(w, cnp.NPY_FLOAT64, size)


cdef inline int check(int status) except -1:
    if status == FL_ENOMEM:
        raise MemoryError("fastloss: cannot allocate the kernels' scratch memory")
    if status != 0:
        raise RuntimeError(f"fastloss kernels: status {status}")
    return 0


cdef inline const fl_kernels* kernels() except NULL:
    if table == NULL:
        raise RuntimeError("fastloss kernels: no instruction set chosen (use_isa)")
    return table


# ---- the kernels ---------------------------------------------------------------------------

def rows(int op, cnp.ndarray x, cnp.ndarray out, int n_threads):
    """softmax (op 0), log_softmax (1) into out of x's shape (may be x), or logsumexp (2)
    into out of x's rows, of the (N, C) rows x."""
    cdef const fl_kernels* k = kernels()
    cdef fl_dtype dtype = dtype_of(x)
    cdef int typenum = cnp.PyArray_TYPE(x)
    cdef Py_ssize_t n_rows = x.shape[0], n_cols = x.shape[1]
    cdef const void* xp = data(x, typenum, n_rows * n_cols)
    cdef void* op_out = out_data(out, typenum, n_rows if op == FL_LOGSUMEXP else n_rows * n_cols)
    cdef int status
    with nogil:
        status = k.rows(<fl_rows_op> op, dtype, xp, n_rows, n_cols, op_out, n_threads)
    check(status)


def entropy(cnp.ndarray p, cnp.ndarray out, double unit, int n_threads):
    """-sum_j p_j log p_j of each (N, C) row, times unit, into the float64 out (N,)."""
    cdef const fl_kernels* k = kernels()
    cdef fl_dtype dtype = dtype_of(p)
    cdef Py_ssize_t n_rows = p.shape[0], n_cols = p.shape[1]
    cdef const void* pp = data(p, cnp.PyArray_TYPE(p), n_rows * n_cols)
    cdef double* o = <double*> out_data(out, cnp.NPY_FLOAT64, n_rows)
    cdef int status
    with nogil:
        status = k.entropy(dtype, pp, n_rows, n_cols, o, unit, n_threads)
    check(status)


def entropy_from_logits(cnp.ndarray x, cnp.ndarray out, object grad, double grad_scale,
                        double unit, int n_threads):
    """H(softmax(x)) of each (N, C) row times unit into the float64 out (N,), and
    grad_scale unit dH/dx into grad (x's shape and dtype; may be x; None: none)."""
    cdef const fl_kernels* k = kernels()
    cdef fl_dtype dtype = dtype_of(x)
    cdef int typenum = cnp.PyArray_TYPE(x)
    cdef Py_ssize_t n_rows = x.shape[0], n_cols = x.shape[1]
    cdef const void* xp = data(x, typenum, n_rows * n_cols)
    cdef double* o = <double*> out_data(out, cnp.NPY_FLOAT64, n_rows)
    cdef void* g = NULL if grad is None else out_data(grad, typenum, n_rows * n_cols)
    cdef int status
    with nogil:
        status = k.entropy_from_logits(dtype, xp, n_rows, n_cols, o, g, grad_scale, unit,
                                       n_threads)
    check(status)


def row_loss(cnp.ndarray logits, object target, object target_rows, object class_weight,
             object sample_weight, int kind, double label_smoothing, double z_loss,
             Py_ssize_t ignore_index, double grad_scale, double temperature,
             double loss_factor, cnp.ndarray loss_out, Py_ssize_t rows_per_sum, object grad,
             object lse, int n_threads, double focal_gamma=0.0):
    """A row loss (cross-entropy or distillation, by kind) of the (outer, C, inner) logits:
    see api.h's fl_row_loss_call. target: (outer inner) intp class indices or None;
    target_rows: like logits or None; weights: float64 or None; loss_out: float64, one per
    row or (rows_per_sum > 0, class axis last) one per span of rows; grad: like logits
    (may be logits) or None; lse: float64 (outer inner) or None; focal_gamma: the focal
    loss's exponent (class targets; 0: cross-entropy). Returns the sum of loss_out in
    order where rows_per_sum > 0, else None."""
    cdef const fl_kernels* k = kernels()
    cdef fl_row_loss_call call
    cdef int typenum = cnp.PyArray_TYPE(logits)
    cdef Py_ssize_t n_rows, n_sums, size
    cdef double total = 0.0
    cdef int status
    call.dtype = dtype_of(logits)
    call.outer, call.classes, call.inner = logits.shape[0], logits.shape[1], logits.shape[2]
    n_rows = call.outer * call.inner
    size = n_rows * call.classes
    call.logits = data(logits, typenum, size)
    call.target = NULL
    if target is not None:
        call.target = <const Py_ssize_t*> data(target, cnp.NPY_INTP, n_rows)
    call.target_rows = NULL
    if target_rows is not None:
        call.target_rows = data(target_rows, typenum, size)
    call.class_weight = weights(class_weight, call.classes)
    call.sample_weight = weights(sample_weight, n_rows)
    call.kind = kind
    call.label_smoothing = label_smoothing
    call.z_loss = z_loss
    call.temperature = temperature
    call.loss_factor = loss_factor
    call.grad_scale = grad_scale
    call.focal_gamma = focal_gamma
    call.ignore_index = ignore_index
    if rows_per_sum > 0 and call.inner != 1:
        raise ValueError("fastloss kernels: sums of spans of rows need the class axis last")
    n_sums = (n_rows + rows_per_sum - 1) // rows_per_sum if rows_per_sum > 0 else n_rows
    call.loss_out = <double*> out_data(loss_out, cnp.NPY_FLOAT64, n_sums)
    call.rows_per_sum = rows_per_sum
    call.grad = NULL if grad is None else out_data(grad, typenum, size)
    call.lse = NULL if lse is None else <double*> out_data(lse, cnp.NPY_FLOAT64, n_rows)
    call.n_threads = n_threads
    if call.target == NULL and kind == TARGET_CLASSES:
        raise ValueError("fastloss kernels: class targets without their indices")
    if call.target_rows == NULL and kind != TARGET_CLASSES:
        raise ValueError("fastloss kernels: target rows missing")
    with nogil:
        status = k.row_loss(&call, &total)
    check(status)
    return total if rows_per_sum > 0 else None


def class_targets(cnp.ndarray target, Py_ssize_t n_classes, Py_ssize_t ignore_index,
                  object class_weight, object sample_weight, int n_threads):
    """One pass over intp class targets: (index of the first one outside [0, C) that is
    not ignore_index, or -1; the sum over the others of sample_weight * class_weight[y],
    the denominator of a "mean"), in fixed blocks: the same bits for any thread count."""
    cdef const fl_kernels* k = kernels()
    cdef Py_ssize_t n = cnp.PyArray_SIZE(target), first_bad
    cdef const Py_ssize_t* t = <const Py_ssize_t*> data(target, cnp.NPY_INTP, n)
    cdef const double* cw = weights(class_weight, n_classes)
    cdef const double* sw = weights(sample_weight, n)
    cdef double denominator
    cdef int status
    with nogil:
        status = k.class_targets(t, n, n_classes, ignore_index, cw, sw, n_threads, &first_bad,
                                 &denominator)
    check(status)
    return first_bad, denominator


cdef bint overlap(cnp.ndarray a, cnp.ndarray b):
    """Whether the memory of two C-contiguous arrays overlaps."""
    cdef uintptr_t a0 = <uintptr_t> cnp.PyArray_DATA(a)
    cdef uintptr_t b0 = <uintptr_t> cnp.PyArray_DATA(b)
    return (a0 < b0 + <uintptr_t> cnp.PyArray_NBYTES(b)
            and b0 < a0 + <uintptr_t> cnp.PyArray_NBYTES(a))


def cross_entropy_classes(cnp.ndarray logits, cnp.ndarray target, object grad_out, bint mean,
                          Py_ssize_t ignore_index, int n_threads):
    """The common case in one call: C-contiguous (N, C) float32/float64 logits, (N,) intp
    class targets, no options, a "mean" or a "sum", grad_out an array of the logits' shape
    and dtype or None. The caller has checked all of that; checked here: the targets'
    range, and that grad_out is C-contiguous, aligned, writeable, and the logits themselves
    or apart from them and the targets. Returns the loss, or None when any of that fails
    (the caller then takes the general path, which says what)."""
    cdef const fl_kernels* k = kernels()
    cdef Py_ssize_t n_rows = logits.shape[0], n_classes = logits.shape[1], first_bad
    cdef Py_ssize_t span = fl_rows_per_sum(n_rows, n_classes)
    cdef double denominator, total = 0.0
    cdef double sums[FL_MAX_SUMS]
    cdef fl_row_loss_call call
    cdef int status
    cdef cnp.ndarray grad
    if grad_out is not None:
        grad = grad_out
        if not (cnp.PyArray_IS_C_CONTIGUOUS(grad) and cnp.PyArray_ISWRITEABLE(grad)
                and cnp.PyArray_ISALIGNED(grad)
                and (cnp.PyArray_DATA(grad) == cnp.PyArray_DATA(logits)
                     or not overlap(grad, logits)) and not overlap(grad, target)):
            return None
    call.target = <const Py_ssize_t*> data(target, cnp.NPY_INTP, n_rows)
    with nogil:
        status = k.class_targets(call.target, n_rows, n_classes, ignore_index, NULL, NULL,
                                 n_threads, &first_bad, &denominator)
    check(status)
    if first_bad >= 0:
        return None
    if not mean:
        denominator = 1.0
    call.dtype = dtype_of(logits)
    call.outer, call.classes, call.inner = n_rows, n_classes, 1
    call.logits = data(logits, cnp.PyArray_TYPE(logits), n_rows * n_classes)
    call.target_rows = NULL
    call.class_weight = NULL
    call.sample_weight = NULL
    call.kind = TARGET_CLASSES
    call.label_smoothing = 0.0
    call.z_loss = 0.0
    call.focal_gamma = 0.0
    call.temperature = 1.0
    call.loss_factor = 1.0
    call.grad_scale = 1.0 / denominator if denominator > 0 else 0.0
    call.ignore_index = ignore_index
    call.loss_out = sums
    call.rows_per_sum = span
    call.grad = NULL if grad_out is None else cnp.PyArray_DATA(grad)
    call.lse = NULL
    call.n_threads = n_threads
    with nogil:
        status = k.row_loss(&call, &total)
    check(status)
    if mean:
        return total / denominator if denominator > 0 else float("nan")
    return total


def elementwise(int kind, cnp.ndarray x, cnp.ndarray target, cnp.ndarray weight,
                cnp.ndarray pos_weight, cnp.ndarray partials, cnp.ndarray loss_out,
                cnp.ndarray grad_out, double label_smoothing, double loss_scale,
                double grad_scale, int n_threads, bint has_weight=True,
                bint has_pos_weight=True, object ranges=None, double focal_alpha=-1.0,
                double focal_gamma=0.0):
    """Weighted terms of one elementwise loss (kind) over the flat x and target, their
    block sums into partials and, optionally, the terms times loss_scale into loss_out
    (size 0: not), the weighted derivatives times grad_scale into grad_out (size 0: not;
    may be x) and each block's extremes of x, then of target, into ranges (n_blocks, 4).
    weight and pos_weight: one period (>= BLOCK_SIZE elements) each. focal_alpha and
    focal_gamma: the sigmoid focal loss's (SIGMOID_FOCAL)."""
    cdef const fl_kernels* k = kernels()
    cdef fl_elementwise_call call
    cdef int typenum = cnp.PyArray_TYPE(x)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef int status
    call.kind = kind
    call.dtype = dtype_of(x)
    call.n = n
    call.x = data(x, typenum, n)
    call.y = data(target, typenum, n)
    call.w_period = cnp.PyArray_SIZE(weight)
    call.weight = data(weight, typenum, call.w_period)
    call.has_weight = has_weight
    call.pw_period = cnp.PyArray_SIZE(pos_weight)
    call.pos_weight = data(pos_weight, typenum, call.pw_period)
    call.has_pos_weight = has_pos_weight
    call.label_smoothing = label_smoothing
    call.loss_scale = loss_scale
    call.grad_scale = grad_scale
    call.focal_alpha = focal_alpha
    call.focal_gamma = focal_gamma
    call.partials = <double*> out_data(partials, cnp.NPY_FLOAT64,
                                       (n + FL_EW_BLOCK - 1) // FL_EW_BLOCK)
    call.loss_out = NULL if loss_out.size == 0 else out_data(loss_out, typenum, n)
    call.grad_out = NULL if grad_out.size == 0 else out_data(grad_out, typenum, n)
    call.ranges = NULL if ranges is None else <double*> out_data(
        ranges, cnp.NPY_FLOAT64, 4 * ((n + FL_EW_BLOCK - 1) // FL_EW_BLOCK))
    call.n_threads = n_threads
    if n and (call.w_period < 1 or call.pw_period < 1):
        raise ValueError("fastloss kernels: empty weight periods")
    with nogil:
        status = k.elementwise(&call)
    check(status)


def value_range(cnp.ndarray v, cnp.ndarray lows, cnp.ndarray highs, cnp.ndarray nans,
                int n_threads):
    """Each block's (BLOCK_SIZE elements) min and max, NaN ignored, and 1 where the block
    has a NaN (float64 outputs of ceil(n / BLOCK_SIZE)): one parallel pass over v."""
    cdef const fl_kernels* k = kernels()
    cdef fl_dtype dtype = dtype_of(v)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(v), n_blocks = (n + FL_EW_BLOCK - 1) // FL_EW_BLOCK
    cdef const void* vp = data(v, cnp.PyArray_TYPE(v), n)
    cdef double* lo = <double*> out_data(lows, cnp.NPY_FLOAT64, n_blocks)
    cdef double* hi = <double*> out_data(highs, cnp.NPY_FLOAT64, n_blocks)
    cdef double* na = <double*> out_data(nans, cnp.NPY_FLOAT64, n_blocks)
    cdef int status
    with nogil:
        status = k.value_range(dtype, vp, n, lo, hi, na, n_threads)
    check(status)


# ---- the build, and the thread policy's state ---------------------------------------------

# GNU libgomp keeps its worker threads across fork(), though the child has none of them:
# the child's first parallel region with more than one thread waits for them forever. So a
# process forked after this one started a team (more than one thread) runs every call on
# one thread, and so do its own children. A region of one thread does not touch the team.
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
        "isas": isa_names(),
    }
