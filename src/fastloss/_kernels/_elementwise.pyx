# Elementwise losses: binary cross-entropy from probabilities or from logits, and the
# Kullback-Leibler divergence, each fused with its gradient.
#
# The maths of the elements and the loop over one block are C with vector extensions
# (_simd_elementwise.h, one source for every SIMD build); here, the loop over the blocks,
# in parallel, and the Python entry point.
#
# Reductions are deterministic. The flat index is cut into blocks of BLOCK elements whose
# boundaries do not depend on the thread count; each block's weighted terms are summed in
# a fixed order (element i into accumulator i % 16, then a fixed tree) into one double
# partial sum per block, which the Python layer adds up with np.sum. The terms are formed
# by the same operations whether or not the gradient is computed, so the loss is the same
# bits either way.
#
# Weights that broadcast periodically over the flat index (shape (C,) or (D, C) against
# (N, D, C), a scalar, the full shape) arrive flat, tiled to one period of at least BLOCK
# elements; a block walks them from its phase, wrapping at the period.
#
# Built for the baseline, AVX2+FMA and AVX-512 (setup.py), which may differ in the last
# bits (fused multiply-adds); -fno-trapping-math lets the compiler evaluate both sides of
# a select.

from cython cimport floating
from cython.parallel cimport prange

cdef enum:
    BLOCK = 4096    # elements per partial sum, and the shortest period of a weight array

cdef enum LossKind:             # which loss `elementwise_loss` computes (as in the header)
    LOSS_BCE = 0
    LOSS_BCE_WITH_LOGITS = 1
    LOSS_KL_DIV = 2
    LOSS_KL_DIV_LOG_TARGET = 3

BCE = LOSS_BCE
BCE_WITH_LOGITS = LOSS_BCE_WITH_LOGITS
KL_DIV = LOSS_KL_DIV
KL_DIV_LOG_TARGET = LOSS_KL_DIV_LOG_TARGET
BLOCK_SIZE = BLOCK

cdef extern from "_simd_elementwise.h" nogil:
    ctypedef struct fl_ew_opts:
        int kind
        int has_weight
        int has_pos_weight
        double alpha
        double beta
        double loss_scale
        double grad_scale
    double fl_ew_block_f32(
        const float* x, const float* y, const float* w, Py_ssize_t w_period,
        Py_ssize_t w_phase, const float* pw, Py_ssize_t pw_period, Py_ssize_t pw_phase,
        Py_ssize_t n, float* loss_out, float* grad_out, double* range_out,
        const fl_ew_opts* opts)
    double fl_ew_block_f64(
        const double* x, const double* y, const double* w, Py_ssize_t w_period,
        Py_ssize_t w_phase, const double* pw, Py_ssize_t pw_period, Py_ssize_t pw_phase,
        Py_ssize_t n, double* loss_out, double* grad_out, double* range_out,
        const fl_ew_opts* opts)
    void fl_ew_range_f32(const float* v, Py_ssize_t n, double* low, double* high,
                         double* nan)
    void fl_ew_range_f64(const double* v, Py_ssize_t n, double* low, double* high,
                         double* nan)


cdef inline double block_sum(
    const fl_ew_opts* opts,
    const floating* x,          # IN: the block's first element
    const floating* y,          # IN
    const floating* w,          # IN: one period of the weights
    Py_ssize_t w_period,
    Py_ssize_t w_phase,         # index into w of the block's first element
    const floating* pw,         # IN: one period of pos_weight
    Py_ssize_t pw_period,
    Py_ssize_t pw_phase,
    Py_ssize_t n,               # elements in the block, <= BLOCK
    floating* loss_out,         # OUT (n,) or NULL: terms * loss_scale
    floating* grad_out,         # OUT (n,) or NULL: derivatives * grad_scale; may be x
    double* range_out,          # OUT (4,) or NULL: min and max of x, then of y (NaN skipped)
) noexcept nogil:
    if floating is float:
        return fl_ew_block_f32(x, y, w, w_period, w_phase, pw, pw_period, pw_phase, n,
                               loss_out, grad_out, range_out, opts)
    else:
        return fl_ew_block_f64(x, y, w, w_period, w_phase, pw, pw_period, pw_phase, n,
                               loss_out, grad_out, range_out, opts)


cdef void drive(
    const fl_ew_opts* opts,
    const floating[::1] x,
    const floating[::1] y,
    const floating[::1] weight,
    const floating[::1] pos_weight,
    double[::1] partials,
    floating[::1] loss_out,
    floating[::1] grad_out,
    double* ranges,             # OUT (n_blocks, 4), or NULL
    int n_threads,
) noexcept nogil:
    cdef Py_ssize_t n = x.shape[0], n_blocks = partials.shape[0], b, start, stop
    cdef Py_ssize_t w_period = weight.shape[0], pw_period = pos_weight.shape[0]
    cdef floating* loss_ptr = &loss_out[0] if loss_out.shape[0] > 0 else NULL
    cdef floating* grad_ptr = &grad_out[0] if grad_out.shape[0] > 0 else NULL
    for b in prange(n_blocks, schedule="static", num_threads=n_threads):
        start = b * BLOCK
        stop = start + BLOCK if start + BLOCK < n else n
        partials[b] = block_sum(
            opts, &x[start], &y[start],
            &weight[0], w_period, start % w_period,
            &pos_weight[0], pw_period, start % pw_period,
            stop - start,
            loss_ptr + start if loss_ptr != NULL else NULL,
            grad_ptr + start if grad_ptr != NULL else NULL,
            ranges + 4 * b if ranges != NULL else NULL,
        )


def elementwise_loss(
    int loss,                           # BCE, BCE_WITH_LOGITS, KL_DIV, KL_DIV_LOG_TARGET
    const floating[::1] x,              # IN (n,): probabilities, logits or log-probabilities
    const floating[::1] target,         # IN (n,)
    const floating[::1] weight,         # IN: one period (>= BLOCK elements) of the weights
    const floating[::1] pos_weight,     # IN: one period of pos_weight (ones: none)
    double[::1] partials,               # OUT (ceil(n / BLOCK),): weighted block sums
    floating[::1] loss_out,             # OUT (n,): terms * loss_scale, or (0,)
    floating[::1] grad_out,             # OUT (n,): derivatives * grad_scale, or (0,)
    double label_smoothing,             # BCE_WITH_LOGITS: t = y (1 - eps) + eps / 2
    double loss_scale,
    double grad_scale,
    int n_threads,
    bint has_weight=True,               # False: weight holds ones, which are not read
    bint has_pos_weight=True,           # False: pos_weight holds ones, not read
    double[:, ::1] ranges=None,         # OUT (ceil(n / BLOCK), 4), or None: each block's
                                        # min and max of x, then of target (NaN skipped)
):
    """Weighted terms of one elementwise loss, their block sums and, optionally, the
    terms themselves, the weighted derivatives with respect to x and the extremes of x and
    target per block."""
    cdef fl_ew_opts opts
    cdef double* ranges_ptr = NULL
    if x.shape[0] == 0:
        return
    if ranges is not None:
        ranges_ptr = &ranges[0, 0]
    opts.kind = loss
    opts.has_weight = has_weight
    opts.has_pos_weight = has_pos_weight and loss == LOSS_BCE_WITH_LOGITS
    opts.alpha = 1.0 - label_smoothing
    opts.beta = 0.5 * label_smoothing
    opts.loss_scale = loss_scale
    opts.grad_scale = grad_scale
    with nogil:
        drive(&opts, x, target, weight, pos_weight, partials, loss_out, grad_out, ranges_ptr,
              n_threads)


# --- the range of the values, for validation ---------------------------------------------

def value_range(
    const floating[::1] v,      # IN (n,)
    double[::1] lows,           # OUT (ceil(n / BLOCK),): each block's minimum
    double[::1] highs,          # OUT (ceil(n / BLOCK),): each block's maximum
    double[::1] nans,           # OUT (ceil(n / BLOCK),): 1 where the block has a NaN, else 0
    int n_threads,
):
    """Each block's min and max, NaN ignored, and whether it has a NaN: one parallel pass
    over v, where NumPy's min and max reductions take two serial ones (the pre-check of
    an in-place call, which cannot check in the kernel's pass: see elementwise_loss's
    ranges; the probability targets' check)."""
    cdef Py_ssize_t n = v.shape[0], b, start
    with nogil:
        for b in prange(lows.shape[0], schedule="static", num_threads=n_threads):
            start = b * BLOCK
            if floating is float:
                fl_ew_range_f32(&v[start], BLOCK if start + BLOCK < n else n - start,
                                &lows[b], &highs[b], &nans[b])
            else:
                fl_ew_range_f64(&v[start], BLOCK if start + BLOCK < n else n - start,
                                &lows[b], &highs[b], &nans[b])


# --- which SIMD builds this CPU runs -----------------------------------------------------

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    static int fastloss_cpu_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    static int fastloss_cpu_avx512(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd")
            && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vl");
    }
    #else
    static int fastloss_cpu_avx2(void) { return 0; }
    static int fastloss_cpu_avx512(void) { return 0; }
    #endif
    """
    int fastloss_cpu_avx2() noexcept nogil
    int fastloss_cpu_avx512() noexcept nogil


def cpu_builds():
    """The SIMD builds of this module that the CPU (and OS) can run, widest first; call
    it on the baseline build, before importing another (AVX2 here includes FMA)."""
    builds = []
    if fastloss_cpu_avx512():
        builds.append("avx512")
    if fastloss_cpu_avx2():
        builds.append("avx2")
    builds.append("baseline")
    return builds
