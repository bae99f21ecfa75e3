/*
 * fastrnn element-wise kernels, shared by every cell and the output head.
 *
 * Every kernel works on a block of `rows` rows of `cols` contiguous elements whose starts are
 * `ld` elements apart, so one time step of a batch-first (N, T, H) array (rows = N, ld = T*H)
 * is processed in place without a copy. The inner loops are written so GCC vectorises them;
 * on x86-64 each kernel is compiled for several instruction sets (target_clones) and the best
 * one is picked when the extension is loaded.
 *
 * The kernels trust their arguments: fastrnn/_validate.py checks every user input first.
 */
#ifndef FASTRNN_FR_KERNELS_H
#define FASTRNN_FR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Activation codes; the order matches fastrnn.activations.ACTIVATIONS. */
enum { FR_IDENTITY = 0, FR_TANH = 1, FR_RELU = 2, FR_SIGMOID = 3 };

/* Z[r, c] = phi(Z[r, c] + b[c])    (b may be NULL: no bias) */
void fr_bias_act_f32(float *Z, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                     const float *b, int act);
void fr_bias_act_f64(double *Z, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                     const double *b, int act);

/* G[r, c] *= phi'(a[r, c]), with phi' written in terms of the output S = phi(a). */
void fr_act_grad_f32(float *G, ptrdiff_t ldg, const float *S, ptrdiff_t lds,
                     ptrdiff_t rows, ptrdiff_t cols, int act);
void fr_act_grad_f64(double *G, ptrdiff_t ldg, const double *S, ptrdiff_t lds,
                     ptrdiff_t rows, ptrdiff_t cols, int act);

/* out[c] = sum_r A[r, c] */
void fr_colsum_f32(const float *A, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld, float *out);
void fr_colsum_f64(const double *A, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld, double *out);
/* out[c] += sum_r A[r, c] */
void fr_colsum_add_f32(const float *A, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                       float *out);
void fr_colsum_add_f64(const double *A, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,
                       double *out);

/* Z[r, c] += b[c] */
void fr_add_bias_f32(float *Z, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld, const float *b);
void fr_add_bias_f64(double *Z, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld, const double *b);

/* Row-wise softmax in place: Z[r] = exp(Z[r] - max) / sum. */
void fr_softmax_f32(float *Z, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld);
void fr_softmax_f64(double *Z, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld);

/*
 * Squared error, weighted by row. D = Z - Y; returns sum_r w_r sum(D[r]**2) (accumulated in
 * double) and overwrites Z with scale * w_r * 2 * D, the gradient of scale * that sum;
 * w_r = weight[r] (weight may be NULL: every w_r = 1). Rows with w_r == 0 (padding past a
 * sequence's end, or a sample weight of 0) add nothing and get a zero gradient.
 */
double fr_mse_f32(float *Z, ptrdiff_t ldz, const float *Y, ptrdiff_t ldy,
                  ptrdiff_t rows, ptrdiff_t cols, double scale, const double *weight);
double fr_mse_f64(double *Z, ptrdiff_t ldz, const double *Y, ptrdiff_t ldy,
                  ptrdiff_t rows, ptrdiff_t cols, double scale, const double *weight);

/*
 * Softmax cross-entropy on logits Z with integer class targets y[r] (0 <= y[r] < cols).
 * Returns sum_r w_r * -log softmax(Z[r])[y[r]] (in double) and overwrites Z with
 * scale * w_r * (softmax(Z[r]) - onehot(y[r])), the gradient of scale * that sum; w_r as for
 * fr_mse. Rows with w_r == 0 add nothing, get a zero gradient, and their y[r] is not read.
 */
double fr_xent_f32(float *Z, ptrdiff_t ld, const int64_t *y, ptrdiff_t rows, ptrdiff_t cols,
                   double scale, const double *weight);
double fr_xent_f64(double *Z, ptrdiff_t ld, const int64_t *y, ptrdiff_t rows, ptrdiff_t cols,
                   double scale, const double *weight);

/*
 * Software prefetch of `rows` rows of `bytes` bytes whose starts are ld_bytes apart (one time
 * step of a batch-first array), into every cache level; write != 0: they will be written. The
 * recurrences ask for the next step's blocks while they compute the current one when their
 * arrays are too large to stay in cache: a step's rows are then far apart in memory, and the
 * hardware prefetchers, which follow streams within a page, leave each row's first lines to
 * miss.
 */
void fr_prefetch_rows(const void *A, ptrdiff_t rows, ptrdiff_t ld_bytes, ptrdiff_t bytes,
                      int write);

/* 1 if none of the n values is NaN or inf, else 0. */
int fr_all_finite_f32(const float *a, ptrdiff_t n);
int fr_all_finite_f64(const double *a, ptrdiff_t n);

#endif
