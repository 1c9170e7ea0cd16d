/* The Linear layers' matrix products, split between threads by hand: each
 * thread calls the BLAS torch itself calls (MKL's sgemm_/dgemm_, looked up in
 * torch's library by scratchnet/native/gemm.py) on its own block of the output,
 * single-threaded (MKL runs one thread when called inside a parallel region).
 *
 *     C (m, n) = op(A) (m, k) · op(B) (k, n) [+ bias down every column]
 *
 * in BLAS's column-major terms: a row-major (r, c) buffer is the column-major
 * (c, r) matrix, so the forward out = x · Wᵀ + b is C = W' · x' with C = outᵀ
 * (m = D_out, n = B), and a split over m gives each thread some output
 * features, a split over n some batch rows (gemm.py says which product uses
 * which).
 *
 * Why: at batch 64 MKL's own two-thread split of these shapes runs at about
 * 75% of two single-thread calls on half the output each (benchmarks: README
 * "Speed"). Every element of C is still one BLAS dot product over k, so where
 * the split leaves MKL's kernel and its order over k unchanged the result is
 * torch.mm's bit for bit; MKL changes its kernel with the shape for some
 * (batch 1, ten outputs with two threads), so gemm.py compares each product
 * with torch's once per shape and thread count and uses a split only where it
 * is equal (the result depends on the shapes, not on the values or the
 * alignment: tests/test_native.py).
 *
 * The bias, where given, is copied into each thread's block first and the
 * product added to it (β = 1): what torch.addmm does (a copy of the expanded
 * bias, then the BLAS call with β = 1). A ReLU after the forward, or ReLU's
 * backward after dx = dout·W, runs on each block right after its product,
 * while it is in cache (the epilogue below): exact operations, the same as
 * torch's relu_ and fast.py's mask product. The weight gradient's call can
 * also sum dout over the batch, the bias's gradient, in the order of torch's
 * sum over dim 0 (column_sums below; gemm.py uses it only where it is equal).
 *
 * In float32, a block can instead run scratchnet's own loops (sgemm.h: the
 * order of MKL's sums for these shapes, and faster at batch 64), chosen by the
 * same probe: split | OWN_KERNEL.
 */
#include "sgemm.h"
#include "threads.h"

/* rows of C per block: one 64-byte cache line of float32. With m ≥ threads ·
 * SPLIT_ALIGN (gemm.py's SPLIT_MIN) block_start leaves no thread a sliver: a
 * single row or column is a matrix-vector product, for which BLAS takes
 * another kernel, with another order of its sums. */
#define SPLIT_ALIGN 16

enum { SPLIT_NONE = 0, SPLIT_M = 1, SPLIT_N = 2 };
/* or'ed into split: each block runs sgemm.h's loops instead of the BLAS call
 * (float32, where has_kernel says they were built; SPLIT_NONE | OWN_KERNEL: one
 * block on the calling thread) */
#define OWN_KERNEL 4

#define SUM_LEVELS 4  /* torch's cascade sum: levels of partial sums */
#define SUM_CHUNK 64  /* columns summed at a time: the partial sums stay in registers */

/* ⌈log2 x⌉ as torch's utils::CeilLog2 (1 for x ≤ 2). */
static int64_t ceil_log2(int64_t x) {
    int64_t bits = 0;
    if (x <= 2)
        return 1;
    for (x -= 1; x > 0; x >>= 1)
        bits++;
    return bits;
}

#define GEMM(NAME, T, OWN_BLOCK, HAS_OWN)                                          \
    typedef void (*NAME##_blas_t)(const char *, const char *, const int *,         \
                                  const int *, const int *, const T *, const T *,  \
                                  const int *, const T *, const int *, const T *,  \
                                  T *, const int *);                               \
    static NAME##_blas_t NAME##_blas;                                              \
                                                                                   \
    /* The ReLU beside the product, on columns [begin, end) of C (m rows, ld    \
     * ldc), while they are in this thread's cache:                             \
     *   relu: C ← relu(C) as torch.relu_ computes it: a negative becomes +0,   \
     *     NaN and −0 stay;                                                      \
     *   gate (laid out as C): C ← C · [gate > 0], as fast.py's ReLU backward   \
     *     dout.mul_(sign(out)) for gate = out ≥ 0: sign is 1 where out > 0 and  \
     *     +0 at ±0 and NaN, and the product is the same IEEE multiplication. */ \
    static void NAME##_epilogue(int64_t m, int64_t begin, int64_t end, int64_t ldc,   \
                                int relu, const T *gate, T *c) {                   \
        for (int64_t column = begin; column < end; column++) {                     \
            T *out = c + column * ldc;                                             \
            if (relu)                                                              \
                for (int64_t row = 0; row < m; row++)                              \
                    out[row] = out[row] < 0 ? (T)0 : out[row];                     \
            if (gate) {                                                            \
                const T *open = gate + column * ldc;                               \
                for (int64_t row = 0; row < m; row++)                              \
                    out[row] = out[row] * (open[row] > 0 ? (T)1 : (T)0);           \
            }                                                                      \
        }                                                                          \
    }                                                                              \
                                                                                   \
    /* sums[j] = Σ_i x[i·ld + j] over rows i < rows, for columns [begin, end)  \
     * (x: a row-major (rows, ·) buffer, row stride ld), in the order of torch's \
     * CPU sum over dim 0 (aten's cascade sum for a reduction over an outer     \
     * dimension): runs of 2^p rows added left to right into level 0, p =       \
     * max(4, ⌈log2 rows⌉ / 4); after each run level j - 1 is added into level j \
     * and cleared, for j = 1, 2, … while the run's end has p zero bits there;  \
     * the rows left over go into level 0, and the levels are added up from     \
     * level 0. Each column's sum is on its own, so blocks of columns may go to \
     * any thread. */                                                           \
    static void NAME##_column_sums(const T *x, int64_t rows, int64_t ld,           \
                                   int64_t begin, int64_t end, T *sums) {          \
        int64_t power = ceil_log2(rows) / SUM_LEVELS;                              \
        if (power < 4)                                                             \
            power = 4;                                                             \
        const int64_t run = (int64_t)1 << power, mask = run - 1;                   \
        for (int64_t first = begin; first < end; first += SUM_CHUNK) {             \
            const int64_t width = end - first < SUM_CHUNK ? end - first : SUM_CHUNK; \
            T level[SUM_LEVELS][SUM_CHUNK] = {{0}};                                \
            const T *column = x + first;                                           \
            int64_t row = 0;                                                       \
            while (row + run <= rows) {                                            \
                for (int64_t stop = row + run; row < stop; row++)                  \
                    for (int64_t j = 0; j < width; j++)                            \
                        level[0][j] += column[row * ld + j];                       \
                for (int up = 1; up < SUM_LEVELS; up++) {                          \
                    for (int64_t j = 0; j < width; j++) {                          \
                        level[up][j] += level[up - 1][j];                          \
                        level[up - 1][j] = 0;                                      \
                    }                                                              \
                    if (row & (mask << (up * power)))                              \
                        break;                                                     \
                }                                                                  \
            }                                                                      \
            for (; row < rows; row++)                                              \
                for (int64_t j = 0; j < width; j++)                                \
                    level[0][j] += column[row * ld + j];                           \
            for (int up = 1; up < SUM_LEVELS; up++)                                \
                for (int64_t j = 0; j < width; j++)                                \
                    level[0][j] += level[up][j];                                   \
            for (int64_t j = 0; j < width; j++)                                    \
                sums[first + j] = level[0][j];                                     \
        }                                                                          \
    }                                                                              \
                                                                                   \
    static void NAME##_block(int own, char trans_a, char trans_b, int m, int n,    \
                             int k, const T *a, int lda, const T *b, int ldb,      \
                             const T *bias, T *c, int ldc) {                       \
        const T one = 1, beta = bias ? 1 : 0;                                      \
        if (own && HAS_OWN) {                                                      \
            OWN_BLOCK(trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, c, ldc);    \
            return;                                                                \
        }                                                                          \
        if (bias)                                                                  \
            for (int64_t column = 0; column < n; column++)                         \
                for (int64_t row = 0; row < m; row++)                              \
                    c[column * ldc + row] = bias[row];                             \
        NAME##_blas(&trans_a, &trans_b, &m, &n, &k, &one, a, &lda, b, &ldb, &beta, \
                    c, &ldc);                                                      \
    }                                                                              \
                                                                                   \
    /* The BLAS routine: torch's sgemm_ / dgemm_ (Fortran interface, 32-bit    \
     * sizes). Returns 0. */                                                       \
    int NAME##_set_blas(void *routine) {                                           \
        NAME##_blas = (NAME##_blas_t)routine;                                      \
        return 0;                                                                  \
    }                                                                              \
                                                                                   \
    /* 1 where sgemm.h's loops were built for T (split | OWN_KERNEL runs them), \
     * else 0 (OWN_KERNEL is then ignored: BLAS runs every block). */           \
    int NAME##_has_kernel(void) { return HAS_OWN; }                                \
                                                                                   \
    /* trans_a, trans_b: 'N' or 'T' as BLAS takes them; split: SPLIT_NONE (one \
     * BLAS call on BLAS's own threads), SPLIT_M (blocks of rows of C,          \
     * SPLIT_ALIGN rows at a time) or SPLIT_N (blocks of columns), between      \
     * `threads` threads; relu, gate: the epilogue above (0 / NULL: none); then \
     * the pointers (bias: (m,) or NULL), last so that gemm.py binds the rest   \
     * once. b_sums (n,) or NULL: with trans_b 'T', op(B) (k, n) is a row-major \
     * (k, n) buffer with row stride ldb, and b_sums its column sums over k     \
     * (column_sums: in the weight gradient, dbias = Σ_batch dout). */           \
    void NAME(char trans_a, char trans_b, int m, int n, int k, int lda, int ldb,   \
              int ldc, int split, int threads, int relu, const T *a, const T *b,   \
              const T *bias, const T *gate, T *c, T *b_sums) {                     \
        const int epilogue = relu || gate, own = split & OWN_KERNEL;               \
        split &= ~OWN_KERNEL;                                                      \
        if (split == SPLIT_NONE || threads <= 1) {                                 \
            NAME##_block(own, trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, c,  \
                         ldc);                                                     \
            if (!epilogue && !b_sums)                                              \
                return;                                                            \
            _Pragma("omp parallel num_threads(threads)")                           \
            {                                                                      \
                int64_t thread = 0, thread_count = 1;                              \
                THREAD_SLOT(thread, thread_count);                                 \
                const int64_t begin = block_start(thread, thread_count, n, 1);     \
                const int64_t end = block_start(thread + 1, thread_count, n, 1);   \
                if (epilogue)                                                      \
                    NAME##_epilogue(m, begin, end, ldc, relu, gate, c);            \
                if (b_sums)                                                        \
                    NAME##_column_sums(b, k, ldb, begin, end, b_sums);             \
            }                                                                      \
            return;                                                                \
        }                                                                          \
        _Pragma("omp parallel num_threads(threads)")                               \
        {                                                                          \
            int64_t thread = 0, thread_count = 1;                                  \
            THREAD_SLOT(thread, thread_count);                                     \
            if (b_sums)                                                            \
                NAME##_column_sums(b, k, ldb,                                      \
                                   block_start(thread, thread_count, n, 1),        \
                                   block_start(thread + 1, thread_count, n, 1),    \
                                   b_sums);                                        \
            const int64_t total = split == SPLIT_M ? m : n;                        \
            const int64_t align = split == SPLIT_M ? SPLIT_ALIGN : 1;              \
            const int64_t begin = block_start(thread, thread_count, total, align); \
            const int64_t end = block_start(thread + 1, thread_count, total, align); \
            if (begin < end && split == SPLIT_M) { /* rows of C: of op(A), bias */ \
                NAME##_block(own, trans_a, trans_b, (int)(end - begin), n, k,      \
                             trans_a == 'N' ? a + begin : a + begin * lda, lda, b, \
                             ldb, bias ? bias + begin : bias, c + begin, ldc);     \
                if (epilogue)                                                      \
                    NAME##_epilogue(end - begin, 0, n, ldc, relu,                  \
                                    gate ? gate + begin : gate, c + begin);        \
            } else if (begin < end) { /* columns of C: of op(B) */                 \
                NAME##_block(own, trans_a, trans_b, m, (int)(end - begin), k, a,   \
                             lda, trans_b == 'N' ? b + begin * ldb : b + begin,    \
                             ldb,                                                  \
                             bias, c + begin * ldc, ldc);                          \
                if (epilogue)                                                      \
                    NAME##_epilogue(m, begin, end, ldc, relu, gate, c);            \
            }                                                                      \
        }                                                                          \
    }

/* float64 has no loops of its own (MKL's dgemm takes another order): a stub the
 * dead branch compiles against */
static void no_dgemm_block(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k,
                           const double *a, int64_t lda, const double *b, int64_t ldb,
                           const double *bias, double *c, int64_t ldc) {
    (void)trans_a, (void)trans_b, (void)m, (void)n, (void)k, (void)a, (void)lda;
    (void)b, (void)ldb, (void)bias, (void)c, (void)ldc;
}

GEMM(scratchnet_gemm_float32, float, sgemm_block, SGEMM_KERNEL)
GEMM(scratchnet_gemm_float64, double, no_dgemm_block, 0)

/* sgemm.h's order one element at a time, for the tests (tests/test_native.py
 * checks the vector loops against it); the arguments as the loop above takes
 * them. */
void scratchnet_sgemm_reference(char trans_a, char trans_b, int m, int n, int k, int lda,
                                int ldb, int ldc, const float *a, const float *b,
                                const float *bias, float *c) {
    sgemm_reference(trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, c, ldc);
}
