/*
 * Packed-operand GEMM for the recurrences' per-step products: see fr_gemm.h for the contract
 * and the packed layout.
 *
 * Design (BLIS-style, A not packed):
 *   - B is packed once per pass in 64-byte column panels (K rows of one cache line each).
 *   - A register-blocked micro-kernel computes an MR x (NV vectors) tile of C: per k it loads
 *     NV vectors of B, broadcasts MR elements of A (the rows of A are read in place, strided:
 *     only the broadcast touches them, so packing A would not pay) and issues MR*NV FMAs
 *     into accumulators that stay in registers for the whole k-block.
 *       AVX-512: 8 x 3 zmm (48 float / 24 double columns; 24 accumulators), 12 x 2 zmm and
 *                16 x 1 zmm for the panels left over, so that M = 4H with H a multiple of 16
 *                is covered by 3-panel and 2-panel groups only;
 *       AVX2:    6 x 2 ymm (16 float / 8 double columns, one panel; 12 accumulators);
 *       portable C: one row x one panel, vectorised by the compiler for the baseline ISA.
 *     Every element of C is summed in the same order (k by k, one FMA chain per k-block),
 *     whatever N and whichever tile its row falls in: a row's result does not depend on the
 *     batch it comes in (scikit-learn's subset-invariance check holds bit for bit). So small
 *     tiles (N = 1, 2) do not split k over two accumulator sets to hide the FMA latency.
 *   - Loops, outermost first (BLIS's order, A in place of BLIS's packed A):
 *       column blocks of C small enough to stay in L2 (N x ncb*W elements, <= 512 KiB),
 *       k-blocks of at most KC = 128 rows (balanced): A's slab (N x kc, <= 128 KiB for
 *         float32, N <= 256) comes from memory once per column block, then from L2,
 *       panel groups: the group's B block (kc x 3 panels = 24 KiB) stays in L1 while every
 *         row block of A streams past it,
 *       row blocks of MR rows (balanced, so there is no tiny remainder): the micro-kernel.
 *     Later k-blocks accumulate into C (then an L2-resident partial sum).
 *   - Column edges: the packed panels are zero-padded, so the micro-kernel always multiplies
 *     whole vectors and only masks C's loads and stores in the last group.
 *   - A packed B larger than 1 MiB (W_s at H = 1024: 16 MiB, streamed from L3 at every step)
 *     has the next group's block prefetched into L2 while the current group computes, a share
 *     of its lines per row block (measured, one core, T = 100 steps: 128 x 1024 x 4096 and
 *     128 x 4096 x 1024 1.10-1.22x and 1.04-1.10x faster; smaller B stay in L2, none issued).
 *   - fr_gemm_tn (C = A^T B, the merged weight gradients over all N*T rows): the same
 *     micro-kernel reading A transposed (at each k, MR contiguous elements of A's row k) and
 *     the same loops, B packed a group's block at a time into a stack buffer just before use.
 *     It beats OpenBLAS only on small products (dW (64, 256) over 1600 rows 1.2x, (32, 256)
 *     1.3-1.5x); from ~10^9 multiply-adds OpenBLAS is as fast or faster (its A slab is not
 *     re-read per column block), so the cells use it below 2**28 (fastrnn/_gemm.pxd).
 * Compiled for each ISA with target attributes (no -march flags, so the extension runs on any
 * x86-64) and chosen once with __builtin_cpu_supports; elsewhere only the portable C is built.
 * No -ffast-math anywhere: the FMAs are explicit intrinsics, NaN/inf propagate.
 */
#include "fr_gemm.h"

#include <limits.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(FASTRNN_NO_SIMD_GEMM)
#define FR_GEMM_X86 1
#include <immintrin.h>
#else
#define FR_GEMM_X86 0
#endif

#define FR_PANEL_F32 (FR_GEMM_PANEL_BYTES / 4)   /* 16 columns */
#define FR_PANEL_F64 (FR_GEMM_PANEL_BYTES / 8)   /*  8 columns */

/* k-block length: KC rows of a 3-panel group are KC * 192 bytes of B; 128 -> 24 KiB, which
 * leaves room in a 32 KiB (Zen 4) or 48 KiB (Sapphire Rapids) L1d for A's rows and C. */
#define FR_KC 128
/* C's column block: N x (ncb panels) elements of at most this many bytes (half a Zen 4 L2). */
#define FR_C_BLOCK_BYTES (512 * 1024)
/* 1: software-prefetch the next block of packed B into L2 while a group computes (the packed
 * W_s of a large cell, 16 MiB at H = 1024, is streamed from L3 at every step). */
#ifndef FR_PREFETCH_B
#define FR_PREFETCH_B 1
#endif
/* ... for a packed B larger than this (half a Sapphire Rapids / Zen 4 L2: smaller ones stay) */
#define FR_PREFETCH_B_BYTES (1024 * 1024)
/* 1: software-prefetch the next k-block's slab of A into L2 (for K >> 128 with cold, far
 * apart rows of A). Off until measured on a quiet machine. */
#ifndef FR_PREFETCH_A
#define FR_PREFETCH_A 0
#endif

/* ------------------------------------------------------------------------------------------ */
/* Packing (plain C: it runs once per pass, O(K*M) against the pass's O(T*N*K*M)).           */

#define FR_DEFINE_PACK(T, SFX, W)                                                             \
                                                                                              \
size_t fr_packed_size_##SFX(ptrdiff_t K, ptrdiff_t M)                                         \
{                                                                                             \
    /* K rows of ceil(M / W) panels of W columns */                                           \
    if (K <= 0 || M <= 0)                                                                     \
        return 0;                                                                             \
    return (size_t)K * (size_t)((M + W - 1) / W) * W;                                         \
}                                                                                             \
                                                                                              \
void fr_pack_b_##SFX(const T *B, ptrdiff_t ldb, ptrdiff_t K, ptrdiff_t M, int trans, T *Bp)   \
{                                                                                             \
    /* Bp[(p*K + k)*W + c] = op(B)[k, p*W + c] (0 past column M), op(B) (K x M):              \
     * trans 0: op(B)[k, j] = B[k*ldb + j]  (B stored K x M);                                 \
     * trans 1: op(B)[k, j] = B[j*ldb + k]  (B stored M x K, i.e. op(B) = B^T). */             \
    if (K <= 0 || M <= 0)                                                                     \
        return;                                                                               \
    const ptrdiff_t np = (M + W - 1) / W;                                                     \
    for (ptrdiff_t p = 0; p < np; ++p) {                                                      \
        T *restrict P = Bp + p * K * W;                                                       \
        const ptrdiff_t j0 = p * W;                                                           \
        const ptrdiff_t w = M - j0 < W ? M - j0 : W;  /* real columns in this panel */        \
        if (!trans) {                                                                         \
            for (ptrdiff_t k = 0; k < K; ++k) {                                               \
                const T *restrict src = B + k * ldb + j0;                                     \
                for (ptrdiff_t c = 0; c < w; ++c)                                             \
                    P[k * W + c] = src[c];                                                    \
                for (ptrdiff_t c = w; c < W; ++c)                                             \
                    P[k * W + c] = 0;                                                         \
            }                                                                                 \
        } else {                                                                              \
            /* column c of the panel is row j0 + c of the stored B: read it contiguously */   \
            for (ptrdiff_t c = 0; c < w; ++c) {                                               \
                const T *restrict src = B + (j0 + c) * ldb;                                   \
                for (ptrdiff_t k = 0; k < K; ++k)                                             \
                    P[k * W + c] = src[k];                                                    \
            }                                                                                 \
            for (ptrdiff_t k = 0; k < K; ++k)                                                 \
                for (ptrdiff_t c = w; c < W; ++c)                                             \
                    P[k * W + c] = 0;                                                         \
        }                                                                                     \
    }                                                                                         \
}

FR_DEFINE_PACK(float, f32, FR_PANEL_F32)
FR_DEFINE_PACK(double, f64, FR_PANEL_F64)

/* ------------------------------------------------------------------------------------------ */
/* Portable C: C[i, panel] = beta*C + A[i, :] @ Bp[panel], one row x one panel at a time;     */
/* the W-wide inner loops vectorise for the baseline ISA (SSE2 on x86-64).                    */

#define FR_DEFINE_GENERIC(T, SFX, W)                                                          \
                                                                                              \
static void gemm_generic_##SFX(ptrdiff_t N, ptrdiff_t M, ptrdiff_t K, const T *A,             \
                               ptrdiff_t lda, const T *Bp, T beta, T *C, ptrdiff_t ldc)       \
{                                                                                             \
    /* C (N x M) = A (N x K) @ B (K x M) + beta * C, B packed (K >= 1 here) */                \
    const ptrdiff_t np = (M + W - 1) / W;                                                     \
    for (ptrdiff_t p = 0; p < np; ++p) {                                                      \
        const T *restrict P = Bp + p * K * W;                                                 \
        const ptrdiff_t j0 = p * W;                                                           \
        const ptrdiff_t w = M - j0 < W ? M - j0 : W;                                          \
        for (ptrdiff_t i = 0; i < N; ++i) {                                                   \
            const T *restrict a = A + i * lda;                                                \
            T *restrict c = C + i * ldc + j0;                                                 \
            T acc[W];                                                                         \
            for (ptrdiff_t j = 0; j < W; ++j)                                                 \
                acc[j] = 0;                                                                   \
            for (ptrdiff_t k = 0; k < K; ++k) {                                               \
                const T ak = a[k];                                                            \
                for (ptrdiff_t j = 0; j < W; ++j)                                             \
                    acc[j] += ak * P[k * W + j];                                              \
            }                                                                                 \
            if (beta == 0) {                                                                  \
                for (ptrdiff_t j = 0; j < w; ++j)                                             \
                    c[j] = acc[j];                                                            \
            } else if (beta == 1) {                                                           \
                for (ptrdiff_t j = 0; j < w; ++j)                                             \
                    c[j] += acc[j];                                                           \
            } else {                                                                          \
                for (ptrdiff_t j = 0; j < w; ++j)                                             \
                    c[j] = beta * c[j] + acc[j];                                              \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}

FR_DEFINE_GENERIC(float, f32, FR_PANEL_F32)
FR_DEFINE_GENERIC(double, f64, FR_PANEL_F64)

/* C (R x M) = A^T (R x K) @ B (K x M) + beta * C, A and B as stored (K >= 1 here): each
 * element summed k by k, as the SIMD kernels do. And C = beta * C (an empty sum). */
#define FR_DEFINE_GENERIC_TN(T, SFX)                                                          \
                                                                                              \
static void gemm_tn_generic_##SFX(ptrdiff_t R, ptrdiff_t M, ptrdiff_t K, const T *A,          \
                                  ptrdiff_t lda, const T *B, ptrdiff_t ldb, T beta, T *C,     \
                                  ptrdiff_t ldc)                                              \
{                                                                                             \
    for (ptrdiff_t i = 0; i < R; ++i) {                                                       \
        T *restrict c = C + i * ldc;                                                          \
        for (ptrdiff_t j = 0; j < M; ++j)                                                     \
            c[j] = beta == 0 ? (T)0 : beta * c[j];                                            \
        for (ptrdiff_t k = 0; k < K; ++k) {                                                   \
            const T a = A[k * lda + i];                                                       \
            const T *restrict b = B + k * ldb;                                                \
            for (ptrdiff_t j = 0; j < M; ++j)                                                 \
                c[j] += a * b[j];                                                             \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
                                                                                              \
static void scale_##SFX(ptrdiff_t N, ptrdiff_t M, T beta, T *C, ptrdiff_t ldc)                \
{                                                                                             \
    for (ptrdiff_t i = 0; i < N; ++i)                                                         \
        for (ptrdiff_t j = 0; j < M; ++j)                                                     \
            C[i * ldc + j] = beta == 0 ? (T)0 : beta * C[i * ldc + j];                        \
}

FR_DEFINE_GENERIC_TN(float, f32)
FR_DEFINE_GENERIC_TN(double, f64)

#if FR_GEMM_X86

#define FR_TGT512 __attribute__((target("avx2,fma,avx512f")))
#define FR_TGT256 __attribute__((target("avx2,fma")))
#define FR_INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------------------------------------------------ */
/* Vector primitives with one name pattern per (ISA, type), for the kernel template below:    */
/* ld/st: unaligned load/store; add, mul: lane-wise; ldm/stm: the first n lanes only (1 <= n < VL), others zero on */
/* load and untouched on store; set1: broadcast; fma(a, b, c) = a*b + c, one rounding.        */

FR_INLINE FR_TGT512 __m512 ld_a512s(const float *p) { return _mm512_loadu_ps(p); }
FR_INLINE FR_TGT512 void st_a512s(float *p, __m512 v) { _mm512_storeu_ps(p, v); }
FR_INLINE FR_TGT512 __m512 ldm_a512s(const float *p, ptrdiff_t n)
{ return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p); }
FR_INLINE FR_TGT512 void stm_a512s(float *p, __m512 v, ptrdiff_t n)
{ _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), v); }
FR_INLINE FR_TGT512 __m512 set1_a512s(float x) { return _mm512_set1_ps(x); }
FR_INLINE FR_TGT512 __m512 zero_a512s(void) { return _mm512_setzero_ps(); }
FR_INLINE FR_TGT512 __m512 add_a512s(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
FR_INLINE FR_TGT512 __m512 mul_a512s(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
FR_INLINE FR_TGT512 __m512 fma_a512s(__m512 a, __m512 b, __m512 c)
{ return _mm512_fmadd_ps(a, b, c); }

FR_INLINE FR_TGT512 __m512d ld_a512d(const double *p) { return _mm512_loadu_pd(p); }
FR_INLINE FR_TGT512 void st_a512d(double *p, __m512d v) { _mm512_storeu_pd(p, v); }
FR_INLINE FR_TGT512 __m512d ldm_a512d(const double *p, ptrdiff_t n)
{ return _mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1u), p); }
FR_INLINE FR_TGT512 void stm_a512d(double *p, __m512d v, ptrdiff_t n)
{ _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1u), v); }
FR_INLINE FR_TGT512 __m512d set1_a512d(double x) { return _mm512_set1_pd(x); }
FR_INLINE FR_TGT512 __m512d zero_a512d(void) { return _mm512_setzero_pd(); }
FR_INLINE FR_TGT512 __m512d add_a512d(__m512d a, __m512d b) { return _mm512_add_pd(a, b); }
FR_INLINE FR_TGT512 __m512d mul_a512d(__m512d a, __m512d b) { return _mm512_mul_pd(a, b); }
FR_INLINE FR_TGT512 __m512d fma_a512d(__m512d a, __m512d b, __m512d c)
{ return _mm512_fmadd_pd(a, b, c); }

FR_INLINE FR_TGT256 __m256i lanes_lt_a256s(ptrdiff_t n)
{ return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
FR_INLINE FR_TGT256 __m256 ld_a256s(const float *p) { return _mm256_loadu_ps(p); }
FR_INLINE FR_TGT256 void st_a256s(float *p, __m256 v) { _mm256_storeu_ps(p, v); }
FR_INLINE FR_TGT256 __m256 ldm_a256s(const float *p, ptrdiff_t n)
{ return _mm256_maskload_ps(p, lanes_lt_a256s(n)); }
FR_INLINE FR_TGT256 void stm_a256s(float *p, __m256 v, ptrdiff_t n)
{ _mm256_maskstore_ps(p, lanes_lt_a256s(n), v); }
FR_INLINE FR_TGT256 __m256 set1_a256s(float x) { return _mm256_set1_ps(x); }
FR_INLINE FR_TGT256 __m256 zero_a256s(void) { return _mm256_setzero_ps(); }
FR_INLINE FR_TGT256 __m256 add_a256s(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
FR_INLINE FR_TGT256 __m256 mul_a256s(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
FR_INLINE FR_TGT256 __m256 fma_a256s(__m256 a, __m256 b, __m256 c)
{ return _mm256_fmadd_ps(a, b, c); }

FR_INLINE FR_TGT256 __m256i lanes_lt_a256d(ptrdiff_t n)
{ return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3)); }
FR_INLINE FR_TGT256 __m256d ld_a256d(const double *p) { return _mm256_loadu_pd(p); }
FR_INLINE FR_TGT256 void st_a256d(double *p, __m256d v) { _mm256_storeu_pd(p, v); }
FR_INLINE FR_TGT256 __m256d ldm_a256d(const double *p, ptrdiff_t n)
{ return _mm256_maskload_pd(p, lanes_lt_a256d(n)); }
FR_INLINE FR_TGT256 void stm_a256d(double *p, __m256d v, ptrdiff_t n)
{ _mm256_maskstore_pd(p, lanes_lt_a256d(n), v); }
FR_INLINE FR_TGT256 __m256d set1_a256d(double x) { return _mm256_set1_pd(x); }
FR_INLINE FR_TGT256 __m256d zero_a256d(void) { return _mm256_setzero_pd(); }
FR_INLINE FR_TGT256 __m256d add_a256d(__m256d a, __m256d b) { return _mm256_add_pd(a, b); }
FR_INLINE FR_TGT256 __m256d mul_a256d(__m256d a, __m256d b) { return _mm256_mul_pd(a, b); }
FR_INLINE FR_TGT256 __m256d fma_a256d(__m256d a, __m256d b, __m256d c)
{ return _mm256_fmadd_pd(a, b, c); }

/* ------------------------------------------------------------------------------------------ */
/* The micro-kernel and its driver, written once (a macro) for each (ISA, type):              */
/*   T the element type, V its vector type, VL lanes per vector, W panel width in elements,   */
/*   VPP = W / VL vectors per panel, GMAX panels per group at most, MR1..MR3 the row block   */
/*   for groups of 1..3 panels, TGT the target attribute.                                     */

#define FR_UNROLL _Pragma("GCC unroll 16")

#define FR_DEFINE_KERNEL(SFX, T, V, VL, W, VPP, GMAX, MR1, MR2, MR3, TGT)                     \
                                                                                              \
/* C tile (MR x NV*VL, only its first ncols columns real) <- mode-dependent start + A @ B:   \
 *   A (MR x kc) rows lda apart (TA: stored transposed, element (i, k) at A[k*lda + i], so   \
 *   the MR elements broadcast at each k are contiguous); B: NV vectors per k, vector v at   \
 *   B + (v/VPP)*ps + (v%VPP)*VL                                                              \
 *   + k*W (panels ps elements apart, k-rows W apart); mode 0: start from 0 (C not read),    \
 *   1: from beta*C, 2: from C. MR and NV are compile-time constants at every call site, so  \
 *   the loops unroll and the MR*NV accumulators live in registers for the whole k-loop. */   \
FR_INLINE TGT void uk_##SFX(const int MR, const int NV, const int TA, ptrdiff_t kc,           \
                            const T *restrict A, ptrdiff_t lda, const T *restrict B,          \
                            ptrdiff_t ps, T *restrict C, ptrdiff_t ldc, int mode, T beta,     \
                            ptrdiff_t ncols)                                                  \
{                                                                                             \
    V acc[16][4];                                                                             \
    const int full = ncols >= (ptrdiff_t)NV * VL;                                             \
    FR_UNROLL for (int i = 0; i < MR; ++i) {                                                  \
        FR_UNROLL for (int v = 0; v < NV; ++v) {                                              \
            const ptrdiff_t n = ncols - (ptrdiff_t)v * VL;                                    \
            V c;                                                                              \
            if (mode == 0 || n <= 0)                                                          \
                c = zero_##SFX();                                                             \
            else if (full || n >= VL)                                                         \
                c = ld_##SFX(C + i * ldc + v * VL);                                           \
            else                                                                              \
                c = ldm_##SFX(C + i * ldc + v * VL, n);                                       \
            acc[i][v] = mode == 1 ? mul_##SFX(c, set1_##SFX(beta)) : c;                       \
        }                                                                                     \
    }                                                                                         \
    const T *restrict a = A;                                                                  \
    const T *restrict b = B;                                                                  \
    ptrdiff_t k = 0;                                                                          \
    _Pragma("GCC unroll 2")                                                                   \
    for (; k < kc; ++k) {                                                                     \
        V bv[4];                                                                              \
        FR_UNROLL for (int v = 0; v < NV; ++v)                                                \
            bv[v] = ld_##SFX(b + (v / VPP) * ps + (v % VPP) * VL);                            \
        FR_UNROLL for (int i = 0; i < MR; ++i) {                                              \
            const V av = set1_##SFX(a[TA ? i : i * lda]);                                     \
            FR_UNROLL for (int v = 0; v < NV; ++v)                                            \
                acc[i][v] = fma_##SFX(av, bv[v], acc[i][v]);                                  \
        }                                                                                     \
        a += TA ? lda : 1;                                                                    \
        b += W;                                                                               \
    }                                                                                         \
    if (full) {                                                                               \
        FR_UNROLL for (int i = 0; i < MR; ++i)                                                \
            FR_UNROLL for (int v = 0; v < NV; ++v)                                            \
                st_##SFX(C + i * ldc + v * VL, acc[i][v]);                                    \
    } else {                                                                                  \
        FR_UNROLL for (int i = 0; i < MR; ++i) {                                              \
            FR_UNROLL for (int v = 0; v < NV; ++v) {                                          \
                const ptrdiff_t n = ncols - (ptrdiff_t)v * VL;                                \
                if (n >= VL)                                                                  \
                    st_##SFX(C + i * ldc + v * VL, acc[i][v]);                                \
                else if (n > 0)                                                               \
                    stm_##SFX(C + i * ldc + v * VL, acc[i][v], n);                            \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
                                                                                              \
/* One row block (mr <= MRg rows) of one panel group (g panels): a switch to the kernel      \
 * instance with constant MR and NV = g*VPP (A in place: blk; A transposed: blkt). */         \
static TGT void blk_##SFX(int g, int mr, ptrdiff_t kc, const T *A, ptrdiff_t lda,             \
                          const T *B, ptrdiff_t ps, T *C, ptrdiff_t ldc, int mode, T beta,    \
                          ptrdiff_t ncols)                                                    \
{                                                                                             \
    switch (g * 32 + mr) {                                                                    \
    FR_CASES(SFX, 0, 1, MR1 * (GMAX >= 1))                                                    \
    FR_CASES(SFX, 0, 2, MR2 * (GMAX >= 2))                                                    \
    FR_CASES(SFX, 0, 3, MR3 * (GMAX >= 3))                                                    \
    default: break;                                                                           \
    }                                                                                         \
}                                                                                             \
static TGT void blkt_##SFX(int g, int mr, ptrdiff_t kc, const T *A, ptrdiff_t lda,            \
                           const T *B, ptrdiff_t ps, T *C, ptrdiff_t ldc, int mode, T beta,   \
                           ptrdiff_t ncols)                                                   \
{                                                                                             \
    switch (g * 32 + mr) {                                                                    \
    FR_CASES(SFX, 1, 1, MR1 * (GMAX >= 1))                                                    \
    FR_CASES(SFX, 1, 2, MR2 * (GMAX >= 2))                                                    \
    FR_CASES(SFX, 1, 3, MR3 * (GMAX >= 3))                                                    \
    default: break;                                                                           \
    }                                                                                         \
}                                                                                             \
                                                                                              \
/* C (N x M) = A (N x K) @ B (K x M) + beta * C, B packed (K >= 1, N, M >= 1 here).          \
 * Loops: column blocks of ncb panels (C's block, N x ncb*W, stays in L2), k-blocks (A's     \
 * slab N x kc is read from memory once per column block, then from L2), panel groups (the   \
 * group's B block, kc x g*W, stays in L1), row blocks (the micro-kernel). */                 \
static TGT void gemm_##SFX(ptrdiff_t N, ptrdiff_t M, ptrdiff_t K, const T *A, ptrdiff_t lda,  \
                           const T *Bp, T beta, T *C, ptrdiff_t ldc)                          \
{                                                                                             \
    const ptrdiff_t np = (M + W - 1) / W;     /* panels */                                    \
    const ptrdiff_t ps = K * W;               /* elements from one panel to the next */       \
    const ptrdiff_t nkb = (K + FR_KC - 1) / FR_KC;                                            \
    const ptrdiff_t kcb = (K + nkb - 1) / nkb; /* balanced k-blocks of <= FR_KC rows */       \
    ptrdiff_t ncb = FR_C_BLOCK_BYTES / ((ptrdiff_t)sizeof(T) * W * N);                        \
    ncb = ncb < GMAX ? GMAX : ncb / GMAX * GMAX;          /* whole groups */                  \
    /* prefetch B only when it cannot stay in L2 from one step to the next */                 \
    const int pf_b = FR_PREFETCH_B && (double)ps * np * sizeof(T) > FR_PREFETCH_B_BYTES;      \
    for (ptrdiff_t jb = 0; jb < np; jb += ncb) {                                              \
        const ptrdiff_t pend = np - jb < ncb ? np : jb + ncb;                                 \
        for (ptrdiff_t k0 = 0; k0 < K; k0 += kcb) {                                           \
            const ptrdiff_t kc = K - k0 < kcb ? K - k0 : kcb;                                 \
            const int mode = k0 > 0 ? 2 : beta == 0 ? 0 : beta == 1 ? 2 : 1;                 \
            if (FR_PREFETCH_A && k0 + kcb < K) {                                              \
                /* the next k-block's slab of A, into L2: its rows are far apart (one time   \
                 * step of a batch-first array), too short for the hardware prefetchers */    \
                const ptrdiff_t kn = K - k0 - kcb < kcb ? K - k0 - kcb : kcb;                 \
                for (ptrdiff_t i = 0; i < N; ++i)                                             \
                    for (ptrdiff_t k = 0; k < kn; k += 64 / (ptrdiff_t)sizeof(T))             \
                        __builtin_prefetch(A + i * lda + k0 + kcb + k, 0, 2);                 \
            }                                                                                 \
            ptrdiff_t p0 = jb;                                                                \
            while (p0 < pend) {                                                               \
                /* panels in this group: 3s, then 2+2 or one 2 (or a lone 1) if need be */    \
                const ptrdiff_t rem = pend - p0;                                              \
                int g;                                                                        \
                if (GMAX == 1 || rem == 1)                                                    \
                    g = 1;                                                                    \
                else if (GMAX == 2 || rem == 2 || rem == 4)                                   \
                    g = 2;                                                                    \
                else                                                                          \
                    g = 3;                                                                    \
                const int mr_max = g == 1 ? MR1 : g == 2 ? MR2 : MR3;                         \
                const ptrdiff_t j0 = p0 * W;                                                  \
                const ptrdiff_t ncols = M - j0 < (ptrdiff_t)g * W ? M - j0 : (ptrdiff_t)g * W;\
                /* balanced row blocks: nrb blocks of mrb rows, the last one shorter */       \
                const ptrdiff_t nrb = (N + mr_max - 1) / mr_max;                              \
                const ptrdiff_t mrb = (N + nrb - 1) / nrb;                                    \
                const T *Bk = Bp + p0 * ps + k0 * W;                                          \
                /* the next block of B this loop reads (next group, else the next k-block's  \
                 * first group), GMAX panels of kc k-rows: its lines are prefetched into L2, \
                 * a share per row block, so that no group starts on B lines from L3 */       \
                const T *Bn = p0 + g < pend ? Bp + (p0 + g) * ps + k0 * W                     \
                                            : Bp + jb * ps + (k0 + kc) * W;                   \
                const ptrdiff_t nlines = pf_b && (p0 + g < pend || k0 + kc < K) ? kc : 0;     \
                const ptrdiff_t share = (nlines + nrb - 1) / nrb;                             \
                ptrdiff_t line = 0;                                                           \
                for (ptrdiff_t i0 = 0; i0 < N; i0 += mrb) {                                   \
                    const int mr = (int)(N - i0 < mrb ? N - i0 : mrb);                        \
                    for (ptrdiff_t e = line + share < nlines ? line + share : nlines;         \
                         line < e; ++line)                                                    \
                        FR_UNROLL for (int q = 0; q < GMAX; ++q)                              \
                            __builtin_prefetch(Bn + q * ps + line * W, 0, 2);                 \
                    blk_##SFX(g, mr, kc, A + i0 * lda + k0, lda, Bk, ps, C + i0 * ldc + j0,   \
                              ldc, mode, beta, ncols);                                        \
                }                                                                             \
                p0 += g;                                                                      \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
                                                                                              \
/* C (R x M) = A^T (R x K) @ B (K x M) + beta * C, A stored (K x R), B stored (K x M), both   \
 * read in place (K >= 1, R, M >= 1 here). The same loops as gemm, but B is not packed in     \
 * advance: each group's block (kc x g*W) is packed into a buffer on the stack just before    \
 * the row blocks use it (every element of B is packed once per call: the row blocks cover    \
 * all R rows), and the micro-kernel reads A transposed: at each k a row block broadcasts MR  \
 * contiguous elements of A's row k. A's slab (kc x R) stays in L2 for the column block. */   \
static TGT void gemm_tn_##SFX(ptrdiff_t R, ptrdiff_t M, ptrdiff_t K, const T *A,             \
                              ptrdiff_t lda, const T *B, ptrdiff_t ldb, T beta, T *C,         \
                              ptrdiff_t ldc)                                                  \
{                                                                                             \
    T buf[FR_KC * GMAX * W] __attribute__((aligned(64)));                                     \
    const ptrdiff_t np = (M + W - 1) / W;                                                     \
    const ptrdiff_t nkb = (K + FR_KC - 1) / FR_KC;                                            \
    const ptrdiff_t kcb = (K + nkb - 1) / nkb;                                                \
    ptrdiff_t ncb = FR_C_BLOCK_BYTES / ((ptrdiff_t)sizeof(T) * W * R);                        \
    ncb = ncb < GMAX ? GMAX : ncb / GMAX * GMAX;                                              \
    for (ptrdiff_t jb = 0; jb < np; jb += ncb) {                                              \
        const ptrdiff_t pend = np - jb < ncb ? np : jb + ncb;                                 \
        for (ptrdiff_t k0 = 0; k0 < K; k0 += kcb) {                                           \
            const ptrdiff_t kc = K - k0 < kcb ? K - k0 : kcb;                                 \
            const int mode = k0 > 0 ? 2 : beta == 0 ? 0 : beta == 1 ? 2 : 1;                 \
            ptrdiff_t p0 = jb;                                                                \
            while (p0 < pend) {                                                               \
                const ptrdiff_t rem = pend - p0;                                              \
                int g;                                                                        \
                if (GMAX == 1 || rem == 1)                                                    \
                    g = 1;                                                                    \
                else if (GMAX == 2 || rem == 2 || rem == 4)                                   \
                    g = 2;                                                                    \
                else                                                                          \
                    g = 3;                                                                    \
                const int mr_max = g == 1 ? MR1 : g == 2 ? MR2 : MR3;                         \
                const ptrdiff_t j0 = p0 * W;                                                  \
                const ptrdiff_t ncols = M - j0 < (ptrdiff_t)g * W ? M - j0 : (ptrdiff_t)g * W;\
                /* buf <- B[k0 : k0+kc, j0 : j0+g*W] in panels (kc*W apart), 0 past M */     \
                const int nv = g * VPP;                                                       \
                for (ptrdiff_t k = 0; k < kc; ++k) {                                          \
                    const T *row = B + (k0 + k) * ldb + j0;                                   \
                    for (int v = 0; v < nv; ++v) {                                            \
                        const ptrdiff_t n = ncols - (ptrdiff_t)v * VL;                        \
                        const V x = n >= VL ? ld_##SFX(row + v * VL)                          \
                                  : n > 0 ? ldm_##SFX(row + v * VL, n) : zero_##SFX();        \
                        st_##SFX(buf + (v / VPP) * kc * W + k * W + (v % VPP) * VL, x);       \
                    }                                                                         \
                }                                                                             \
                const ptrdiff_t nrb = (R + mr_max - 1) / mr_max;                              \
                const ptrdiff_t mrb = (R + nrb - 1) / nrb;                                    \
                for (ptrdiff_t i0 = 0; i0 < R; i0 += mrb) {                                   \
                    const int mr = (int)(R - i0 < mrb ? R - i0 : mrb);                        \
                    blkt_##SFX(g, mr, kc, A + k0 * lda + i0, lda, buf, kc * W,                \
                               C + i0 * ldc + j0, ldc, mode, beta, ncols);                    \
                }                                                                             \
                p0 += g;                                                                      \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
}

/* case labels g*32 + mr for mr = 1..MRMAX (MRMAX <= 16; 0 emits none); TA: A transposed */
#define FR_CASE(SFX, TA, G, MRMAX, R)                                                         \
    case G * 32 + R:                                                                          \
        if (R <= MRMAX)                                                                       \
            uk_##SFX(R <= MRMAX ? R : 1, G * (W_##SFX / VL_##SFX), TA, kc, A, lda, B, ps, C,  \
                     ldc, mode, beta, ncols);                                                 \
        break;
#define FR_CASES(SFX, TA, G, MRMAX)                                                           \
    FR_CASE(SFX, TA, G, MRMAX, 1) FR_CASE(SFX, TA, G, MRMAX, 2)                               \
    FR_CASE(SFX, TA, G, MRMAX, 3) FR_CASE(SFX, TA, G, MRMAX, 4)                               \
    FR_CASE(SFX, TA, G, MRMAX, 5) FR_CASE(SFX, TA, G, MRMAX, 6)                               \
    FR_CASE(SFX, TA, G, MRMAX, 7) FR_CASE(SFX, TA, G, MRMAX, 8)                               \
    FR_CASE(SFX, TA, G, MRMAX, 9) FR_CASE(SFX, TA, G, MRMAX, 10)                              \
    FR_CASE(SFX, TA, G, MRMAX, 11) FR_CASE(SFX, TA, G, MRMAX, 12)                             \
    FR_CASE(SFX, TA, G, MRMAX, 13) FR_CASE(SFX, TA, G, MRMAX, 14)                             \
    FR_CASE(SFX, TA, G, MRMAX, 15) FR_CASE(SFX, TA, G, MRMAX, 16)

/* lanes and panel width of each instance, for FR_CASE */
#define VL_a512s 16
#define W_a512s FR_PANEL_F32
#define VL_a512d 8
#define W_a512d FR_PANEL_F64
#define VL_a256s 8
#define W_a256s FR_PANEL_F32
#define VL_a256d 4
#define W_a256d FR_PANEL_F64

/*            SFX    T       V       VL  W             VPP GMAX MR1 MR2 MR3 TGT */
FR_DEFINE_KERNEL(a512s, float, __m512, 16, FR_PANEL_F32, 1, 3, 16, 12, 8, FR_TGT512)
FR_DEFINE_KERNEL(a512d, double, __m512d, 8, FR_PANEL_F64, 1, 3, 16, 12, 8, FR_TGT512)
FR_DEFINE_KERNEL(a256s, float, __m256, 8, FR_PANEL_F32, 2, 1, 6, 0, 0, FR_TGT256)
FR_DEFINE_KERNEL(a256d, double, __m256d, 4, FR_PANEL_F64, 2, 1, 6, 0, 0, FR_TGT256)

#endif /* FR_GEMM_X86 */

/* ------------------------------------------------------------------------------------------ */
/* Dispatch: the family is picked once (first call, or fr_gemm_isa) and kept in g_isa.        */

static int g_isa = -1;

int fr_gemm_isa(int request)
{
    /* the best family the CPU supports, capped at request (< 0: just report) */
    if (request < 0) {
        int cur = __atomic_load_n(&g_isa, __ATOMIC_RELAXED);
        if (cur >= 0)
            return cur;
        request = INT_MAX;
    }
    int isa = FR_GEMM_GENERIC;
#if FR_GEMM_X86
    __builtin_cpu_init();
    if (request >= FR_GEMM_AVX512 && __builtin_cpu_supports("avx512f"))
        isa = FR_GEMM_AVX512;
    else if (request >= FR_GEMM_AVX2 && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("fma"))
        isa = FR_GEMM_AVX2;
#endif
    __atomic_store_n(&g_isa, isa, __ATOMIC_RELAXED);
    return isa;
}

#define FR_DEFINE_PUBLIC(T, SFX, X512, X256, XT512, XT256)                                    \
                                                                                              \
void fr_gemm_packed_##SFX(ptrdiff_t N, ptrdiff_t M, ptrdiff_t K, const T *A, ptrdiff_t lda,   \
                          const T *Bp, T beta, T *C, ptrdiff_t ldc)                           \
{                                                                                             \
    /* C (N x M) = A (N x K) @ B (K x M) + beta * C, Bp = pack(B); beta 0: C not read */      \
    if (N <= 0 || M <= 0)                                                                     \
        return;                                                                               \
    if (K <= 0) {                                                                             \
        scale_##SFX(N, M, beta, C, ldc);                                                      \
        return;                                                                               \
    }                                                                                         \
    int isa = __atomic_load_n(&g_isa, __ATOMIC_RELAXED);                                      \
    if (isa < 0)                                                                              \
        isa = fr_gemm_isa(INT_MAX);                                                           \
    FR_X86_DISPATCH(X512, X256, (N, M, K, A, lda, Bp, beta, C, ldc))                          \
    gemm_generic_##SFX(N, M, K, A, lda, Bp, beta, C, ldc);                                    \
}                                                                                             \
                                                                                              \
void fr_gemm_tn_##SFX(ptrdiff_t R, ptrdiff_t M, ptrdiff_t K, const T *A, ptrdiff_t lda,       \
                      const T *B, ptrdiff_t ldb, T beta, T *C, ptrdiff_t ldc)                 \
{                                                                                             \
    /* C (R x M) = A^T (R x K) @ B (K x M) + beta * C, A (K x R), B (K x M) as stored */      \
    if (R <= 0 || M <= 0)                                                                     \
        return;                                                                               \
    if (K <= 0) {                                                                             \
        scale_##SFX(R, M, beta, C, ldc);                                                      \
        return;                                                                               \
    }                                                                                         \
    int isa = __atomic_load_n(&g_isa, __ATOMIC_RELAXED);                                      \
    if (isa < 0)                                                                              \
        isa = fr_gemm_isa(INT_MAX);                                                           \
    FR_X86_DISPATCH(XT512, XT256, (R, M, K, A, lda, B, ldb, beta, C, ldc))                    \
    gemm_tn_generic_##SFX(R, M, K, A, lda, B, ldb, beta, C, ldc);                             \
}

#if FR_GEMM_X86
#define FR_X86_DISPATCH(X512, X256, ARGS)                                                     \
    if (isa == FR_GEMM_AVX512) {                                                              \
        X512 ARGS;                                                                            \
        return;                                                                               \
    }                                                                                         \
    if (isa == FR_GEMM_AVX2) {                                                                \
        X256 ARGS;                                                                            \
        return;                                                                               \
    }
#else
#define FR_X86_DISPATCH(X512, X256, ARGS)
#endif

FR_DEFINE_PUBLIC(float, f32, gemm_a512s, gemm_a256s, gemm_tn_a512s, gemm_tn_a256s)
FR_DEFINE_PUBLIC(double, f64, gemm_a512d, gemm_a256d, gemm_tn_a512d, gemm_tn_a256d)
