# Elementwise losses: binary cross-entropy from probabilities or from logits, and the
# Kullback-Leibler divergence, each fused with its gradient.
#
# Layer 1: the term of one element and its derivative (`*_term`), in double whatever the
# storage type, trusting what the Python layer validated. Layer 2: one block driver for
# every loss (`drive`), specialised at compile time on the loss (the fused type `Spec`) and
# the dtype (`floating`).
#
# Reductions are deterministic. The flat index is cut into blocks of BLOCK elements whose
# boundaries do not depend on the thread count; each block's weighted terms are summed in
# a fixed order (LANES interleaved accumulators) into one double partial sum per block,
# which the Python layer adds up with np.sum. The terms are formed by the same operations
# whether or not the gradient is computed, so the loss is the same bits either way.
#
# Weights that broadcast periodically over the flat index (shape (C,) or (D, C) against
# (N, D, C), a scalar, the full shape) arrive flat, tiled to one period of at least BLOCK
# elements; each block walks them in at most a few contiguous runs, so no index is ever
# reduced modulo the period inside the element loop.
#
# Vectorisation: the element loop has no branches (both sides of a choice are computed,
# then selected) and calls no libm function: exp and log are written out below in
# arithmetic and bit operations, so that the compiler can turn the loop into SIMD code.
# Built with -fno-trapping-math (so that selects may evaluate both sides) and
# -ffp-contract=off (no fused multiply-add: the same bits on every CPU and in every loop).

from cython cimport floating
from cython.parallel cimport prange
from libc.float cimport DBL_MIN
from libc.math cimport INFINITY, NAN, fabs
from libc.stdint cimport uint64_t

cdef enum:
    BLOCK = 4096    # elements per partial sum, and the shortest period of a weight array
    LANES = 8       # interleaved accumulators of a block sum

cdef enum LossKind:             # which loss `elementwise_loss` computes
    LOSS_BCE = 0
    LOSS_BCE_WITH_LOGITS = 1
    LOSS_KL_DIV = 2
    LOSS_KL_DIV_LOG_TARGET = 3

BCE = LOSS_BCE
BCE_WITH_LOGITS = LOSS_BCE_WITH_LOGITS
KL_DIV = LOSS_KL_DIV
KL_DIV_LOG_TARGET = LOSS_KL_DIV_LOG_TARGET
BLOCK_SIZE = BLOCK

# --- exp and log in plain arithmetic (layer 1 helpers) ----------------------------------

cdef double ROUND = 6755399441055744.0      # 1.5 * 2**52: x + ROUND - ROUND rounds x
cdef double TWO52 = 4503599627370496.0      # 2**52
cdef double TWO54 = 18014398509481984.0     # 2**54
cdef double LOG2E = 1.4426950408889634      # 1 / ln 2
# ln 2 split so that n * LN2_HI is exact for |n| < 2**20 (fdlibm's constants).
cdef double LN2_HI = 6.93147180369123816490e-01
cdef double LN2_LO = 1.90821492927058770002e-10
cdef double LOG_CLAMP = -100.0              # PyTorch's floor for log p in BCE
# PyTorch's floor for p (1 - p) in BCE's gradient: the float 1e-12f, 1e-12 (1 - 4e-9).
cdef double PROB_EPS = 9.999999960041972e-13


cdef union Bits:
    double d
    uint64_t u


cdef inline uint64_t bits_of(double x) noexcept nogil:
    cdef Bits b
    b.d = x
    return b.u


cdef inline double from_bits(uint64_t u) noexcept nogil:
    cdef Bits b
    b.u = u
    return b.d


cdef inline double pow2i(double k) noexcept nogil:
    """2**k for an integer-valued k in [-1022, 1023], written into the exponent field.

    k + ROUND holds k in the low bits of its significand; adding the bias and shifting
    by 52 keeps exactly the 11 exponent bits of k + 1023."""
    return from_bits((bits_of(k + ROUND) + 1023) << 52)


cdef inline double exp_(double x) noexcept nogil:
    """exp(x) within 1 ulp, for any double (0 below -745.2, inf above 709.8).

    fdlibm's algorithm without branches: x = n ln 2 + r with |r| <= ln(2) / 2 (r kept as
    hi - lo), exp(r) = 1 + 2r / (2 - c) with c = r - r**2 P(r**2), P a minimax polynomial
    of degree 4, times 2**n applied as two factors so that subnormal and near-overflow
    results are rounded once, correctly."""
    cdef double c = -746.0 if x < -746.0 else x      # NaN passes through both clamps
    c = 710.0 if c > 710.0 else c
    cdef double n = (c * LOG2E + ROUND) - ROUND
    cdef double hi = c - n * LN2_HI
    cdef double lo = n * LN2_LO
    cdef double r = hi - lo
    cdef double t = r * r
    cdef double q = r - t * (1.66666666666666019037e-01
                             + t * (-2.77777777770155933842e-03
                                    + t * (6.61375632143793436117e-05
                                           + t * (-1.65339022054652515390e-06
                                                  + t * 4.13813679705723846039e-08))))
    cdef double p = 1.0 - ((lo - (r * q) / (2.0 - q)) - hi)
    cdef double half = (n * 0.5 + ROUND) - ROUND       # n = half + (n - half), both in range
    return p * pow2i(half) * pow2i(n - half)


cdef inline double log_normal(double v) noexcept nogil:
    """log(v) within 1 ulp for a positive, finite, normal v (anything else gives a finite
    wrong value: see log_).

    fdlibm's (and musl's) algorithm without branches: v = 2**k m with m in
    [sqrt(2)/2, sqrt(2)), f = m - 1, s = f / (2 + f), and
    log(1 + f) = f - f**2/2 + s (f**2/2 + R(s**2)) with R a minimax polynomial."""
    # Shift the bits so that the exponent field rounds m to [sqrt(2)/2, sqrt(2)).
    cdef uint64_t ix = bits_of(v) + (0x3ff0000000000000ULL - 0x3fe6a09e00000000ULL)
    cdef double k = from_bits((ix >> 52) | 0x4330000000000000ULL) - (TWO52 + 1023.0)
    cdef double f = from_bits((ix & 0x000fffffffffffffULL) + 0x3fe6a09e00000000ULL) - 1.0
    cdef double hfsq = 0.5 * f * f
    cdef double s = f / (2.0 + f)
    cdef double z = s * s
    cdef double w = z * z
    cdef double t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01
                                                          + w * 1.531383769920937332e-01))
    cdef double t2 = z * (6.666666666666735130e-01 + w * (2.857142874366239149e-01
                                                          + w * (1.818357216161805012e-01
                                                                 + w * 1.479819860511658591e-01)))
    return s * (hfsq + (t2 + t1)) + k * LN2_LO - hfsq + f + k * LN2_HI


cdef inline double log_(double v) noexcept nogil:
    """log(v) within 1 ulp for any double: -inf at 0, inf at inf, NaN for NaN and v < 0.
    A subnormal v is scaled by 2**54 first."""
    cdef bint tiny = v < DBL_MIN
    cdef double scaled = v * TWO54
    cdef double r = log_normal(scaled if tiny else v)
    cdef double r_tiny = r - 54.0 * LN2_HI - 54.0 * LN2_LO
    r = r_tiny if tiny else r
    r = -INFINITY if v == 0.0 else r
    r = r if v < INFINITY else v        # inf stays inf, NaN stays NaN
    return NAN if v < 0.0 else r


cdef inline double log1p_(double u, double inv_w) noexcept nogil:
    """log(1 + u) for -1 <= u <= 1 (or NaN), given inv_w = 1 / (1 + u): the log of the
    rounded w = 1 + u, plus the rounding error of that sum (exact by Fast2Sum, as
    |u| <= 1) over w. w is 0 or normal (at least 2**-53), and a NaN u reaches the
    result through the correction."""
    cdef double w = 1.0 + u
    cdef double r = log_normal(w) + (u - (w - 1.0)) * inv_w
    return -INFINITY if w == 0.0 else r


cdef inline double clamp_log(double v) noexcept nogil:
    """max(v, -100) that keeps NaN, as PyTorch's std::max does."""
    return LOG_CLAMP if v < LOG_CLAMP else v


cdef inline double zero_unless_nan(double x) noexcept nogil:
    """0, or NaN when x is NaN: a zero coefficient against x."""
    return x if x != x else 0.0


# --- the term of one element and its derivative (layer 1) -------------------------------

ctypedef struct Probs:          # binary_cross_entropy: x = p, a probability
    char unused

ctypedef struct Logits:         # binary_cross_entropy_with_logits
    double alpha                # smoothed target t = alpha * y + beta
    double beta

ctypedef struct KL:             # kl_div: x = log q, target = p
    char unused

ctypedef struct LogKL:          # kl_div(log_target=True): x = log q, target = log p
    char unused

ctypedef fused Spec:
    Probs
    Logits
    KL
    LogKL


cdef inline double bce_term(double p, double y, double* d) noexcept nogil:
    """-[y max(log p, -100) + (1 - y) max(log(1 - p), -100)], and its derivative
    (p - y) / max(p (1 - p), PROB_EPS) as PyTorch's backward computes it."""
    cdef double log_p = clamp_log(log_(p))
    cdef double log_q = clamp_log(log1p_(-p, 1.0 / (1.0 - p)))
    cdef double den = p * (1.0 - p)
    d[0] = (p - y) / (PROB_EPS if den < PROB_EPS else den)
    return (y - 1.0) * log_q - y * log_p


cdef inline double logits_term(
    double x, double y, double pos_weight, const Logits* spec, double* d
) noexcept nogil:
    """(1 - t) x + L softplus(-x) with t the smoothed target, L = 1 + (pos_weight - 1) t;
    derivative L sigmoid(x) - pos_weight t.

    With e = exp(-|x|) (the only exp), softplus(-x) = max(-x, 0) + log1p(e) and
    sigmoid(-|x|) = e / (1 + e). Per sign of x, both are sums of non-negative parts:
    x >= 0: (1 - t) x + L log1p(e),  derivative (1 - t) - L e / (1 + e);
    x < 0:  -pos_weight t x + L log1p(e),  derivative L e / (1 + e) - pos_weight t."""
    cdef double t = spec.alpha * y + spec.beta
    cdef double e = exp_(-fabs(x))
    cdef double inv = 1.0 / (1.0 + e)
    cdef double soft = log1p_(e, inv)
    cdef double q = e * inv
    cdef double coef = 1.0 + (pos_weight - 1.0) * t
    cdef double pt = pos_weight * t
    cdef bint positive = x >= 0.0
    cdef double lin_pos = (1.0 - t) * x
    cdef double lin_neg = -pt * x
    cdef double d_pos = (1.0 - t) - coef * q
    cdef double d_neg = coef * q - pt
    d[0] = d_pos if positive else d_neg
    return (lin_pos if positive else lin_neg) + coef * soft


cdef inline double kl_term(double x, double p, double* d) noexcept nogil:
    """p (log p - x), exactly 0 where p = 0 (unless x is NaN); derivative -p."""
    cdef double term = p * (log_(p) - x)
    d[0] = -p
    return zero_unless_nan(x) if p == 0.0 else term


cdef inline double log_kl_term(double x, double log_p, double* d) noexcept nogil:
    """exp(log_p) (log_p - x), exactly 0 where exp(log_p) = 0 (unless x is NaN);
    derivative -exp(log_p)."""
    cdef double p = exp_(log_p)
    cdef double term = p * (log_p - x)
    d[0] = -p
    return zero_unless_nan(x) if p == 0.0 else term


cdef inline double term_of(
    const Spec* spec, double x, double y, double pos_weight, double* d
) noexcept nogil:
    if Spec is Probs:
        return bce_term(x, y, d)
    elif Spec is Logits:
        return logits_term(x, y, pos_weight, spec, d)
    elif Spec is KL:
        return kl_term(x, y, d)
    else:
        return log_kl_term(x, y, d)


# --- the block driver (layer 2) ---------------------------------------------------------

cdef inline void run_terms(
    const Spec* spec,
    const floating* x,          # IN (n,)
    const floating* y,          # IN (n,)
    const floating* w,          # IN (n,): weights of these elements
    const floating* pw,         # IN (n,): pos_weight of these elements
    Py_ssize_t n,
    double* terms,              # OUT (n,): weighted terms
    double* derivs,             # OUT (n,): weighted derivatives (if with_grad)
    bint with_grad,             # a constant at each call site: the loop is specialised
) noexcept nogil:
    """One contiguous run of elements: the loop the compiler vectorises."""
    cdef Py_ssize_t i
    cdef double d = 0.0, term
    for i in range(n):
        term = term_of(spec, x[i], y[i], pw[i], &d)
        terms[i] = w[i] * term
        if with_grad:
            derivs[i] = w[i] * d


cdef inline double lane_sum(const double* v, Py_ssize_t n) noexcept nogil:
    """Sum of v[0:n] in a fixed order: LANES interleaved accumulators, then a tree."""
    cdef double acc[LANES]
    cdef Py_ssize_t i = 0, j
    for j in range(LANES):
        acc[j] = 0.0
    while i + LANES <= n:
        for j in range(LANES):
            acc[j] += v[i + j]
        i += LANES
    while i < n:
        acc[i % LANES] += v[i]
        i += 1
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef double block_sum(
    const Spec* spec,
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
    double loss_scale,
    double grad_scale,
) noexcept nogil:
    """One block: its terms (and derivatives) in runs along which the weights are
    contiguous, then their sum. Returns the block's partial sum."""
    cdef double terms[BLOCK]
    cdef double derivs[BLOCK]
    cdef Py_ssize_t done = 0, run, i
    while done < n:
        run = n - done
        if w_period - w_phase < run:
            run = w_period - w_phase
        if pw_period - pw_phase < run:
            run = pw_period - pw_phase
        if grad_out != NULL:
            run_terms(spec, x + done, y + done, w + w_phase, pw + pw_phase, run,
                      terms + done, derivs + done, True)
        else:
            run_terms(spec, x + done, y + done, w + w_phase, pw + pw_phase, run,
                      terms + done, derivs + done, False)
        done += run
        w_phase += run
        pw_phase += run
        if w_phase == w_period:
            w_phase = 0
        if pw_phase == pw_period:
            pw_phase = 0
    # Written only now, from the stack buffers: grad_out may be x itself.
    if grad_out != NULL:
        for i in range(n):
            grad_out[i] = <floating> (derivs[i] * grad_scale)
    if loss_out != NULL:
        for i in range(n):
            loss_out[i] = <floating> (terms[i] * loss_scale)
    return lane_sum(terms, n)


cdef void drive(
    const Spec* spec,
    const floating[::1] x,
    const floating[::1] y,
    const floating[::1] weight,
    const floating[::1] pos_weight,
    double[::1] partials,
    floating[::1] loss_out,
    floating[::1] grad_out,
    double loss_scale,
    double grad_scale,
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
            spec, &x[start], &y[start],
            &weight[0], w_period, start % w_period,
            &pos_weight[0], pw_period, start % pw_period,
            stop - start,
            loss_ptr + start if loss_ptr != NULL else NULL,
            grad_ptr + start if grad_ptr != NULL else NULL,
            loss_scale, grad_scale,
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
):
    """Weighted terms of one elementwise loss, their block sums and, optionally, the
    terms themselves and the weighted derivatives with respect to x."""
    cdef Probs probs
    cdef Logits logits
    cdef KL kl
    cdef LogKL log_kl
    if x.shape[0] == 0:
        return
    logits.alpha = 1.0 - label_smoothing
    logits.beta = 0.5 * label_smoothing
    with nogil:
        if loss == LOSS_BCE:
            drive(&probs, x, target, weight, pos_weight, partials, loss_out, grad_out,
                  loss_scale, grad_scale, n_threads)
        elif loss == LOSS_BCE_WITH_LOGITS:
            drive(&logits, x, target, weight, pos_weight, partials, loss_out, grad_out,
                  loss_scale, grad_scale, n_threads)
        elif loss == LOSS_KL_DIV:
            drive(&kl, x, target, weight, pos_weight, partials, loss_out, grad_out,
                  loss_scale, grad_scale, n_threads)
        else:
            drive(&log_kl, x, target, weight, pos_weight, partials, loss_out, grad_out,
                  loss_scale, grad_scale, n_threads)


# --- the range of the values, for validation ---------------------------------------------

cdef void block_range(
    const floating* v, Py_ssize_t n, double* low, double* high,
) noexcept nogil:
    """min and max of v[0:n], NaN ignored (+inf and -inf if all are NaN): LANES running
    extremes compared lane by lane, then merged."""
    cdef floating lo[LANES]
    cdef floating hi[LANES]
    cdef floating value
    cdef Py_ssize_t i, j
    for j in range(LANES):
        lo[j] = INFINITY
        hi[j] = -INFINITY
    for i in range(n // LANES):
        for j in range(LANES):
            value = v[i * LANES + j]
            lo[j] = value if value < lo[j] else lo[j]
            hi[j] = value if value > hi[j] else hi[j]
    for i in range(n - n % LANES, n):
        value = v[i]
        lo[0] = value if value < lo[0] else lo[0]
        hi[0] = value if value > hi[0] else hi[0]
    for j in range(1, LANES):
        lo[0] = lo[j] if lo[j] < lo[0] else lo[0]
        hi[0] = hi[j] if hi[j] > hi[0] else hi[0]
    low[0] = lo[0]
    high[0] = hi[0]


def value_range(
    const floating[::1] v,      # IN (n,)
    double[::1] lows,           # OUT (ceil(n / BLOCK),): each block's minimum
    double[::1] highs,          # OUT (ceil(n / BLOCK),): each block's maximum
    int n_threads,
):
    """Each block's min and max, NaN ignored: one parallel pass over v, where NumPy's
    fmin and fmax reductions take two serial ones."""
    cdef Py_ssize_t n = v.shape[0], b, start
    with nogil:
        for b in prange(lows.shape[0], schedule="static", num_threads=n_threads):
            start = b * BLOCK
            block_range(&v[start], BLOCK if start + BLOCK < n else n - start,
                        &lows[b], &highs[b])


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
