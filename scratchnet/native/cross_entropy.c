/* The batch loops of the plain cross-entropy step (scratchnet/fast.py,
 * _PlainCrossEntropyStep) around torch's exp, row sum and log: the shift by
 * the row maximum, log p and the loss, and the fused backward's scaling and
 * target subtraction. They replace a handful of small torch and NumPy ops that
 * each cost microseconds inside a training step, and compute the same IEEE
 * operations in the same order, so the values are the same bit for bit
 * (tests/test_native.py):
 *
 *     shifted = z − max_j z_j        (torch.amax: a NaN in the row gives NaN)
 *     log p   = shifted − log Σ_j exp(shifted_j)    (the log Σ exp from torch)
 *     loss    = (1/B) Σ_i −log p_{i,y_i}, the sum in the order of aten's CPU
 *               nll_loss (the plan from scratchnet.nn.functional.vecmath.
 *               _cascade_plan: runs summed left to right, then carried up)
 *     dz      = p · (1/B), then dz_{i,y_i} += −1/B    (p = exp(log p) from torch)
 *
 * B = batch, C = classes; every array contiguous, row-major. Built like adam.c
 * (-ffp-contract=off: nothing fused).
 */
#include <stdint.h>

#define CASCADE_LEVELS 8 /* aten's nll_loss: vecmath._cascade_shape */

#define CROSS_ENTROPY(T)                                                           \
    /* z, shifted: (B, C). */                                                     \
    void scratchnet_shift_by_row_max_##T(const T *z, T *shifted, int64_t batch,  \
                                         int64_t classes) {                      \
        for (int64_t i = 0; i < batch; i++) {                                     \
            const T *row = z + i * classes;                                       \
            T max = row[0];                                                       \
            for (int64_t j = 1; j < classes; j++)                                 \
                if (row[j] > max || row[j] != row[j]) /* NaN stays */            \
                    max = row[j];                                                 \
            for (int64_t j = 0; j < classes; j++)                                 \
                shifted[i * classes + j] = row[j] - max;                          \
        }                                                                         \
    }                                                                             \
                                                                                  \
    /* shifted, log_probs: (B, C); log_sum, targets: (B,); plan: (runs, 3) of    \
     * (start, stop, carries). Writes log p and the mean, and returns -1; or     \
     * returns the first row whose target is not in [0, C), having written      \
     * nothing. */                                                               \
    int64_t scratchnet_nll_mean_##T(const T *shifted, const T *log_sum,          \
                                    T *log_probs, const int64_t *targets,        \
                                    int64_t batch, int64_t classes,              \
                                    const int64_t *plan, int64_t runs, T *mean) { \
        for (int64_t i = 0; i < batch; i++)                                       \
            if (targets[i] < 0 || targets[i] >= classes)                          \
                return i;                                                         \
        for (int64_t i = 0; i < batch; i++)                                       \
            for (int64_t j = 0; j < classes; j++)                                 \
                log_probs[i * classes + j] = shifted[i * classes + j] - log_sum[i]; \
        T partial[CASCADE_LEVELS] = {0};                                          \
        for (int64_t r = 0; r < runs; r++) {                                      \
            const int64_t start = plan[3 * r], stop = plan[3 * r + 1];            \
            const int64_t carries = plan[3 * r + 2];                              \
            T run = -log_probs[start * classes + targets[start]];                 \
            for (int64_t i = start + 1; i < stop; i++)                            \
                run = run + -log_probs[i * classes + targets[i]];                 \
            partial[0] = run + (T)0; /* as (0 + r₀) + r₁ + …: −0 becomes +0 */   \
            for (int64_t j = 0; j < carries; j++) {                               \
                partial[j + 1] = partial[j + 1] + partial[j];                     \
                partial[j] = 0;                                                   \
            }                                                                     \
        }                                                                         \
        T total = 0;                                                              \
        for (int j = 0; j < CASCADE_LEVELS; j++)                                  \
            total = total + partial[j];                                           \
        *mean = total / (T)batch;                                                 \
        return -1;                                                                \
    }                                                                             \
                                                                                  \
    /* dz: (B, C), p on entry, dz on return; targets: (B,), checked by the       \
     * forward. */                                                                \
    void scratchnet_nll_backward_##T(T *dz, const int64_t *targets,               \
                                     int64_t batch, int64_t classes,              \
                                     T inverse_batch) {                           \
        for (int64_t i = 0; i < batch * classes; i++)                             \
            dz[i] = dz[i] * inverse_batch;                                        \
        for (int64_t i = 0; i < batch; i++)                                       \
            dz[i * classes + targets[i]] = dz[i * classes + targets[i]]           \
                                           + -inverse_batch;                      \
    }

typedef float float32;
typedef double float64;
CROSS_ENTROPY(float32)
CROSS_ENTROPY(float64)
