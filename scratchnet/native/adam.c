/* Adam's update without AMSGrad, maximize or L2 weight decay (AdamW's
 * decoupled decay included) as one loop over the flat buffers: each element's
 * θ, g, m, v read once and θ, m, v written once, instead of the seven passes of
 * the eager flat update.
 *
 *     θ ← θ·(1 - γλ)                            (torch's mul_; 1 without decay)
 *     m ← β₁m + (1-β₁)g                         (torch's lerp_)
 *     v ← β₂v + (1-β₂)g²                        (torch's mul_ then addcmul_)
 *     θ ← θ - γ/(1-β₁ᵗ) · m / (√v/√(1-β₂ᵗ) + ε)  (torch's sqrt, div_, add_, addcdiv_)
 *
 * Built by scratchnet/native/__init__.py with -ffp-contract=off, so every
 * operation below rounds on its own except the two written as fma: torch's
 * eager CPU kernels round those two as one fused multiply-add (its vectorized
 * lerp is fma(w, g - m, m), or fma(w - 1, g - m, g) for w ≥ 0.5; its addcmul
 * is fma((1-β₂)·g, g, β₂v)). m and v then equal the eager update's bit for bit.
 * √v is correctly rounded here and not always in torch's eager CPU sqrt, so θ
 * may differ in its last bit; with a correctly rounded √ in the eager formula,
 * θ is equal bit for bit (tests/test_native.py). The step counters are advanced
 * here and the bias corrections computed in double, with the C library's pow
 * that Python's ** calls, then every scalar is rounded to the buffers' type, as
 * the eager kernels round their Python-float arguments.
 *
 * Threads: the buffers are split into `threads` contiguous slices, one per
 * thread, on torch's OpenMP pool (the library is linked against the libgomp
 * torch has already loaded). Hand-split slices measured faster inside a
 * training step than `omp parallel for` (benchmarks: README "Speed").
 */
#include <math.h>
#include <stdint.h>

#include "threads.h"

#define SLICE_ALIGN 16 /* elements: one 64-byte cache line of float32 */

#define ADAM_LOOP(NAME, T, FMA, SQRT)                                              \
    static void NAME##_slice(T *restrict param, const T *restrict grad,           \
                             T *restrict exp_avg, T *restrict exp_avg_sq,         \
                             int64_t begin, int64_t end, T weight, T beta2,       \
                             T one_minus_beta2, T minus_step_size,                \
                             T bias_correction2_sqrt, T eps, T decay) {           \
        const int small_weight = fabs((double)weight) < 0.5; /* torch's lerp */  \
        const T lerp_coefficient = small_weight ? weight : weight - 1;            \
        _Pragma("omp simd")                                                       \
        for (int64_t i = begin; i < end; i++) {                                   \
            const T g = grad[i];                                                  \
            const T m = FMA(lerp_coefficient, g - exp_avg[i],                     \
                            small_weight ? exp_avg[i] : g);                       \
            const T v = FMA(one_minus_beta2 * g, g, exp_avg_sq[i] * beta2);       \
            const T denom = SQRT(v) / bias_correction2_sqrt + eps; /* √v̂ + ε */  \
            exp_avg[i] = m;                                                       \
            exp_avg_sq[i] = v;                                                    \
            param[i] = param[i] * decay + (minus_step_size * m) / denom;          \
        }                                                                         \
    }                                                                             \
                                                                                  \
    /* param, grad, exp_avg, exp_avg_sq: (n,) each, contiguous, not overlapping; \
     * steps: the parameters' (P,) step counters, float32 or (steps_double)      \
     * float64, advanced by one here; then, with t the new step, every scalar   \
     * in double as torch's Python computes it, rounded to T as its kernels     \
     * round their arguments. weight_decay: AdamW's λ (0: none). */            \
    void NAME(T *restrict param, const T *restrict grad, T *restrict exp_avg,     \
              T *restrict exp_avg_sq, int64_t n, void *steps, int steps_double,   \
              int64_t parameter_count, double lr, double beta1, double beta2,     \
              double eps, double weight_decay, int threads) {                     \
        const double t = advance_steps(steps, steps_double, parameter_count);     \
        const T weight = (T)(1 - beta1);                                          \
        const T minus_step_size = (T)(-(lr / (1 - pow(beta1, t)))); /* -γ/(1-β₁ᵗ) */ \
        const T bias_correction2_sqrt = (T)pow(1 - pow(beta2, t), 0.5); /* as ** 0.5 */ \
        const T decay = (T)(1 - lr * weight_decay); /* 1-γλ */                  \
        _Pragma("omp parallel num_threads(threads)")                              \
        {                                                                         \
            int64_t thread = 0, thread_count = 1;                                 \
            THREAD_SLOT(thread, thread_count);                                    \
            const int64_t begin = block_start(thread, thread_count, n, SLICE_ALIGN); \
            const int64_t end = block_start(thread + 1, thread_count, n, SLICE_ALIGN); \
            if (begin < end)                                                      \
                NAME##_slice(param, grad, exp_avg, exp_avg_sq, begin, end,        \
                             weight, (T)beta2, (T)(1 - beta2), minus_step_size,   \
                             bias_correction2_sqrt, (T)eps, decay);               \
        }                                                                         \
    }

/* t ← t + 1 for each of the P counters (in their own precision, as torch's
 * `step += 1`); returns the first, the step all of them share. */
static double advance_steps(void *steps, int steps_double, int64_t count) {
    if (steps_double) {
        double *counters = steps;
        for (int64_t i = 0; i < count; i++)
            counters[i] = counters[i] + 1;
        return counters[0];
    }
    float *counters = steps;
    for (int64_t i = 0; i < count; i++)
        counters[i] = counters[i] + 1.0f;
    return (double)counters[0];
}

ADAM_LOOP(scratchnet_adam_float32, float, fmaf, sqrtf)
ADAM_LOOP(scratchnet_adam_float64, double, fma, sqrt)
