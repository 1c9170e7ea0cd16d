/* scratchnet's own float32 matrix product for gemm.c's blocks, in the order of
 * sums MKL's sgemm takes for the seed MLP's products, so that where gemm.py's
 * probe finds it equal to torch.mm it is torch's result bit for bit, and faster
 * (AVX-512 only; included by gemm.c).
 *
 *     C (m, n) = [bias down every column +] op(A) (m, k) · op(B) (k, n)
 *
 * column-major, as BLAS takes it (gemm.c says how the row-major buffers map).
 * The order, per element of C: k is cut into chunks of SGEMM_KC; each chunk's
 * products are summed by a chain of fused multiply-adds from +0,
 *
 *     s_q = fma(a_p, b_p, … fma(a_p0+1, b_p0+1, fma(a_p0, b_p0, +0)))   (p in order)
 *
 * and the chunks are added to C in turn: C = s_0 (or bias + s_0), then
 * C = C + s_1, C = C + s_2, … Measured against torch.mm and torch.addmm (MKL,
 * one thread or two) on random values: this is MKL's result bit for bit for the
 * seed MLP's products at batch 64 (784→512, 512→512: forward, weight and input
 * gradients; the ten-output products take other kernels) and at most other
 * shapes tried; gemm.py uses it only where its probe finds it equal, as for the
 * splits. sgemm_reference below is the same order one element at a time:
 * tests/test_native.py checks the vector loops against it at every shape.
 *
 * Why: at batch 64 on this project's 2-core AVX-512 machine MKL's sgemm runs
 * these shapes at 75-95 GFLOP/s of the core's 117; the loops below run them
 * at 0.8-0.9× MKL's time, forward and gradients (README "Speed").
 *
 * Two loops, by which operand has its elements along C's columns of m in a row:
 *   op(A) not transposed (the weight and input gradients): vectors of 16 rows of
 *     C are op(A)'s columns, read in place; op(B)'s elements are broadcast.
 *     A tile of SGEMM_COLUMNS columns × 16·SGEMM_VECTORS rows of C per pass over
 *     a chunk, in registers, then added to C.
 *   op(A) transposed, op(B) not (the forward): op(B) is copied transposed into a
 *     per-thread buffer, so that its elements along C's rows lie in a row; a tile
 *     of SGEMM_ROWS rows × 16·SGEMM_VECTORS columns, kept in a small buffer
 *     across the chunks, then written to C transposed.
 * Tails (sizes not a multiple of the tile) are masked or computed on a repeated
 * last row or column that is not stored: the order of every element's sum is
 * the same everywhere. */
#ifndef SCRATCHNET_SGEMM_H
#define SCRATCHNET_SGEMM_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define SGEMM_KC 192 /* MKL's chunk of k for these shapes (float32, this MKL) */

/* C = [bias +] op(A)·op(B) in the order above, one element at a time: the
 * specification, and the fallback where the copy buffer cannot be allocated. */
static void sgemm_reference(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k,
                            const float *a, int64_t lda, const float *b, int64_t ldb,
                            const float *bias, float *c, int64_t ldc) {
    for (int64_t column = 0; column < n; column++)
        for (int64_t row = 0; row < m; row++) {
            float total = bias ? bias[row] : 0.0f;
            for (int64_t p0 = 0; p0 < k; p0 += SGEMM_KC) {
                float sum = 0.0f;
                for (int64_t p = p0; p < k && p < p0 + SGEMM_KC; p++) {
                    const float x = trans_a == 'N' ? a[row + p * lda] : a[p + row * lda];
                    const float y = trans_b == 'N' ? b[p + column * ldb] : b[column + p * ldb];
                    sum = fmaf(x, y, sum);
                }
                total = p0 == 0 && !bias ? sum : total + sum;
            }
            c[row + column * ldc] = total;
        }
}

#ifdef __AVX512F__
#include <immintrin.h>

#define SGEMM_KERNEL 1
#define SGEMM_VECTORS 4 /* vectors of 16 floats along a tile's long side */
#define SGEMM_COLUMNS 6 /* columns of C per tile, op(A) not transposed */
#define SGEMM_ROWS 6    /* rows of C per tile, the forward's */

/* lanes [0, left) of a vector of 16 */
static inline __mmask16 sgemm_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
}

/* One chunk [p0, p0 + kc) of C (m, n) += / = op(A)·op(B), op(A) not
 * transposed: op(A)[r, p] = a[r + p·lda], op(B)[p, c] = b[p·b_p + c·b_c]
 * (a, b at the chunk's start). first: C = [bias +] s_0, else C = C + s_q. */
static void sgemm_chunk_columns(int64_t m, int64_t n, int64_t kc, const float *a,
                                int64_t lda, const float *b, int64_t b_p, int64_t b_c,
                                const float *bias, int first, float *c, int64_t ldc) {
    for (int64_t r0 = 0; r0 < m; r0 += 16 * SGEMM_VECTORS) {
        __mmask16 mask[SGEMM_VECTORS];
        for (int v = 0; v < SGEMM_VECTORS; v++)
            mask[v] = sgemm_mask(m - r0 - 16 * v);
        for (int64_t c0 = 0; c0 < n; c0 += SGEMM_COLUMNS) {
            const float *column[SGEMM_COLUMNS]; /* past n: the last again, not stored */
            for (int j = 0; j < SGEMM_COLUMNS; j++)
                column[j] = b + (c0 + j < n ? c0 + j : n - 1) * b_c;
            __m512 sum[SGEMM_COLUMNS][SGEMM_VECTORS];
            for (int j = 0; j < SGEMM_COLUMNS; j++)
                for (int v = 0; v < SGEMM_VECTORS; v++)
                    sum[j][v] = _mm512_setzero_ps();
            const float *rows = a + r0;
            for (int64_t p = 0; p < kc; p++, rows += lda) {
                __m512 x[SGEMM_VECTORS];
                for (int v = 0; v < SGEMM_VECTORS; v++)
                    x[v] = _mm512_maskz_loadu_ps(mask[v], rows + 16 * v);
                for (int j = 0; j < SGEMM_COLUMNS; j++) {
                    const __m512 y = _mm512_set1_ps(column[j][p * b_p]);
                    for (int v = 0; v < SGEMM_VECTORS; v++) /* fma(x, y, 0) = x·y */
                        sum[j][v] = _mm512_fmadd_ps(x[v], y, sum[j][v]);
                }
            }
            /* through memory: indexing the registers below would keep them there */
            float tile[SGEMM_COLUMNS][16 * SGEMM_VECTORS];
            for (int j = 0; j < SGEMM_COLUMNS; j++)
                for (int v = 0; v < SGEMM_VECTORS; v++)
                    _mm512_storeu_ps(&tile[j][16 * v], sum[j][v]);
            for (int j = 0; j < SGEMM_COLUMNS && c0 + j < n; j++) {
                float *out = c + (c0 + j) * ldc + r0;
                for (int v = 0; v < SGEMM_VECTORS; v++) {
                    if (!mask[v])
                        continue;
                    const __m512 s = _mm512_loadu_ps(&tile[j][16 * v]);
                    __m512 total = s;
                    if (!first)
                        total = _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], out + 16 * v), s);
                    else if (bias)
                        total = _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], bias + r0 + 16 * v), s);
                    _mm512_mask_storeu_ps(out + 16 * v, mask[v], total);
                }
            }
        }
    }
}

/* dst[i·ld_dst + j] = src[j·ld_src + i] for i, j < 16: a 16 × 16 block
 * transposed in registers (pairs of lanes, then of pairs, then of 128-bit
 * quarters, twice), to copy op(B) for the forward. */
static inline void sgemm_transpose16(const float *src, int64_t ld_src, float *dst,
                                     int64_t ld_dst) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++)
        r[i] = _mm512_loadu_ps(src + i * ld_src);
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 4; i++) {
            t[8 * h + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + 4 + i], 0x88);
            t[8 * h + 4 + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + 4 + i], 0xDD);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
        r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xDD);
    }
    for (int i = 0; i < 16; i++)
        _mm512_storeu_ps(dst + i * ld_dst, r[i]);
}

/* The forward's C = [bias +] op(A)·op(B), op(A)[r, p] = a[p + r·lda] and
 * op(B)[p, c] = b[p + c·ldb]: per block of 16·SGEMM_VECTORS columns, op(B)'s
 * block is copied to packed[p][c], then each tile of SGEMM_ROWS rows runs the
 * chunks. Returns 0, or -1 if the buffer could not be allocated. */
static int sgemm_transposed(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                            const float *b, int64_t ldb, const float *bias, float *c,
                            int64_t ldc) {
    enum { WIDTH = 16 * SGEMM_VECTORS };
    static __thread float *packed; /* per thread, kept: k × WIDTH floats */
    static __thread size_t packed_floats;
    if ((size_t)k * WIDTH > packed_floats) {
        float *grown = realloc(packed, (size_t)k * WIDTH * sizeof(float));
        if (!grown)
            return -1;
        packed = grown;
        packed_floats = (size_t)k * WIDTH;
    }
    for (int64_t c0 = 0; c0 < n; c0 += WIDTH) {
        const int64_t width = n - c0 < WIDTH ? n - c0 : WIDTH;
        const int64_t whole_j = width / 16 * 16, whole_p = k / 16 * 16;
        for (int64_t j0 = 0; j0 < whole_j; j0 += 16) /* 16 × 16 blocks in registers */
            for (int64_t p0 = 0; p0 < whole_p; p0 += 16)
                sgemm_transpose16(b + p0 + (c0 + j0) * ldb, ldb, packed + p0 * WIDTH + j0,
                                  WIDTH);
        for (int64_t p = 0; p < k; p++) { /* the rest, and zeros past the width */
            float *row = packed + p * WIDTH;
            for (int64_t j = p < whole_p ? whole_j : 0; j < WIDTH; j++)
                row[j] = j < width ? b[p + (c0 + j) * ldb] : 0.0f;
        }
        for (int64_t r0 = 0; r0 < m; r0 += SGEMM_ROWS) {
            const float *row[SGEMM_ROWS]; /* past m: the last again, not stored */
            for (int i = 0; i < SGEMM_ROWS; i++)
                row[i] = a + (r0 + i < m ? r0 + i : m - 1) * lda;
            float tile[SGEMM_ROWS][WIDTH];
            for (int64_t p0 = 0; p0 < k; p0 += SGEMM_KC) {
                const int64_t end = k - p0 < SGEMM_KC ? k : p0 + SGEMM_KC;
                __m512 sum[SGEMM_ROWS][SGEMM_VECTORS];
                for (int i = 0; i < SGEMM_ROWS; i++)
                    for (int v = 0; v < SGEMM_VECTORS; v++)
                        sum[i][v] = _mm512_setzero_ps();
                const float *y = packed + p0 * WIDTH;
                for (int64_t p = p0; p < end; p++, y += WIDTH) {
                    __m512 ys[SGEMM_VECTORS];
                    for (int v = 0; v < SGEMM_VECTORS; v++)
                        ys[v] = _mm512_loadu_ps(y + 16 * v);
                    for (int i = 0; i < SGEMM_ROWS; i++) {
                        const __m512 x = _mm512_set1_ps(row[i][p]);
                        for (int v = 0; v < SGEMM_VECTORS; v++)
                            sum[i][v] = _mm512_fmadd_ps(x, ys[v], sum[i][v]);
                    }
                }
                for (int i = 0; i < SGEMM_ROWS; i++) {
                    const int64_t r = r0 + i < m ? r0 + i : m - 1;
                    for (int v = 0; v < SGEMM_VECTORS; v++) {
                        __m512 total = sum[i][v];
                        if (p0)
                            total = _mm512_add_ps(_mm512_loadu_ps(&tile[i][16 * v]), total);
                        else if (bias)
                            total = _mm512_add_ps(_mm512_set1_ps(bias[r]), total);
                        _mm512_storeu_ps(&tile[i][16 * v], total);
                    }
                }
            }
            const int rows = m - r0 < SGEMM_ROWS ? (int)(m - r0) : SGEMM_ROWS;
            for (int64_t j = 0; j < width; j++) /* each column's rows in a row */
                for (int i = 0; i < rows; i++)
                    c[r0 + i + (c0 + j) * ldc] = tile[i][j];
        }
    }
    return 0;
}

/* gemm.c's block, on these loops: op(A) transposed and op(B) not (the forward)
 * through the copy; op(A) not transposed chunk by chunk; op(A) and op(B) both
 * transposed (no Linear's product) in the reference order. */
static void sgemm_block(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k,
                        const float *a, int64_t lda, const float *b, int64_t ldb,
                        const float *bias, float *c, int64_t ldc) {
    if (k == 0 || (trans_a == 'T' && trans_b == 'T')) {
        sgemm_reference(trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, c, ldc);
        return;
    }
    if (trans_a == 'T') {
        if (sgemm_transposed(m, n, k, a, lda, b, ldb, bias, c, ldc))
            sgemm_reference(trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, c, ldc);
        return;
    }
    for (int64_t p0 = 0; p0 < k; p0 += SGEMM_KC) {
        const int64_t kc = k - p0 < SGEMM_KC ? k - p0 : SGEMM_KC;
        if (trans_b == 'T') /* op(B)[p, c] = b[c + p·ldb] */
            sgemm_chunk_columns(m, n, kc, a + p0 * lda, lda, b + p0 * ldb, ldb, 1, bias,
                                p0 == 0, c, ldc);
        else /* op(B)[p, c] = b[p + c·ldb] */
            sgemm_chunk_columns(m, n, kc, a + p0 * lda, lda, b + p0, 1, ldb, bias,
                                p0 == 0, c, ldc);
    }
}

#else /* no AVX-512: the kernel is not offered (gemm.py asks has_kernel) */
#define SGEMM_KERNEL 0
static void sgemm_block(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k,
                        const float *a, int64_t lda, const float *b, int64_t ldb,
                        const float *bias, float *c, int64_t ldc) {
    sgemm_reference(trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, c, ldc);
}
#endif

#endif
