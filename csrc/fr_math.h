/*
 * fastrnn's scalar building blocks, shared by the element-wise kernels (fr_kernels.c) and the
 * gated cells' step kernels (fr_gates.c): static inline, so each is inlined into the
 * vectorised loops that call it.
 *
 * Why not libm: a scalar tanhf costs ~23 ns/element here, 60x NumPy's SIMD tanh, and it
 * blocks vectorisation of the loop around it. The activations below are branch-free
 * polynomial/rational approximations that GCC vectorises:
 *   float32 tanh: a [13/6] rational minimax approximation on [-7.9, 7.9] (as in Eigen),
 *                 max abs error ~2e-7;
 *   float64 tanh: Cephes' rational approximation for |x| <= 0.625 and 1 - 2/(exp(2|x|) + 1)
 *                 above, with a vectorisable exp; relative error ~1e-16;
 *   sigmoid and softmax use the same exp (float32 evaluates it in double); the gates'
 *   float32 sigmoid is 1/2 + tanh(x/2)/2 in float32 (abs error ~1.5e-7, twice the vector width).
 */
#ifndef FASTRNN_FR_MATH_H
#define FASTRNN_FR_MATH_H

#include <math.h>
#include <stdint.h>
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

/* The gates' float32 sigmoid: sigmoid(x) = (1 + tanh(x / 2)) / 2, all in float32 (the
 * double-precision exp above would halve the vector width, and a gated cell evaluates three
 * sigmoids per unit and step). Absolute error ~1.5e-7. */
static inline float fr_sigmoid_gate_f32(float x) { return 0.5f + 0.5f * fr_tanh_f32(0.5f * x); }
static inline double fr_sigmoid_gate_f64(double x) { return fr_sigmoid_f64(x); }

#endif
