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
    lora_inner,
    lowrank_svd,
    row_space_basis,
    stack_lora_a,
    stacked_gram,
    stack_lora_b,
    top_eigenpairs,
    truncated_svd_dense,
    weighted_gram,
)
from hydralib.synthetic import random_lora_factors

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
