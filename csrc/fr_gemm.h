/*
 * fastrnn's packed-operand GEMM for the per-time-step products of the recurrences:
 *
 *     forward    Z_t (N, G*H) += h_{t-1} (N, H) @ W_s (H, G*H)
 *     backward   dH_t (N, H)  (+)= dZ_{t+1} (N, G*H) @ W_s^T (G*H, H)
 *
 * The same right operand B (W_s or W_s^T) is used by all T steps of a pass, so it is packed
 * ONCE per pass into the layout the register-blocked micro-kernel streams (the approach of
 * oneDNN's brgemm and libxsmm); a BLAS GEMM repacks it on every call, which at batch sizes of
 * tens costs about as much as the arithmetic.
 *
 * Packed layout (the same for every ISA, so a buffer packed by one kernel is valid for all):
 * B (K x M) is cut into column panels of FR_GEMM_PANEL_BYTES = 64 bytes (16 float32 or 8
 * float64 columns, one AVX-512 register, one cache line); panel p holds columns
 * [p*w, p*w + w) as K rows of w contiguous elements, the columns past M zero; panels follow
 * each other: Bp[(p*K + k)*w + c] = B[k, p*w + c]. fr_packed_size_*(K, M) = K * ceil(M/w)*w.
 * A 64-byte aligned Bp is fastest (every k-row of a panel is then one cache line).
 *
 * All matrices are row-major with leading dimensions (row strides) in elements, so one time
 * step of a batch-first (N, T, K) array is the (N, K) matrix at X + t*K with ld = T*K.
 * Nothing here allocates, and NaN/inf propagate as in any GEMM. Dispatch: AVX-512F, else
 * AVX2+FMA, else portable C, chosen once from the CPU (see fr_gemm_isa).
 */
#ifndef FASTRNN_FR_GEMM_H
#define FASTRNN_FR_GEMM_H

#include <stddef.h>

#define FR_GEMM_PANEL_BYTES 64

/* Elements a packed K x M operand needs: K * (M rounded up to whole 64-byte panels). */
size_t fr_packed_size_f32(ptrdiff_t K, ptrdiff_t M);
size_t fr_packed_size_f64(ptrdiff_t K, ptrdiff_t M);

/*
 * Bp <- pack(op(B)), op(B) of shape (K, M):
 *   trans = 0: B is stored (K x M) with leading dimension ldb >= M:  op(B) = B;
 *   trans = 1: B is stored (M x K) with leading dimension ldb >= K:  op(B) = B^T
 *              (so W_s^T is never formed: pack W_s (H, G*H) with trans=1, K = G*H, M = H).
 * Bp holds fr_packed_size_*(K, M) elements, all written (padding columns set to zero).
 */
void fr_pack_b_f32(const float *B, ptrdiff_t ldb, ptrdiff_t K, ptrdiff_t M, int trans,
                   float *Bp);
void fr_pack_b_f64(const double *B, ptrdiff_t ldb, ptrdiff_t K, ptrdiff_t M, int trans,
                   double *Bp);

/*
 * C (N x M) = A (N x K) @ op(B) (K x M) + beta * C, with Bp = pack(op(B)) as above.
 * lda >= K, ldc >= M. beta == 0: C is not read (it may hold garbage, NaN included); any
 * other beta scales C (beta == 1 adds exactly). K == 0 gives C = beta * C. N or M <= 0: no-op.
 */
void fr_gemm_packed_f32(ptrdiff_t N, ptrdiff_t M, ptrdiff_t K, const float *A, ptrdiff_t lda,
                        const float *Bp, float beta, float *C, ptrdiff_t ldc);
void fr_gemm_packed_f64(ptrdiff_t N, ptrdiff_t M, ptrdiff_t K, const double *A,
                        ptrdiff_t lda, const double *Bp, double beta, double *C,
                        ptrdiff_t ldc);

/*
 * C (R x M) = A^T (R x K) @ B (K x M) + beta * C, A stored (K x R) with leading dimension
 * lda >= R and B stored (K x M) with ldb >= M, both read in place (nothing packed in
 * advance): the merged weight gradients, dW (R, M) = X^T (R, N*T) @ dZ (N*T, M), over all
 * rows of batch-first arrays. ldc >= M; beta as in fr_gemm_packed_*. Uses ~24 KiB of stack.
 */
void fr_gemm_tn_f32(ptrdiff_t R, ptrdiff_t M, ptrdiff_t K, const float *A, ptrdiff_t lda,
                    const float *B, ptrdiff_t ldb, float beta, float *C, ptrdiff_t ldc);
void fr_gemm_tn_f64(ptrdiff_t R, ptrdiff_t M, ptrdiff_t K, const double *A, ptrdiff_t lda,
                    const double *B, ptrdiff_t ldb, double beta, double *C, ptrdiff_t ldc);

/*
 * The kernel family in use: FR_GEMM_GENERIC (portable C), FR_GEMM_AVX2 (AVX2+FMA),
 * FR_GEMM_AVX512 (AVX-512F). request < 0 only reports it; otherwise the best family the CPU
 * supports that is <= request is selected (for tests and benchmarks; not thread-safe against
 * concurrent GEMMs). The packed layout does not depend on it. Returns the family in use.
 */
enum { FR_GEMM_GENERIC = 0, FR_GEMM_AVX2 = 1, FR_GEMM_AVX512 = 2 };
int fr_gemm_isa(int request);

#endif
