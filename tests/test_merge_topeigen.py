"""Top-k eigenpairs without the full spectrum (hydralib.merge.lowrank.top_eigen) and the Householder row space."""

from __future__ import annotations

import math

import pytest
import torch

from hydralib.merge.hydraopt import solve_exact
from hydralib.merge.lowrank import (
    SUBSPACE_MIN_SIZE,
    dense_stacked_floor,
    factored_top_eigen,
    row_space,
    row_space_basis,
    stacked_gram,
    top_eigen,
    top_eigenpairs,
)

F64 = torch.float64


def psd(values, seed=0, dtype=F64) -> torch.Tensor:
    """``U diag(values) U^T`` with a random orthogonal U: a symmetric PSD matrix of known spectrum."""
    values = torch.as_tensor(values, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=g, dtype=F64))
    H = (U * values) @ U.T
    return ((H + H.T) / 2).to(dtype)


def reference(H: torch.Tensor, k: int):
    """Top-k values (descending), vectors and tail from a float64 full eigh."""
    values, vectors = torch.linalg.eigh(H.double())
    values, vectors = values.flip(0), vectors.flip(1)
    return values[:k], vectors[:, :k], float(values[k:].sum())


def assert_eigenpairs(H: torch.Tensor, eig, k: int, rtol: float = 1e-9):
    """values / tail agree with eigh; vectors orthonormal, invariant (small residual) and sign-fixed."""
    ref_values, _, ref_tail = reference(H, k)
    scale = float(ref_values[0])
    assert eig.values.shape == (k,) and eig.vectors.shape == (H.shape[0], k)
    assert eig.values.dtype == H.dtype and eig.vectors.dtype == H.dtype
    assert (eig.values[:-1] >= eig.values[1:]).all()
    assert float((eig.values.double() - ref_values.clamp_min(0)).abs().max()) <= rtol * scale
    assert eig.tail == pytest.approx(ref_tail, rel=rtol, abs=rtol * scale * H.shape[0])
    V = eig.vectors.double()
    assert float((V.T @ V - torch.eye(k, dtype=F64)).abs().max()) <= 10 * rtol
    residual = (H.double() @ V - V * eig.values.double()).norm(dim=0).max()
    assert float(residual) <= 10 * rtol * scale
    pivots = V.abs().argmax(dim=0)
    assert (V[pivots, torch.arange(k)] > 0).all()


def projector_gap(V1: torch.Tensor, V2: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(V1.double() @ V1.double().T - V2.double() @ V2.double().T, 2))


# ----------------------------------------------------------------------------- agreement with eigh


def test_subspace_iteration_matches_eigh_on_a_decaying_spectrum():
    R, k = 300, 20
    H = psd(0.6 ** torch.arange(R, dtype=F64) * 50, seed=1)
    eig = top_eigen(H, k)  # R >= SUBSPACE_MIN_SIZE, k <= R / 4: subspace iteration
    assert eig.method == "subspace" and 1 <= eig.iterations <= 12 and eig.residual <= 1e-12
    assert_eigenpairs(H, eig, k)
    _, ref_vectors, _ = reference(H, k)
    assert projector_gap(eig.vectors, ref_vectors) < 1e-10
    # the same eigenvectors as top_eigenpairs, signs included
    _, V = top_eigenpairs(H, k)
    torch.testing.assert_close(eig.vectors, V, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "spectrum",
    [
        # a repeated eigenvalue inside the top k, then a gap
        [9.0] * 6 + [7.0] * 4 + [5.0] * 6 + [0.05] * 114,
        # a tight cluster inside the top k
        [10.0 + 1e-9 * i for i in range(8)] + [6.0 - 0.1 * i for i in range(8)] + [0.03] * 114,
        # a repeated eigenvalue across the cut (k = 10 splits the four 4.0s): the top-k space is not unique
        [8.0] * 8 + [4.0] * 4 + [0.05] * 118,
    ],
    ids=["repeated", "clustered", "repeated-across-cut"],
)
def test_repeated_and_clustered_eigenvalues(spectrum):
    H = psd(spectrum, seed=2)
    k = 10
    eig = top_eigen(H, k, method="subspace")
    assert eig.method == "subspace"
    assert_eigenpairs(H, eig, k)
    ref_values, ref_vectors, _ = reference(H, k)
    if float(ref_values[k - 1]) - spectrum[k] > 1e-3:  # a gap at k: the top-k subspace is unique
        assert projector_gap(eig.vectors, ref_vectors) < 1e-9


def test_rank_deficient_matrix_has_zero_eigenvalues_beyond_its_rank():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(280, 6, generator=g, dtype=F64)
    H = X @ X.T  # rank 6 < k
    k = 12
    for method in ("auto", "subspace"):
        eig = top_eigen(H, k, method=method)
        assert eig.method == "subspace"
        assert_eigenpairs(H, eig, k)
        assert float(eig.values[6:].max()) <= 1e-10 * float(eig.values[0])
        assert eig.tail <= 1e-10 * float(eig.values[0])
        _, ref_vectors, _ = reference(H, 6)
        assert projector_gap(eig.vectors[:, :6], ref_vectors) < 1e-9


def test_zero_matrix():
    eig = top_eigen(torch.zeros(300, 300, dtype=F64), 5, method="subspace")
    assert eig.method == "subspace" and eig.tail == 0 and eig.values.abs().max() == 0
    torch.testing.assert_close(eig.vectors.T @ eig.vectors, torch.eye(5, dtype=F64))


def test_float32_input_is_iterated_in_float64():
    R, k = 320, 16
    H64 = psd(0.7 ** torch.arange(R, dtype=F64) * 100, seed=4)
    H = H64.float()
    eig = top_eigen(H, k)
    assert eig.method == "subspace" and eig.values.dtype == torch.float32 and eig.vectors.dtype == torch.float32
    ref_values, ref_vectors, ref_tail = reference(H, k)  # the float32 matrix, in float64
    assert float((eig.values.double() - ref_values).abs().max()) <= 1e-6 * float(ref_values[0])
    assert eig.tail == pytest.approx(ref_tail, rel=1e-9)
    # lambda_16 - lambda_17 is 1.4e-3 of lambda_1: float32's own eigh is off by ~2e-5 here
    assert projector_gap(eig.vectors, ref_vectors) < 1e-4
    # at least as accurate as the float32 full eigh it replaces
    values32, _ = top_eigenpairs(H, k)
    old_tail = float(values32[k:].double().sum())
    assert abs(eig.tail - ref_tail) <= abs(old_tail - ref_tail) + 1e-9 * ref_tail


# ----------------------------------------------------------------------------- fallback


def test_flat_spectrum_falls_back_to_the_partial_eigensolver():
    R, k = 400, 40
    spectrum = 10.0 - 1e-3 * torch.arange(R, dtype=F64)  # no gap anywhere: subspace iteration would crawl
    H = psd(spectrum, seed=5)
    eig = top_eigen(H, k)
    assert eig.method == "eigh-partial"
    assert 2 <= eig.iterations < 12 and eig.residual > 1e-12  # gave up early, after measuring the rate
    assert_eigenpairs(H, eig, k, rtol=1e-10)
    _, ref_vectors, _ = reference(H, k)
    assert projector_gap(eig.vectors, ref_vectors) < 1e-8


def test_fallback_when_the_iteration_budget_is_too_small():
    H = psd(0.9 ** torch.arange(300, dtype=F64), seed=6)
    eig = top_eigen(H, 8, max_iter=1)
    assert eig.method == "eigh-partial" and eig.iterations == 1
    assert_eigenpairs(H, eig, 8)
    eig = top_eigen(H, 8, tol=0.0)  # an unreachable tolerance
    assert eig.method == "eigh-partial"
    assert_eigenpairs(H, eig, 8)


def test_fallback_float32_returns_float32():
    H = psd(10.0 - 1e-3 * torch.arange(300, dtype=F64), seed=7).float()
    eig = top_eigen(H, 20)
    assert eig.method == "eigh-partial" and eig.values.dtype == torch.float32 and eig.vectors.dtype == torch.float32
    ref_values, _, ref_tail = reference(H, 20)
    assert float((eig.values.double() - ref_values).abs().max()) <= 1e-6 * float(ref_values[0])
    assert eig.tail == pytest.approx(ref_tail, rel=1e-9)


# ----------------------------------------------------------------------------- method selection, determinism, errors


def test_small_or_large_k_takes_the_full_eigh_exactly():
    H = psd(torch.rand(40, generator=torch.Generator().manual_seed(8), dtype=F64), seed=8)
    values, V = top_eigenpairs(H, 5)
    eig = top_eigen(H, 5)  # R < SUBSPACE_MIN_SIZE
    assert eig.method == "eigh" and eig.iterations == 0 and math.isnan(eig.residual)
    assert torch.equal(eig.values, values[:5]) and torch.equal(eig.vectors, V)
    assert eig.tail == float(values[5:].sum())
    big = psd(torch.linspace(5, 1, SUBSPACE_MIN_SIZE, dtype=F64), seed=9)
    assert top_eigen(big, SUBSPACE_MIN_SIZE // 4 + 1).method == "eigh"  # k > R / 4
    assert top_eigen(big, SUBSPACE_MIN_SIZE // 4, method="eigh").method == "eigh"
    full = top_eigen(H, 100, method="subspace")  # k >= R: nothing to gain
    assert full.method == "eigh" and full.values.shape == (40,) and full.tail == 0


@pytest.mark.parametrize("spectrum", ["decaying", "flat"])
def test_deterministic(spectrum):
    R = 300
    values = 0.8 ** torch.arange(R, dtype=F64) if spectrum == "decaying" else 1 - 1e-4 * torch.arange(R, dtype=F64)
    H = psd(values, seed=10).float()
    a, b = top_eigen(H, 16), top_eigen(H.clone(), 16)
    assert a.method == ("subspace" if spectrum == "decaying" else "eigh-partial")
    assert torch.equal(a.values, b.values) and torch.equal(a.vectors, b.vectors) and a.tail == b.tail
    other = top_eigen(H, 16, seed=1)  # another start: the same answer up to rounding
    assert float((other.values - a.values).abs().max()) <= 1e-6 * float(a.values[0])
    assert projector_gap(other.vectors, a.vectors) < 1e-4


def test_invalid_arguments():
    H = torch.eye(4, dtype=F64)
    with pytest.raises(ValueError, match="square"):
        top_eigen(torch.zeros(3, 4), 1)
    with pytest.raises(ValueError, match="k must be"):
        top_eigen(H, 0)
    with pytest.raises(ValueError, match="method"):
        top_eigen(H, 1, method="lobpcg")


# ----------------------------------------------------------------------------- row space in Householder form


def test_row_space_matches_row_space_basis_and_applies_q():
    g = torch.Generator().manual_seed(11)
    for d_in, ranks in ((30, (3, 4, 5)), (8, (4, 4, 4))):  # R = sum r < d_in, and R = d_in < sum r
        As = [torch.randn(r, d_in, generator=g, dtype=F64) for r in ranks]
        basis = row_space(As)
        Q, C = row_space_basis(As)
        assert basis.dim == Q.shape[1] == min(d_in, sum(ranks))
        assert torch.equal(basis.coords, C) and torch.equal(basis.dense(), Q)
        X = torch.randn(basis.dim, 3, generator=g, dtype=F64)
        torch.testing.assert_close(basis.apply(X), Q @ X)
        with pytest.raises(ValueError, match="rows"):
            basis.apply(torch.zeros(basis.dim + 1, 2, dtype=F64))
    gram = stacked_gram(As, [torch.randn(5, r, generator=g, dtype=F64) for r in ranks], [1.0] * 3, [1.0] * 3, [0, 1, 0], 2)
    assert torch.equal(gram.Q, Q)


# ----------------------------------------------------------------------------- the exact solver on the partial path


def test_solve_exact_on_the_subspace_path_reaches_the_dense_floor():
    g = torch.Generator().manual_seed(12)
    n, r, d_out, d_in, rank = 10, 30, 40, 320, 30  # R = 300 >= SUBSPACE_MIN_SIZE, rank <= R / 4
    common = torch.randn(r, d_in, generator=g, dtype=F64)
    As = [0.9 * common + 0.1 * torch.randn(r, d_in, generator=g, dtype=F64) for _ in range(n)]
    Bs = [torch.randn(d_out, r, generator=g, dtype=F64) * 0.1 for _ in range(n)]
    ss = [2.0] * n
    w = torch.rand(n, generator=g, dtype=F64) + 0.5
    groups = [i % 3 for i in range(n)]
    gram = stacked_gram(As, Bs, ss, w, groups, 3)
    assert top_eigen(gram.H, rank).method == "subspace"  # a gap after the r shared directions
    sol = solve_exact(As, Bs, ss, w, groups, 3, rank)
    ref = dense_stacked_floor([s * (B @ A) for A, B, s in zip(As, Bs, ss)], w.tolist(), groups, rank)
    assert sol.truncation == pytest.approx(ref["truncation"], rel=1e-9)
    assert sol.floor == pytest.approx(ref["floor"], rel=1e-9)
    assert sol.loss == pytest.approx(ref["floor"], rel=1e-9)
    assert sol.eigenvalues.shape == (rank,)
    torch.testing.assert_close(sol.shared @ sol.shared.T, torch.eye(rank, dtype=F64))
    # float32 factors: the same floor up to float32 rounding
    As32, Bs32 = [A.float() for A in As], [B.float() for B in Bs]
    assert top_eigen(stacked_gram(As32, Bs32, ss, w, groups, 3).H, rank).method == "subspace"
    sol32 = solve_exact(As32, Bs32, ss, w, groups, 3, rank)
    assert sol32.shared.dtype == torch.float32
    assert sol32.floor == pytest.approx(ref["floor"], rel=1e-5)
    assert sol32.loss == pytest.approx(ref["floor"], rel=1e-5)


# ----------------------------------------------------------------------------- top eigenpairs of A^T D A on the factors


def factored_operator(n_tasks=12, r=24, d=400, shared=0.9, seed=13, dtype=F64):
    """``A`` ``(n_tasks r, d)`` whose rows share an r-dimensional part, and block-diagonal PSD ``D`` (blocks ``B_i^T B_i``)."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(r, d, generator=g, dtype=F64)
    A = torch.cat([shared * common + (1 - shared) * torch.randn(r, d, generator=g, dtype=F64) for _ in range(n_tasks)])
    Bs = torch.randn(n_tasks, 30, r, generator=g, dtype=F64)
    D = torch.block_diag(*(B.T @ B for B in Bs))

    def apply_d(Y):
        return (D.to(Y.dtype) @ Y)

    return A.to(dtype), D, apply_d


def dense_top(A, D, k):
    M = A.double().T @ D @ A.double()
    values, vectors = torch.linalg.eigh((M + M.T) / 2)
    return values.flip(0), vectors.flip(1)[:, :k], float(M.trace())


def test_factored_top_eigen_matches_a_dense_eigh_in_float64():
    A, D, apply_d = factored_operator()
    k = 24
    eig = factored_top_eigen(A, apply_d, k)
    values, vectors, _ = dense_top(A, D, k)
    assert eig.converged and 1 <= eig.iterations <= 12
    assert eig.vectors.shape == (A.shape[1], k) and eig.vectors.dtype == F64 and eig.values.dtype == F64
    # stopped on the excess estimate (<= 1e-8 of the top-k sum): values agree to second order, vectors to first
    torch.testing.assert_close(eig.values, values[:k], rtol=1e-9, atol=0)
    assert eig.excess <= 1e-8 * float(eig.values.sum()) and eig.residual <= 1e-3
    assert projector_gap(eig.vectors, vectors) < 1e-4
    torch.testing.assert_close(eig.vectors.T @ eig.vectors, torch.eye(k, dtype=F64), rtol=0, atol=1e-12)
    # the residual criterion alone (excess_tol=0): converged to float64 accuracy
    tight = factored_top_eigen(A, apply_d, k, excess_tol=0.0)
    assert tight.converged and tight.residual <= 16 * torch.finfo(F64).eps * A.shape[1] ** 0.5
    torch.testing.assert_close(tight.values, values[:k], rtol=1e-12, atol=0)
    assert projector_gap(tight.vectors, vectors) < 1e-10
    # bit-identical with the same start, the same subspace with another
    again = factored_top_eigen(A, apply_d, k, excess_tol=0.0)
    assert torch.equal(again.vectors, tight.vectors) and torch.equal(again.values, tight.values)
    other = factored_top_eigen(A, apply_d, k, excess_tol=0.0, seed=5)
    assert projector_gap(other.vectors, tight.vectors) < 1e-10


def test_factored_top_eigen_float32_and_the_excess_estimate():
    A, D, apply_d = factored_operator(dtype=torch.float32)
    k = 24
    values, vectors, trace = dense_top(A, D, k)
    eig = factored_top_eigen(A, apply_d, k, trace=trace)
    assert eig.converged and eig.vectors.dtype == torch.float32
    tail = trace - float(values[:k].sum())
    # judged relative to the tail: the top-k sum it captures falls short by at most ~excess_tol of the tail
    V = torch.linalg.qr(eig.vectors.double()).Q  # the same span, orthonormal in float64
    captured = float(((A.double() @ V) * (D @ (A.double() @ V))).sum())  # trace(V^T M V)
    shortfall = float(values[:k].sum()) - captured
    assert -1e-7 * tail <= shortfall <= 1e-7 * tail  # measured ~2e-9 here, as the estimate says
    assert eig.excess <= 1e-8 * tail
    assert projector_gap(eig.vectors, vectors) < 1e-3


def test_factored_top_eigen_gives_up_on_a_flat_spectrum():
    g = torch.Generator().manual_seed(14)
    A = torch.linalg.qr(torch.randn(500, 300, generator=g, dtype=F64)).Q.T  # orthonormal rows: M = D on them
    values = 10.0 - 1e-3 * torch.arange(300, dtype=F64)
    U = torch.linalg.qr(torch.randn(300, 300, generator=g, dtype=F64)).Q
    D = (U * values) @ U.T
    eig = factored_top_eigen(A, lambda Y: D @ Y, 30)
    assert not eig.converged and 3 <= eig.iterations < 12


def test_factored_top_eigen_rank_deficient_and_invalid_arguments():
    g = torch.Generator().manual_seed(15)
    A = torch.randn(6, 300, generator=g, dtype=F64).repeat(50, 1)  # rank 6 < k
    eig = factored_top_eigen(A, lambda Y: Y, 10)
    assert eig.converged
    assert float(eig.values[6:].abs().max()) <= 1e-10 * float(eig.values[0])
    ref_values, ref_vectors, _ = dense_top(A, torch.eye(300, dtype=F64), 6)
    torch.testing.assert_close(eig.values[:6], ref_values[:6], rtol=1e-9, atol=0)
    assert projector_gap(eig.vectors[:, :6], ref_vectors) < 1e-8
    with pytest.raises(ValueError, match="must be \\(n, d\\)"):
        factored_top_eigen(torch.zeros(3), lambda Y: Y, 1)
    with pytest.raises(ValueError, match="k must be"):
        factored_top_eigen(A, lambda Y: Y, 0)
