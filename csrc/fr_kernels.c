/*
 * fastrnn element-wise kernels: see fr_kernels.h for the contract of each function.
 *
 * Why not libm: a scalar tanhf costs ~23 ns/element here, 60x NumPy's SIMD tanh, and it
 * blocks vectorisation of the loop around it. The activations below are branch-free
 * polynomial/rational approximations that GCC vectorises:
 *   float32 tanh: a [13/6] rational minimax approximation on [-7.9, 7.9] (as in Eigen),
 *                 max abs error ~2e-7;
 *   float64 tanh: Cephes' rational approximation for |x| <= 0.625 and 1 - 2/(exp(2|x|) + 1)
 *                 above, with a vectorisable exp; relative error ~1e-16;
 *   sigmoid and softmax use the same exp (float32 evaluates it in double).
 */
#include "fr_kernels.h"

#include <math.h>
#include <string.h>

/* Compile each public kernel for AVX-512, AVX2+FMA and baseline x86-64; the dynamic loader
 * picks the best clone for the CPU (GNU ifunc). Elsewhere it is one ordinary function. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__ELF__) && !defined(FASTRNN_NO_CLONES)
#define FR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FR_CLONES
#endif

/* ------------------------------------------------------------------------------------------ */
/* Scalar building blocks, always inlined into the vectorised loops.                          */

static inline double fr_exp(double x)
{
    /* exp(x) = 2**k * exp(r), k = round(x / ln 2), |r| <= ln(2) / 2.
     * The input is clamped to [-708, 709] so 2**k stays a normal double; below -708 the
     * result is 0 (off by less than 1e-307, which no caller can see); above 709.78 it
     * overflows to inf, as libm's exp does.
     * NaN passes through (comparisons with NaN are false). */
    const double x_in = x;
    const double shift = 6755399441055744.0;          /* 1.5 * 2**52: rounds to integer */
    const double log2e = 1.4426950408889634074;
    const double ln2_hi = 6.93147180369123816490e-01; /* fdlibm split of ln 2: k * ln2_hi */
    const double ln2_lo = 1.90821492927058770002e-10; /* is exact for |k| < 2**11        */
    x = x < -708.0 ? -708.0 : x;
    x = x > 709.0 ? 709.0 : x;
    double kd = x * log2e + shift;
    double k = kd - shift;
    double r = (x - k * ln2_hi) - k * ln2_lo;
    /* Taylor polynomial of degree 12: truncation error < 2e-17 for |r| <= 0.347. */
    double p = 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* 2**k built from the integer sitting in the low mantissa bits of kd. */
    uint64_t bits;
    memcpy(&bits, &kd, sizeof bits);
    bits = (bits + 1023u) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    double e = x_in > 709.78 ? (double)INFINITY : p * scale;
    return x_in < -708.0 ? 0.0 : e;
}

static inline double fr_tanh_f64(double x)
{
    double a = fabs(x);
    /* |x| > 0.625: no cancellation in 1 - 2 / (e**2|x| + 1). */
    double big = 1.0 - 2.0 / (fr_exp(2.0 * a) + 1.0);
    big = copysign(big, x);
    /* |x| <= 0.625: Cephes tanh.c, x + x**3 P(x**2) / Q(x**2). */
    double z = x * x;
    double p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
               - 1.61468768441708447952e3;
    double q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
               + 4.84406305325125486048e3;
    double small = x + x * z * (p / q);
    return a > 0.625 ? big : small;
}

static inline float fr_tanh_f32(float x)
{
    /* Rational minimax approximation of tanh on [-7.905, 7.905] (Eigen's
     * generic_fast_tanh_float); beyond that tanh rounds to +-1 in float32. */
    const float clamp = 7.90531110763549805f;
    float xc = x < -clamp ? -clamp : x;
    xc = xc > clamp ? clamp : xc;
    float x2 = xc * xc;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 - 8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * xc;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    float t = p / q;
    /* Tiny inputs: tanh(x) = x to float precision (keeps relative accuracy near 0). */
    return fabsf(x) < 0.0004f ? x : t;
}

static inline double fr_sigmoid_f64(double x) { return 1.0 / (1.0 + fr_exp(-x)); }
static inline float fr_sigmoid_f32(float x) { return (float)(1.0 / (1.0 + fr_exp(-(double)x))); }

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
FR_CLONES void fr_colsum_##SFX(const T *A, ptrdiff_t rows, ptrdiff_t cols, ptrdiff_t ld,      \
                               T *restrict out)                                               \
{                                                                                             \
    for (ptrdiff_t c = 0; c < cols; ++c) out[c] = 0;                                          \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        const T *restrict a = A + r * ld;                                                     \
        for (ptrdiff_t c = 0; c < cols; ++c) out[c] += a[c];                                  \
    }                                                                                         \
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
                              const uint8_t *valid)                                           \
{                                                                                             \
    const T two_scale = (T)(2.0 * scale);                                                     \
    double total = 0;                                                                         \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *restrict z = Z + r * ldz;                                                          \
        if (valid && !valid[r]) {                                                             \
            for (ptrdiff_t c = 0; c < cols; ++c) z[c] = 0;                                    \
            continue;                                                                         \
        }                                                                                     \
        const T *restrict y = Y + r * ldy;                                                    \
        T row_sum = 0;                                                                        \
        for (ptrdiff_t c = 0; c < cols; ++c) {                                                \
            T d = z[c] - y[c];                                                                \
            row_sum += d * d;                                                                 \
            z[c] = two_scale * d;                                                             \
        }                                                                                     \
        total += row_sum;                                                                     \
    }                                                                                         \
    return total;                                                                             \
}                                                                                             \
                                                                                              \
FR_CLONES double fr_xent_##SFX(T *Z, ptrdiff_t ld, const int64_t *y, ptrdiff_t rows,          \
                               ptrdiff_t cols, double scale, const uint8_t *valid)            \
{                                                                                             \
    double total = 0;                                                                         \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *restrict z = Z + r * ld;                                                           \
        if (valid && !valid[r]) {                                                             \
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
        total += log(sum) - (double)(zk - m);                                                 \
        T s = (T)(scale / sum);                                                               \
        for (ptrdiff_t c = 0; c < cols; ++c) z[c] *= s;                                       \
        z[k] -= (T)scale;                                                                     \
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
