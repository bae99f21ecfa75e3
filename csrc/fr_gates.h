/*
 * fastrnn step kernels of the gated cells (LSTM, GRU): one fused, vectorised sweep per time
 * step over the (rows, G*H) gate block that the step's GEMM left in place, forward and
 * backward. Row r of a block starts ld elements after row r-1, so one time step of a
 * batch-first (N, T, K) array (rows = N, ld = T*K) is processed in place. Gate blocks are
 * stacked along the row in PyTorch's order: LSTM [i, f, g, o], GRU [r, z, n].
 *
 * The kernels trust their arguments: fastrnn/_validate.py checks every user input first.
 */
#ifndef FASTRNN_FR_GATES_H
#define FASTRNN_FR_GATES_H

#include <stddef.h>

/*
 * LSTM forward step. On entry Z[r] (4H) holds x_t W_x + h_{t-1} W_s (no bias); on exit the
 * activated gates [i, f, g, o] (f = 1 exactly if !forget_gate). Writes
 *     c_t = f * c_{t-1} + i * g    into C[r]        h_t = o * tanh(c_t)    into Hs[r]
 * (C and Hs share the leading dimension ldh).
 */
void fr_lstm_fwd_f32(float *Z, ptrdiff_t ldz, const float *b, const float *c_prev,
                     ptrdiff_t ldcp, float *C, float *Hs, ptrdiff_t ldh, ptrdiff_t rows,
                     ptrdiff_t H, int forget_gate);
void fr_lstm_fwd_f64(double *Z, ptrdiff_t ldz, const double *b, const double *c_prev,
                     ptrdiff_t ldcp, double *C, double *Hs, ptrdiff_t ldh, ptrdiff_t rows,
                     ptrdiff_t H, int forget_gate);

/*
 * LSTM backward step. On entry Z[r] holds the step's activated gates, dH[r] the total
 * dLoss/dh_t, dc (rows, H, contiguous) dLoss/dc_t from beyond h_t (the carry from c_{t+1}).
 * On exit Z[r] holds dLoss/dz_t (the pre-activation gradients, gate by gate) and dc the
 * carry dLoss/dc_{t-1} = dc_t * f:
 *     dc_t = dc + dh * o * (1 - tanh(c_t)^2)
 *     dz   = [dc_t g i(1-i),  dc_t c_{t-1} f(1-f),  dc_t i (1-g^2),  dh tanh(c_t) o(1-o)]
 * dc_norms (may be NULL): dc_norms[r * norm_stride] = ||dc_t[r]||_2 (summed in double).
 */
void fr_lstm_bwd_f32(float *Z, ptrdiff_t ldz, const float *dH, ptrdiff_t lddh, float *dc,
                     const float *c_prev, ptrdiff_t ldcp, const float *C, ptrdiff_t ldc,
                     double *dc_norms, ptrdiff_t norm_stride, ptrdiff_t rows, ptrdiff_t H,
                     int forget_gate);
void fr_lstm_bwd_f64(double *Z, ptrdiff_t ldz, const double *dH, ptrdiff_t lddh, double *dc,
                     const double *c_prev, ptrdiff_t ldcp, const double *C, ptrdiff_t ldc,
                     double *dc_norms, ptrdiff_t norm_stride, ptrdiff_t rows, ptrdiff_t H,
                     int forget_gate);

/*
 * GRU forward step ("linear before reset", PyTorch's). On entry A[r] (3H) holds x_t W_x (no
 * bias) and R[r] (3H, contiguous rows) h_{t-1} W_s (no bias). With s = R + b_s:
 *     r = sigmoid(s_r + a_r + b_r)    z = sigmoid(s_z + a_z + b_z)
 *     n = tanh(a_n + b_n + r * s_n)   h_t = (h_{t-1} - n) * z + n
 * (PyTorch's order of operations). On exit A[r] holds [r, z, n]; h_t goes to Hs[r] and s_n
 * (what the backward pass needs for dr) to Sn[r] (Hs and Sn share the leading dimension ldh).
 */
void fr_gru_fwd_f32(float *A, ptrdiff_t lda, const float *b, const float *R, const float *b_s,
                    const float *h_prev, ptrdiff_t ldhp, float *Hs, float *Sn, ptrdiff_t ldh,
                    ptrdiff_t rows, ptrdiff_t H);
void fr_gru_fwd_f64(double *A, ptrdiff_t lda, const double *b, const double *R,
                    const double *b_s, const double *h_prev, ptrdiff_t ldhp, double *Hs,
                    double *Sn, ptrdiff_t ldh, ptrdiff_t rows, ptrdiff_t H);

/*
 * GRU backward step. On entry A[r] holds the step's [r, z, n], Sn[r] its s_n, dH[r] the
 * gradient reaching h_t through the output and the next step's W_s product, and P (rows, H,
 * contiguous) the direct carry dh_{t+1} * z_{t+1} (zeros at the last step). With
 * dh = dH + P (written back to dH[r]: the total dLoss/dh_t):
 *     dza_n = dh (1 - z) (1 - n^2)    dza_z = dh (h_{t-1} - n) z (1 - z)
 *     dza_r = dza_n s_n r (1 - r)
 * On exit A[r] = [dza_r, dza_z, dza_n] (the input side's pre-activation gradients), Sn[r] =
 * dza_n * r (the recurrent side's n block; its r and z blocks equal the input side's) and
 * P = dh * z.
 */
void fr_gru_bwd_f32(float *A, ptrdiff_t lda, float *Sn, float *dH, ptrdiff_t ldh, float *P,
                    const float *h_prev, ptrdiff_t ldhp, ptrdiff_t rows, ptrdiff_t H);
void fr_gru_bwd_f64(double *A, ptrdiff_t lda, double *Sn, double *dH, ptrdiff_t ldh, double *P,
                    const double *h_prev, ptrdiff_t ldhp, ptrdiff_t rows, ptrdiff_t H);

#endif
