"""The packed-operand GEMM (csrc/fr_gemm.c) against NumPy, through its test hook
fastrnn._gemm_test, for every kernel family the CPU has (AVX-512, AVX2, portable C).

    C (N, M) = A (N, K) @ op(B) (K, M) + beta * C,   Bp = pack(op(B)) once, many products

op(B) = B (stored K x M) or, with trans=1, B^T (B stored M x K: W_s for the backward's
dZ @ W_s^T). A and C are row blocks of wider arrays (leading dimension > row width), as one
time step of a batch-first array is; with beta = 0 C starts as NaN and must not be read; the
elements of C's rows past column M must never be written.
"""
import numpy as np
import pytest

g = pytest.importorskip("fastrnn._gemm_test")

ISAS = ["avx512", "avx2", "generic"]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.fixture(params=ISAS)
def isa(request):
    """Select a kernel family (skip it if the CPU lacks it); restore the best afterwards."""
    want = g.ISAS[request.param]
    if g.isa(want) != want:
        g.isa(99)
        pytest.skip(f"CPU has no {request.param}")
    yield request.param
    g.isa(99)


def operands(rng, N, K, M, trans, dtype, pad=5):
    """A (N, K) and C (N, M) as views into wider arrays (row strides K + pad, M + pad + 3),
    B stored (K, M), or (M, K) if trans, in a wider array too; op(B) (K, M) as float64."""
    A_big = rng.standard_normal((N, K + pad)).astype(dtype)
    stored = (M, K) if trans else (K, M)
    B_big = rng.standard_normal((stored[0], stored[1] + pad)).astype(dtype)
    B = B_big[:, :stored[1]]
    C_big = rng.standard_normal((N, M + pad + 3)).astype(dtype)
    opB = (B.T if trans else B).astype(np.float64)
    return A_big[:, :K], B, C_big, opB


def check(C_big, C0_big, A, opB, beta, M, dtype):
    """C_big[:, :M] == A @ opB + beta*C0 to the dtype's tolerance, scaled elementwise by
    |A| @ |opB| + |beta*C0| (the size of what is summed), and C_big[:, M:] unchanged."""
    A64 = A.astype(np.float64)
    ref = A64 @ opB
    scale = np.abs(A64) @ np.abs(opB)
    if beta != 0:
        ref += beta * C0_big[:, :M].astype(np.float64)
        scale += np.abs(beta * C0_big[:, :M].astype(np.float64))
    got = C_big[:, :M].astype(np.float64)
    assert np.all(np.isfinite(got))
    err = np.abs(got - ref)
    assert np.all(err <= TOL[dtype] * (scale + 1e-30)), float(np.max(err / (scale + 1e-30)))
    np.testing.assert_array_equal(C_big[:, M:], C0_big[:, M:])   # nothing past the row end


def run(rng, N, K, M, trans, beta, dtype):
    A, B, C_big, opB = operands(rng, N, K, M, trans, dtype)
    if beta == 0:
        C_big[:, :M] = np.nan                                    # must not be read
    C0_big = C_big.copy()
    Bp = g.pack(B, trans)
    assert Bp.size == g.packed_size(K, M, dtype)
    g.gemm_packed(A, Bp, M, beta, C_big[:, :M])
    check(C_big, C0_big, A, opB, beta, M, dtype)


# (K, M) as the cells use them: forward K = H, M = G*H (G = 1, 3, 4); backward dZ @ W_s^T
# K = G*H, M = H (LSTM 4H, GRU 3H and its 2H block)
def shapes(H):
    return [(H, H), (H, 3 * H), (H, 4 * H), (4 * H, H), (2 * H, H)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans", [0, 1])
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("N", [1, 3, 128])
@pytest.mark.parametrize("H", [1, 7, 63, 65, 1000])
def test_against_numpy(isa, H, N, beta, trans, dtype):
    if isa != "avx512" and H == 1000 and N == 128:
        pytest.skip("the largest case once, on the best kernel (time)")
    rng = np.random.default_rng(H * 1000 + N)
    for K, M in shapes(H):
        run(rng, N, K, M, trans, beta, dtype)



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("R, K, M", [(1, 1, 1), (5, 1, 17), (17, 300, 100), (1, 300, 1),
                                     (13, 129, 49), (9, 257, 33), (64, 1600, 256),
                                     (32, 257, 256), (256, 33, 48), (40, 2, 1024),
                                     (25, 130, 97), (300, 40, 20),
                                     (256, 1100, 1040)])   # > 2**28: the cells' float32 rule
def test_tn_against_numpy(isa, R, K, M, dtype):
    """fr_gemm_tn (the merged weight gradients): C (R, M) = A^T (R, K) @ B (K, M) + beta*C,
    A (K, R) and B (K, M) read in place from wider arrays; sizes straddling the row blocks,
    panels and k-blocks; every beta form; beta = 0 must not read C (NaN)."""
    rng = np.random.default_rng(R * 7 + K * 3 + M)
    for beta in (0.0, 1.0, 0.5):
        A_big = rng.standard_normal((K, R + 3)).astype(dtype)
        B_big = rng.standard_normal((K, M + 5)).astype(dtype)
        C_big = rng.standard_normal((R, M + 8)).astype(dtype)
        A, B = A_big[:, :R], B_big[:, :M]
        if beta == 0:
            C_big[:, :M] = np.nan
        C0_big = C_big.copy()
        g.gemm_tn(A, B, beta, C_big[:, :M])
        # check() computes A' @ opB with A' (R, K): pass A^T and B
        check(C_big, C0_big, np.ascontiguousarray(A.T), B.astype(np.float64), beta, M, dtype)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N, K, M", [(1, 1, 1), (5, 1, 17), (17, 1, 100), (1, 300, 1),
                                     (13, 129, 49), (9, 257, 33), (31, 64, 80), (256, 33, 48),
                                     (40, 1, 1024), (2, 130, 16), (25, 5, 97)])
def test_edges(isa, N, K, M, dtype):
    """K = 1, one row or column, sizes straddling the row blocks (8, 12, 16), panels (16, 8)
    and k-blocks (128); every beta form including a general one."""
    rng = np.random.default_rng(N * 7 + K * 3 + M)
    for trans in (0, 1):
        for beta in (0.0, 1.0, 0.5):
            run(rng, N, K, M, trans, beta, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_first_steps(isa, dtype):
    """T per-step products on one packed W, A and C one time step of (N, T, .) arrays
    (leading dimensions T*K and T*M), accumulated as the forward pass does."""
    rng = np.random.default_rng(3)
    N, T, H = 6, 9, 20
    K, M = H, 4 * H
    A = rng.standard_normal((N, T, K)).astype(dtype)
    W = rng.standard_normal((K, M)).astype(dtype)
    C = rng.standard_normal((N, T, M)).astype(dtype)
    ref = C.astype(np.float64) + np.einsum("ntk,km->ntm", A.astype(np.float64), W)
    Bp = g.pack(W, 0)
    for t in range(T):
        g.gemm_packed(A[:, t], Bp, M, 1.0, C[:, t])
    np.testing.assert_allclose(C, ref, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    # the compiled loop of the benchmark, packing W^T from W stored (M, K)
    C2 = np.zeros((N, T, M), dtype)
    g.steps_packed(A, np.ascontiguousarray(W.T), g.aligned_empty(g.packed_size(K, M, dtype),
                                                                   dtype), 1, C2)
    np.testing.assert_allclose(C2, np.einsum("ntk,km->ntm", A.astype(np.float64), W),
                               rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pack_layout(dtype):
    """Panels of 64 bytes (16 float32 / 8 float64 columns), K rows each, zero-padded; the
    transposed pack of B (M, K) is bit-identical to the plain pack of B^T."""
    w = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(0)
    K, M = 5, 2 * w + 3
    B = rng.standard_normal((K, M)).astype(dtype)
    Bp = g.pack(B, 0)
    np_ = -(-M // w)
    assert Bp.size == K * np_ * w == g.packed_size(K, M, dtype)
    padded = np.zeros((K, np_ * w), dtype)
    padded[:, :M] = B
    expect = padded.reshape(K, np_, w).transpose(1, 0, 2).ravel()
    np.testing.assert_array_equal(Bp, expect)
    np.testing.assert_array_equal(g.pack(np.ascontiguousarray(B.T), 1), Bp)
    # a strided stored B (ldb > row width)
    wide = np.zeros((M, K + 7), dtype)
    wide[:, :K] = B.T
    np.testing.assert_array_equal(g.pack(wide[:, :K], 1), Bp)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_inf_propagate(isa, dtype):
    """NaN and inf in A, B or C reach C as in NumPy (no fast-math; beta 0 never reads C)."""
    rng = np.random.default_rng(1)
    N, K, M = 10, 20, 40
    A = rng.standard_normal((N, K)).astype(dtype)
    B = rng.standard_normal((K, M)).astype(dtype)
    A[2, 3] = np.nan
    A[5, 0] = np.inf
    B[7, 33] = np.nan
    C = np.ones((N, M), dtype)
    C[8, 1] = np.inf
    with np.errstate(invalid="ignore"):
        ref = A.astype(np.float64) @ B.astype(np.float64)
    Bp = g.pack(B, 0)
    C1 = C.copy()
    g.gemm_packed(A, Bp, M, 1.0, C1)
    with np.errstate(invalid="ignore"):
        ref1 = ref + C
    np.testing.assert_array_equal(np.isnan(C1), np.isnan(ref1))
    np.testing.assert_array_equal(np.isposinf(C1), np.isposinf(ref1))
    np.testing.assert_array_equal(np.isneginf(C1), np.isneginf(ref1))
    C0 = np.full((N, M), np.nan, dtype)
    g.gemm_packed(A, Bp, M, 0.0, C0)
    np.testing.assert_array_equal(np.isnan(C0), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(C0), np.isinf(ref))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_k_zero(dtype):
    """An empty sum: C = beta * C (beta 0 gives zeros even from NaN)."""
    A = np.zeros((3, 0), dtype)
    C = np.full((3, 5), np.nan, dtype)
    g.gemm_packed(A, np.zeros(0, dtype), 5, 0.0, C)
    np.testing.assert_array_equal(C, 0)
    C[:] = 2
    g.gemm_packed(A, np.zeros(0, dtype), 5, 0.5, C)
    np.testing.assert_array_equal(C, 1)


def test_dispatch_reports_a_family():
    best = g.isa()
    assert best in g.ISAS.values()
    assert g.isa(0) == 0
    assert g.isa(99) == best
