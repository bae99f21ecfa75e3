/*
 * The gated cells' step kernels: see fr_gates.h for the contract of each function, and
 * fr_math.h for the activations. The work on one row is a static inline function whose
 * gate blocks are separate restrict parameters (GCC does not trust restrict pointers
 * declared inside a loop body, and then does not vectorise), so every loop over the H units
 * vectorises; the public kernels loop over the rows and are compiled for AVX-512, AVX2 and
 * baseline x86-64 (FR_CLONES). Written once for both precisions.
 */
#include "fr_gates.h"

#include <math.h>

#include "fr_math.h"

#define FR_DEFINE_GATES(T, SFX, TANH, SIGMOID)                                                \
                                                                                              \
static inline void lstm_fwd_row_##SFX(                                                        \
    T *restrict zi, T *restrict zf, T *restrict zg, T *restrict zo,                           \
    const T *restrict b_i, const T *restrict b_f, const T *restrict b_g,                      \
    const T *restrict b_o, const T *restrict cp, T *restrict c, T *restrict h, ptrdiff_t H,   \
    T f_scale)                                                                                \
{                                                                                             \
    /* f_scale 1: f = sigmoid(z_f); 0: no forget gate, f = 1 (computed then replaced, so the  \
     * loop has no branch) */                                                                 \
    for (ptrdiff_t j = 0; j < H; ++j) {                                                       \
        T i = SIGMOID(zi[j] + b_i[j]);                                                        \
        T f = SIGMOID(zf[j] + b_f[j]);                                                        \
        f = f_scale != (T)0 ? f : (T)1;                                                       \
        T g = TANH(zg[j] + b_g[j]);                                                           \
        T o = SIGMOID(zo[j] + b_o[j]);                                                        \
        T ct = f * cp[j] + i * g;                                                             \
        c[j] = ct;                                                                            \
        h[j] = o * TANH(ct);                                                                  \
        zi[j] = i; zf[j] = f; zg[j] = g; zo[j] = o;                                           \
    }                                                                                         \
}                                                                                             \
                                                                                              \
FR_CLONES void fr_lstm_fwd_##SFX(T *Z, ptrdiff_t ldz, const T *b, const T *c_prev,            \
                                 ptrdiff_t ldcp, T *C, T *Hs, ptrdiff_t ldh, ptrdiff_t rows,  \
                                 ptrdiff_t H, int forget_gate)                                \
{                                                                                             \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *z = Z + r * ldz;                                                                   \
        lstm_fwd_row_##SFX(z, z + H, z + 2 * H, z + 3 * H, b, b + H, b + 2 * H, b + 3 * H,    \
                           c_prev + r * ldcp, C + r * ldh, Hs + r * ldh, H,                   \
                           forget_gate ? (T)1 : (T)0);                                        \
    }                                                                                         \
}                                                                                             \
                                                                                              \
static inline double lstm_dc_norm_##SFX(const T *restrict zo, const T *restrict dh,           \
                                        const T *restrict c, const T *restrict d,             \
                                        ptrdiff_t H)                                          \
{                                                                                             \
    /* ||dc_t|| for the diagnostics, recomputed in double before the carry is updated */      \
    double acc = 0;                                                                           \
    for (ptrdiff_t j = 0; j < H; ++j) {                                                       \
        T tc = TANH(c[j]);                                                                    \
        double v = (double)(d[j] + dh[j] * zo[j] * ((T)1 - tc * tc));                         \
        acc += v * v;                                                                         \
    }                                                                                         \
    return sqrt(acc);                                                                         \
}                                                                                             \
                                                                                              \
static inline void lstm_bwd_row_##SFX(                                                        \
    T *restrict zi, T *restrict zf, T *restrict zg, T *restrict zo, const T *restrict dh,     \
    T *restrict d, const T *restrict cp, const T *restrict c, ptrdiff_t H, T f_scale)         \
{                                                                                             \
    /* f_scale 0 (no forget gate): dz_f = 0 exactly (f = 1 is a constant) */                  \
    for (ptrdiff_t j = 0; j < H; ++j) {                                                       \
        T i = zi[j], f = zf[j], g = zg[j], o = zo[j];                                         \
        T tc = TANH(c[j]);                                                                    \
        T dct = d[j] + dh[j] * o * ((T)1 - tc * tc);                                          \
        zo[j] = dh[j] * tc * o * ((T)1 - o);                                                  \
        zi[j] = dct * g * i * ((T)1 - i);                                                     \
        zf[j] = f_scale * (dct * cp[j] * f * ((T)1 - f));                                     \
        zg[j] = dct * i * ((T)1 - g * g);                                                     \
        d[j] = dct * f;                                                                       \
    }                                                                                         \
}                                                                                             \
                                                                                              \
FR_CLONES void fr_lstm_bwd_##SFX(T *Z, ptrdiff_t ldz, const T *dH, ptrdiff_t lddh, T *dc,     \
                                 const T *c_prev, ptrdiff_t ldcp, const T *C, ptrdiff_t ldc,  \
                                 double *dc_norms, ptrdiff_t norm_stride, ptrdiff_t rows,     \
                                 ptrdiff_t H, int forget_gate)                                \
{                                                                                             \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *z = Z + r * ldz;                                                                   \
        if (dc_norms)                                                                         \
            dc_norms[r * norm_stride] = lstm_dc_norm_##SFX(z + 3 * H, dH + r * lddh,          \
                                                           C + r * ldc, dc + r * H, H);       \
        lstm_bwd_row_##SFX(z, z + H, z + 2 * H, z + 3 * H, dH + r * lddh, dc + r * H,         \
                           c_prev + r * ldcp, C + r * ldc, H, forget_gate ? (T)1 : (T)0);     \
    }                                                                                         \
}                                                                                             \
                                                                                              \
static inline void gru_fwd_row_##SFX(                                                         \
    T *restrict ar, T *restrict az, T *restrict an, const T *restrict b_r,                    \
    const T *restrict b_z, const T *restrict b_n, const T *restrict sr,                       \
    const T *restrict sz, const T *restrict sn, const T *restrict bs_r,                       \
    const T *restrict bs_z, const T *restrict bs_n, const T *restrict hp, T *restrict h,      \
    T *restrict s_n, ptrdiff_t H)                                                             \
{                                                                                             \
    for (ptrdiff_t j = 0; j < H; ++j) {                                                       \
        T rg = SIGMOID((sr[j] + bs_r[j]) + (ar[j] + b_r[j]));                                 \
        T zg = SIGMOID((sz[j] + bs_z[j]) + (az[j] + b_z[j]));                                 \
        T s = sn[j] + bs_n[j];                                                                \
        T ng = TANH((an[j] + b_n[j]) + rg * s);                                               \
        h[j] = (hp[j] - ng) * zg + ng;                                                        \
        s_n[j] = s;                                                                           \
        ar[j] = rg; az[j] = zg; an[j] = ng;                                                   \
    }                                                                                         \
}                                                                                             \
                                                                                              \
FR_CLONES void fr_gru_fwd_##SFX(T *A, ptrdiff_t lda, const T *b, const T *R, const T *b_s,    \
                                const T *h_prev, ptrdiff_t ldhp, T *Hs, T *Sn, ptrdiff_t ldh, \
                                ptrdiff_t rows, ptrdiff_t H)                                  \
{                                                                                             \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *a = A + r * lda;                                                                   \
        const T *s = R + r * 3 * H;                                                           \
        gru_fwd_row_##SFX(a, a + H, a + 2 * H, b, b + H, b + 2 * H, s, s + H, s + 2 * H,      \
                          b_s, b_s + H, b_s + 2 * H, h_prev + r * ldhp, Hs + r * ldh,         \
                          Sn + r * ldh, H);                                                   \
    }                                                                                         \
}                                                                                             \
                                                                                              \
static inline void gru_bwd_row_##SFX(                                                         \
    T *restrict ar, T *restrict az, T *restrict an, T *restrict s_n, T *restrict dh,          \
    T *restrict p, const T *restrict hp, ptrdiff_t H)                                         \
{                                                                                             \
    for (ptrdiff_t j = 0; j < H; ++j) {                                                       \
        T rg = ar[j], zg = az[j], ng = an[j];                                                 \
        T d = dh[j] + p[j];                                                                   \
        T dn = d * ((T)1 - zg) * ((T)1 - ng * ng);                                            \
        T dz = d * (hp[j] - ng) * zg * ((T)1 - zg);                                           \
        T dr = dn * s_n[j] * rg * ((T)1 - rg);                                                \
        dh[j] = d;                                                                            \
        p[j] = d * zg;                                                                        \
        ar[j] = dr; az[j] = dz; an[j] = dn;                                                   \
        s_n[j] = dn * rg;                                                                     \
    }                                                                                         \
}                                                                                             \
                                                                                              \
FR_CLONES void fr_gru_bwd_##SFX(T *A, ptrdiff_t lda, T *Sn, T *dH, ptrdiff_t ldh, T *P,       \
                                const T *h_prev, ptrdiff_t ldhp, ptrdiff_t rows, ptrdiff_t H) \
{                                                                                             \
    for (ptrdiff_t r = 0; r < rows; ++r) {                                                    \
        T *a = A + r * lda;                                                                   \
        gru_bwd_row_##SFX(a, a + H, a + 2 * H, Sn + r * ldh, dH + r * ldh, P + r * H,         \
                          h_prev + r * ldhp, H);                                              \
    }                                                                                         \
}

FR_DEFINE_GATES(float, f32, fr_tanh_f32, fr_sigmoid_gate_f32)
FR_DEFINE_GATES(double, f64, fr_tanh_f64, fr_sigmoid_gate_f64)
