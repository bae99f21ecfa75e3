/*
 * fastrnn element-wise kernels: see fr_kernels.h for the contract of each function, and
 * fr_math.h for the activations they are built from.
 */
#include "fr_kernels.h"

#include <math.h>
#include <string.h>

#include "fr_math.h"

/* relu written so that NaN propagates, as np.maximum does. */
#define FR_RELU(z) ((z) < 0 ? 0 : (z))

/* ------------------------------------------------------------------------------------------ */
/* The kernels, written once for both precisions.                                             */

#define FR_DEFINE_KERNELS(T, SFX, TANH, SIGMOID)                                              \
                                                                                              \
FR_CLONES void fr_bias_act_##SFX(T *Z, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,          \
                                 const T *b, int act)                                         \
{                                                                                             \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *restrict z = Z + r * ld;                                                           \
        if (b) {                                                                              \
            for (ptrdiff_t c = 0; c < cols; ++c) z[c] += b[c];                                \
        }                                                                                     \
        switch (act) {                                                                        \
        case FR_TANH:                                                                         \
            for (ptrdiff_t c = 0; c < cols; ++c) z[c] = TANH(z[c]);                           \
            break;                                                                            \
        case FR_RELU:                                                                         \
            for (ptrdiff_t c = 0; c < cols; ++c) z[c] = FR_RELU(z[c]);                        \
            break;                                                                            \
        case FR_SIGMOID:                                                                      \
            for (ptrdiff_t c = 0; c < cols; ++c) z[c] = SIGMOID(z[c]);                        \
            break;                                                                            \
        default: /* identity */                                                               \
            break;                                                                            \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
                                                                                              \
FR_CLONES void fr_act_grad_##SFX(T *G, ptrdiff_t ldg, const T *S, ptrdiff_t lds,              \
                                 ptrdiff_t rows, ptrdiff_t cols, int act)                     \
{                                                                                             \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *restrict g = G + r * ldg;                                                          \
        const T *restrict s = S + r * lds;                                                    \
        switch (act) {                                                                        \
        case FR_TANH: /* tanh' = 1 - s**2 */                                                  \
            for (ptrdiff_t c = 0; c < cols; ++c) g[c] *= (T)1 - s[c] * s[c];                  \
            break;                                                                            \
        case FR_RELU: /* relu' = [s > 0]; multiply so a NaN in g still shows */               \
            for (ptrdiff_t c = 0; c < cols; ++c) g[c] *= s[c] > 0 ? (T)1 : (T)0;              \
            break;                                                                            \
        case FR_SIGMOID: /* sigmoid' = s (1 - s) */                                           \
            for (ptrdiff_t c = 0; c < cols; ++c) g[c] *= s[c] * ((T)1 - s[c]);                \
            break;                                                                            \
        default:                                                                              \
            break;                                                                            \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
                                                                                              \
FR_CLONES void fr_colsum_add_##SFX(const T *A, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,  \
                                   T *restrict out)                                           \
{                                                                                             \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        const T *restrict a = A + r * ld;                                                     \
        for (ptrdiff_t c = 0; c < cols; ++c) out[c] += a[c];                                  \
    }                                                                                         \
}                                                                                             \
                                                                                              \
FR_CLONES void fr_colsum_##SFX(const T *A, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,      \
                               T *restrict out)                                               \
{                                                                                             \
    for (ptrdiff_t c = 0; c < cols; ++c) out[c] = 0;                                          \
    fr_colsum_add_##SFX(A, rows, cols, ld, out);                                              \
}                                                                                             \
                                                                                              \
FR_CLONES void fr_add_bias_##SFX(T *Z, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,          \
                                 const T *b)                                                  \
{                                                                                             \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *restrict z = Z + r * ld;                                                           \
        for (ptrdiff_t c = 0; c < cols; ++c) z[c] += b[c];                                    \
    }                                                                                         \
}                                                                                             \
                                                                                              \
/* exp(z - max) for one row, returns the sum (in double). */                                  \
static inline double fr_exp_shifted_##SFX(T *restrict z, ptrdiff_t cols)                      \
{                                                                                             \
    T m = z[0];                                                                               \
    for (ptrdiff_t c = 1; c < cols; ++c) m = z[c] > m ? z[c] : m;                             \
    for (ptrdiff_t c = 0; c < cols; ++c) z[c] = (T)fr_exp((double)(z[c] - m));                \
    double sum = 0;                                                                           \
    for (ptrdiff_t c = 0; c < cols; ++c) sum += z[c];                                         \
    return sum;                                                                               \
}                                                                                             \
                                                                                              \
FR_CLONES void fr_softmax_##SFX(T *Z, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld)           \
{                                                                                             \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *restrict z = Z + r * ld;                                                           \
        T inv = (T)(1.0 / fr_exp_shifted_##SFX(z, cols));                                     \
        for (ptrdiff_t c = 0; c < cols; ++c) z[c] *= inv;                                     \
    }                                                                                         \
}                                                                                             \
                                                                                              \
FR_CLONES double fr_mse_##SFX(T *Z, ptrdiff_t ldz, const T *Y, ptrdiff_t ldy,                 \
                              ptrdiff_t rows, ptrdiff_t cols, double scale,                   \
                              const double *weight)                                           \
{                                                                                             \
    double total = 0;                                                                         \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *restrict z = Z + r * ldz;                                                          \
        const double w = weight ? weight[r] : 1.0;                                            \
        if (w == 0) {                                                                         \
            for (ptrdiff_t c = 0; c < cols; ++c) z[c] = 0;                                    \
            continue;                                                                         \
        }                                                                                     \
        const T two_scale = (T)(2.0 * scale * w);                                             \
        const T *restrict y = Y + r * ldy;                                                    \
        T row_sum = 0;                                                                        \
        for (ptrdiff_t c = 0; c < cols; ++c) {                                                \
            T d = z[c] - y[c];                                                                \
            row_sum += d * d;                                                                 \
            z[c] = two_scale * d;                                                             \
        }                                                                                     \
        total += w * (double)row_sum;                                                         \
    }                                                                                         \
    return total;                                                                             \
}                                                                                             \
                                                                                              \
FR_CLONES double fr_xent_##SFX(T *Z, ptrdiff_t ld, const int64_t *y, ptrdiff_t rows,          \
                               ptrdiff_t cols, double scale, const double *weight)            \
{                                                                                             \
    double total = 0;                                                                         \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *restrict z = Z + r * ld;                                                           \
        const double w = weight ? weight[r] : 1.0;                                            \
        if (w == 0) {                                                                         \
            for (ptrdiff_t c = 0; c < cols; ++c) z[c] = 0;                                    \
            continue;                                                                         \
        }                                                                                     \
        const int64_t k = y[r];                                                               \
        /* -log softmax(z)[k] = log(sum exp(z - m)) - (z[k] - m); z[k] - m is read before     \
         * the row is overwritten: after exp it is exp(z[k] - m). */                          \
        T zk = z[k];                                                                          \
        T m = z[0];                                                                           \
        for (ptrdiff_t c = 1; c < cols; ++c) m = z[c] > m ? z[c] : m;                         \
        double sum = fr_exp_shifted_##SFX(z, cols);                                           \
        total += w * (log(sum) - (double)(zk - m));                                           \
        T s = (T)(scale * w / sum);                                                           \
        for (ptrdiff_t c = 0; c < cols; ++c) z[c] *= s;                                       \
        z[k] -= (T)(scale * w);                                                               \
    }                                                                                         \
    return total;                                                                             \
}

FR_DEFINE_KERNELS(float, f32, fr_tanh_f32, fr_sigmoid_f32)
FR_DEFINE_KERNELS(double, f64, fr_tanh_f64, fr_sigmoid_f64)

/* Non-finite <=> all exponent bits set. Integer OR-reduction: vectorises without
 * -ffast-math; blocks of 1024 let a bad value end the scan early. */
#define FR_DEFINE_ALL_FINITE(T, SFX, U, EXP_MASK)                                             \
FR_CLONES int fr_all_finite_##SFX(const T *a, ptrdiff_t n)                                    \
{                                                                                             \
    const U *u = (const U *)a;                                                                \
    for (ptrdiff_t start = 0; start < n; start += 1024) {                                     \
        ptrdiff_t stop = n - start < 1024 ? n : start + 1024;                                 \
        U bad = 0;                                                                            \
        for (ptrdiff_t i = start; i < stop; ++i)                                              \
            bad |= (U)((u[i] & (EXP_MASK)) == (EXP_MASK));                                    \
        if (bad) return 0;                                                                    \
    }                                                                                         \
    return 1;                                                                                 \
}

FR_DEFINE_ALL_FINITE(float, f32, uint32_t, 0x7f800000u)
FR_DEFINE_ALL_FINITE(double, f64, uint64_t, 0x7ff0000000000000u)


void fr_prefetch_rows(const void *A, ptrdiff_t rows, ptrdiff_t ld_bytes, ptrdiff_t bytes,
                      int write)
{
    const char *base = (const char *)A;
    for (ptrdiff_t r = 0; r < rows; r++) {
        const char *row = base + r * ld_bytes;
        if (write)
            for (ptrdiff_t b = 0; b < bytes; b += 64)
                __builtin_prefetch(row + b, 1, 3);
        else
            for (ptrdiff_t b = 0; b < bytes; b += 64)
                __builtin_prefetch(row + b, 0, 3);
    }
}
