"""Factored linear algebra (hydralib.merge.lowrank) against dense references."""

from __future__ import annotations

import pytest
import torch

from hydralib.errors import AdapterError
from hydralib.merge.lowrank import (
    block_sums,
    check_factors,
    delta_inner_products,
    delta_norms_sq,
    dense_stacked_floor,
    dense_weighted_sum,
    empty_buffer,
    gram64,
    lora_inner,
    lowrank_svd,
    matmul,
    matmul64,
    matmul64_rows,
    matmul_nt,
    row_space_basis,
    stack_lora_a,
    stacked_gram,
    stack_lora_b,
    to_float64,
    top_eigenpairs,
    truncated_svd_dense,
    weighted_gram,
)
from hydralib.merge.synthetic import random_lora_factors

F64 = torch.float64


def factors(n=4, d_out=20, d_in=14, ranks=(2, 3, 1, 4), seed=0, dtype=F64, shared_a=0.0):
    g = torch.Generator().manual_seed(seed)
    As = [torch.randn(r, d_in, generator=g, dtype=F64).to(dtype) for r in ranks[:n]]
    if shared_a:
        As = [(1 - shared_a) * A + shared_a * As[0][: A.shape[0]] if A.shape[0] <= As[0].shape[0] else A for A in As]
    Bs = [torch.randn(d_out, r, generator=g, dtype=F64).to(dtype) for r in ranks[:n]]
    ss = [0.5 + i for i in range(n)]
    return As, Bs, ss


def dense(As, Bs, ss):
    return [s * (B @ A) for A, B, s in zip(As, Bs, ss)]


def test_row_space_basis_is_orthonormal_and_spans_rows():
    As, _, _ = factors()
    Q, C = row_space_basis(As)
    A_cat = stack_lora_a(As)
    assert Q.shape == (14, 10) and C.shape == (10, 10)
    torch.testing.assert_close(Q.T @ Q, torch.eye(10, dtype=F64))
    torch.testing.assert_close(C, A_cat @ Q)
    torch.testing.assert_close(C @ Q.T, A_cat)  # every row of every A_i lies in span(Q)


def test_row_space_basis_when_ranks_exceed_d_in_and_rows_repeat():
    As, _, _ = factors(ranks=(6, 6, 6, 6), d_in=10)  # sum r = 24 > d_in = 10
    Q, C = row_space_basis(As)
    assert Q.shape == (10, 10)
    torch.testing.assert_close(C @ Q.T, stack_lora_a(As))
    same = [As[0]] * 3  # identical A: rank-deficient stack
    Q, C = row_space_basis(same)
    torch.testing.assert_close(Q.T @ Q, torch.eye(Q.shape[1], dtype=F64))
    torch.testing.assert_close(C @ Q.T, stack_lora_a(same))


def test_block_sums_with_unequal_ranks():
    m = torch.arange(36, dtype=F64).reshape(6, 6)
    out = block_sums(m, [1, 2, 3])
    assert out.shape == (3, 3)
    assert out[0, 0] == m[0, 0]
    assert out[1, 2] == m[1:3, 3:6].sum()
    assert out.sum() == m.sum()


def test_delta_inner_products_match_dense():
    As, Bs, ss = factors()
    D = dense(As, Bs, ss)
    expected = torch.stack([torch.stack([(a * b).sum() for b in D]) for a in D])
    torch.testing.assert_close(delta_inner_products(As, Bs, ss), expected)
    _, C = row_space_basis(As)
    torch.testing.assert_close(delta_inner_products(As, Bs, ss, coords=C), expected)
    torch.testing.assert_close(delta_norms_sq(As, Bs, ss), expected.diagonal())
    torch.testing.assert_close(lora_inner(As[0], Bs[0], As[1], Bs[1]) * ss[0] * ss[1], expected[0, 1])


def test_weighted_gram_is_the_gram_of_MQ():
    As, Bs, ss = factors()
    coeffs = [0.3, -1.0, 2.0, 0.7]
    Q, C = row_space_basis(As)
    row_coeffs = torch.repeat_interleave(torch.tensor(coeffs, dtype=F64), torch.tensor([A.shape[0] for A in As]))
    H, P = weighted_gram(C, stack_lora_b(Bs), row_coeffs)
    MQ = dense_weighted_sum(As, Bs, coeffs) @ Q
    torch.testing.assert_close(H, MQ.T @ MQ)
    torch.testing.assert_close(stack_lora_b(Bs) @ P, MQ)


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_lowrank_svd_matches_dense_truncated_svd(rank):
    As, Bs, _ = factors()
    coeffs = [0.3, -1.0, 2.0, 0.7]
    M = dense_weighted_sum(As, Bs, coeffs)
    svd = lowrank_svd(As, Bs, coeffs, rank)
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    best = (U[:, :rank] * S[:rank]) @ Vh[:rank]
    assert svd.lora_a.shape == (rank, 14) and svd.lora_b.shape == (20, rank)
    torch.testing.assert_close(svd.lora_b @ svd.lora_a, best)
    assert svd.singular_values.shape == (10,)  # R = sum of ranks; M has no other singular values
    torch.testing.assert_close(svd.singular_values, S[:10])
    assert S[10:].abs().max() < 1e-10
    assert svd.tail_energy == pytest.approx(float((S[rank:] ** 2).sum()), rel=1e-9, abs=1e-9)
    torch.testing.assert_close(svd.lora_a @ svd.lora_a.T, torch.eye(rank, dtype=F64))
    # the dense path (used by the baselines) gives the same factors
    dense_svd = truncated_svd_dense(M, rank)
    torch.testing.assert_close(dense_svd.lora_b @ dense_svd.lora_a, best)
    assert dense_svd.tail_energy == pytest.approx(svd.tail_energy, rel=1e-9, abs=1e-9)


def test_lowrank_svd_is_exact_at_full_rank_and_pads_beyond():
    As, Bs, _ = factors()
    coeffs = [1.0, 1.0, 1.0, 1.0]
    M = dense_weighted_sum(As, Bs, coeffs)
    svd = lowrank_svd(As, Bs, coeffs, rank=10)  # = sum of ranks
    torch.testing.assert_close(svd.lora_b @ svd.lora_a, M)
    assert svd.tail_energy < 1e-20
    wide = lowrank_svd(As, Bs, coeffs, rank=16)  # > R = 10: zero rows / columns
    assert wide.lora_a.shape == (16, 14) and wide.lora_b.shape == (20, 16)
    assert wide.lora_a[10:].abs().max() == 0 and wide.lora_b[:, 10:].abs().max() == 0
    torch.testing.assert_close(wide.lora_b @ wide.lora_a, M)


def test_float32_factored_agrees_with_float64_dense():
    f = random_lora_factors(6, {"m": (64, 48)}, rank=4, seed=3, shared_a=0.5)
    As = [f[t]["m"][0] for t in f]
    Bs = [f[t]["m"][1] for t in f]
    coeffs = [2.0] * 6
    svd = lowrank_svd(As, Bs, coeffs, rank=5)
    assert svd.lora_a.dtype == torch.float32
    M = dense_weighted_sum([A.double() for A in As], [B.double() for B in Bs], coeffs)
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    best = (U[:, :5] * S[:5]) @ Vh[:5]
    err = ((svd.lora_b.double() @ svd.lora_a.double() - best) ** 2).sum() / (best**2).sum()
    assert err < 1e-9


def test_stacked_gram_matches_the_dense_stacked_group_means():
    As, Bs, ss = factors()
    w = [0.5, 2.0, 1.0, 1.5]
    groups = [1, 0, 1, 0]
    gram = stacked_gram(As, Bs, ss, w, groups, 2)
    D = dense(As, Bs, ss)
    blocks, spread = [], 0.0
    for k in range(2):
        members = [i for i in range(4) if groups[i] == k]
        W = sum(w[i] for i in members)
        M = sum(w[i] * D[i] for i in members) / W
        spread += sum(w[i] * float(((D[i] - M) ** 2).sum()) for i in members)
        blocks.append(W**0.5 * M)
        torch.testing.assert_close(gram.lora_b[k] @ gram.coords[k], M @ gram.Q)  # M_k Q, factored
    SQ = torch.cat(blocks) @ gram.Q
    torch.testing.assert_close(gram.H, SQ.T @ SQ)
    assert gram.spread == pytest.approx(spread, rel=1e-10)
    assert gram.energy == pytest.approx(sum(w[i] * float((D[i] ** 2).sum()) for i in range(4)), rel=1e-12)


def test_top_eigenpairs_fixes_signs():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(8, 5, generator=g, dtype=F64)
    values, V = top_eigenpairs(X.T @ X, 3)
    assert (values[:-1] >= values[1:]).all()
    pivots = V.abs().argmax(dim=0)
    assert (V[pivots, torch.arange(3)] > 0).all()
    _, V2 = top_eigenpairs(-(-(X.T @ X)), 3)
    torch.testing.assert_close(V, V2)


def test_truncated_svd_dense_signs_are_deterministic():
    g = torch.Generator().manual_seed(2)
    M = torch.randn(9, 7, generator=g)
    a, b = truncated_svd_dense(M, 3), truncated_svd_dense(M.clone(), 3)
    assert torch.equal(a.lora_a, b.lora_a) and torch.equal(a.lora_b, b.lora_b)
    pivots = a.lora_a.abs().argmax(dim=1)
    assert (a.lora_a[torch.arange(3), pivots] > 0).all()


def test_dense_floor_reference_is_zero_when_every_task_has_a_head():
    As, Bs, ss = factors()
    ref = dense_stacked_floor(dense(As, Bs, ss), [1.0] * 4, [0, 1, 2, 3], rank=10)
    assert ref["floor"] < 1e-20 and ref["spread"] == 0.0


def test_check_factors_names_the_module():
    As, Bs, ss = factors()
    module = "model.layers.0.self_attn.q_proj"
    assert check_factors(As, Bs, ss, module) == (20, 14)
    bad = [As[0], torch.zeros(3, 15, dtype=F64)] + As[2:]
    with pytest.raises(AdapterError, match=r"model\.layers\.0\.self_attn\.q_proj.*task #1.*20x15"):
        check_factors(bad, [Bs[0], torch.zeros(20, 3, dtype=F64)] + Bs[2:], ss, module)
    with pytest.raises(ValueError, match="q_proj.*not \\(r, d_in\\)"):
        check_factors([As[0]], [Bs[1]], [1.0], module)
    nan = As[0].clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="q_proj.*task t0.*NaN"):
        check_factors([nan], [Bs[0]], [1.0], module, tasks=["t0"])
    with pytest.raises(ValueError, match="q_proj"):
        lowrank_svd([As[0]], [Bs[1]], [1.0], 2, module=module)


# ----------------------------------------------------------------------------- synthetic adapters


def test_synthetic_factors_are_seeded_per_module_and_shared_a_makes_a_alike():
    modules = {"layers.0.q_proj": (16, 12), "layers.0.v_proj": (8, 12)}
    f = random_lora_factors(5, modules, rank=3, seed=1, shared_a=0.9)
    g = random_lora_factors(5, {"layers.0.v_proj": (8, 12)}, rank=3, seed=1, shared_a=0.9)
    A, B, s = f["task2"]["layers.0.v_proj"]
    assert A.shape == (3, 12) and B.shape == (8, 3) and s == 2.0 and A.dtype == torch.float32
    assert torch.equal(A, g["task2"]["layers.0.v_proj"][0])  # independent of the other modules asked for
    assert not torch.equal(A, random_lora_factors(5, modules, rank=3, seed=2, shared_a=0.9)["task2"]["layers.0.v_proj"][0])

    def mean_cos(which, factors):
        flat = [factors[t]["layers.0.q_proj"][which].ravel() for t in factors]
        sims = [torch.nn.functional.cosine_similarity(a, b, dim=0) for i, a in enumerate(flat) for b in flat[i + 1:]]
        return float(torch.stack(sims).mean())

    assert mean_cos(0, f) > 0.8 and abs(mean_cos(1, f)) < 0.3  # A alike, B not
    with pytest.raises(ValueError, match="sum to <= 1"):
        random_lora_factors(2, modules, rank=2, shared_a=0.8, groups=[0, 1], group_a=0.5)
    with pytest.raises(ValueError, match="need groups"):
        random_lora_factors(2, modules, rank=2, group_b=0.5)


# ----------------------------------------------------------------------------- CPU helpers of the factored solvers


def test_check_factors_accepts_large_finite_values_and_rejects_infinities():
    big = torch.full((2, 6), 3e38, dtype=torch.float32)  # finite, but their sum overflows to inf
    B = torch.ones(5, 2, dtype=torch.float32)
    assert check_factors([big], [B], [1.0]) == (5, 6)
    inf = big.clone()
    inf[1, 2] = float("-inf")
    with pytest.raises(ValueError, match="lora_a has NaN/Inf"):
        check_factors([inf], [B], [1.0])
    nan_b = B.clone()
    nan_b[3, 1] = float("nan")
    with pytest.raises(ValueError, match="lora_b has NaN/Inf"):
        check_factors([big], [nan_b], [1.0])


def test_numpy_backed_buffers_and_products_match_torch():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 6, 50, generator=g)
    b = torch.randn(4, 50, 7, generator=g)
    buf = empty_buffer((4, 6, 50), torch.float32)
    assert buf.shape == (4, 6, 50) and buf.dtype == torch.float32 and buf.device.type == "cpu"
    assert empty_buffer((3,), torch.int64).dtype == torch.int64  # other dtypes: torch.empty
    x64 = to_float64(a)
    assert x64.dtype == F64 and torch.equal(x64, a.double()) and to_float64(x64).data_ptr() == x64.data_ptr()
    torch.testing.assert_close(matmul64(a, b), a.double() @ b.double(), rtol=1e-12, atol=1e-12)
    assert matmul64(a, b).dtype == F64
    torch.testing.assert_close(matmul(a, b), a @ b)
    flat = a.reshape(24, 50)
    torch.testing.assert_close(matmul(flat, flat.T), flat @ flat.T)  # the symmetric (syrk) case
    w = torch.randn(3, 3, requires_grad=True)
    assert matmul(w, w).requires_grad  # autograd goes through torch


def test_matmul_nt_is_a_times_b_transposed_on_every_path(monkeypatch):
    import importlib

    lowrank = importlib.import_module("hydralib.merge.lowrank")
    g = torch.Generator().manual_seed(5)
    A = torch.randn(300, 512, generator=g)
    X = torch.randn(40, 512, generator=g)
    DY = torch.randn(300, 64, generator=g)
    cases = [
        (X, A),  # row-major weight (oneDNN where available)
        (DY[:, 10:50].T, A.T),  # strided input, column-major weight
        (X[:, :400], A[:, :400]),  # a column slice as weight: the plain product
        (X[:3, :5], A[:4, :5]),  # too small for oneDNN
        (X.double(), A.double()),  # float64: numpy
    ]
    for a, b in cases:
        out = matmul_nt(a, b)
        ref = a.double() @ b.double().T
        assert out.shape == ref.shape and out.dtype == a.dtype
        tol = 1e-12 if a.dtype == F64 else 1e-5
        assert float((out.double() - ref).abs().max()) <= tol * float(ref.abs().max())
        with monkeypatch.context() as m:  # without oneDNN: exactly matmul(a, b.T)
            m.setattr(lowrank, "_ONEDNN_NT", False)
            assert torch.equal(matmul_nt(a, b), matmul(a, b.T))


def test_chunked_float64_products_equal_matmul64(monkeypatch):
    import importlib

    lowrank = importlib.import_module("hydralib.merge.lowrank")
    g = torch.Generator().manual_seed(6)
    x = torch.randn(7, 5, 33, generator=g)  # float32
    v = torch.randn(4, 33, generator=g)
    flat = x.reshape(35, 33)
    for chunk in (1, 3 * 5 * 33 * 8, 1 << 21):  # one matrix (row) at a time, 3 with a shorter last chunk, all at once
        monkeypatch.setattr(lowrank, "_CHUNK_BYTES", chunk)
        for got, ref in ((gram64(x), matmul64(x, x.mT)), (gram64(x, transpose=True), matmul64(x.mT, x)),
                         (matmul64_rows(flat, v.T), matmul64(flat, v.T))):
            assert got.dtype == F64 and got.shape == ref.shape
            torch.testing.assert_close(got, ref, rtol=1e-13, atol=1e-13)
    x64 = x.double()
    assert torch.equal(gram64(x64), matmul64(x64, x64.mT)) and torch.equal(matmul64_rows(flat.double(), v.T), matmul64(flat, v.T))
