"""hydralib.analysis.similarity: factored vs dense, known answers, invariances, chance levels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from hydralib.adapters import AdapterSet
from hydralib.analysis.core import FactorStack, offdiagonal
from hydralib.analysis.similarity import (
    adapter_similarity,
    chance_cka,
    chance_corrected,
    chance_overlap,
    cosine_matrix,
    delta_cka,
    delta_cosine,
    factor_cosine,
    module_similarity,
    principal_angles,
    principal_angles_matrix,
    subspace_overlap,
)


def _factors(n, ranks, d_in, d_out, seed):
    g = torch.Generator().manual_seed(seed)
    A = [torch.randn(r, d_in, generator=g, dtype=torch.float64) for r in ranks[:n]]
    B = [torch.randn(d_out, r, generator=g, dtype=torch.float64) for r in ranks[:n]]
    return A, B


def _dense_projector(x: np.ndarray) -> np.ndarray:
    """Projector onto the column space of x."""
    q = scipy.linalg.orth(x)
    return q @ q.T


# --------------------------------------------------------------------------- factored == dense


def test_all_measures_agree_with_dense_computations():
    n, ranks, d_in, d_out = 4, (3, 3, 3, 3), 11, 7
    A, B = _factors(n, ranks, d_in, d_out, seed=0)
    s = [1.0, -2.0, 0.5, 3.0]
    st = FactorStack(A, B, s, module="m")
    dW = [si * b @ a for si, a, b in zip(s, A, B)]
    flat = torch.stack([w.flatten() for w in dW])
    np.testing.assert_allclose(delta_cosine(st), cosine_matrix(flat), atol=1e-12)
    np.testing.assert_allclose(factor_cosine(st, "a"), cosine_matrix(torch.stack([a.flatten() for a in A])), atol=1e-12)
    np.testing.assert_allclose(factor_cosine(st, "b"), cosine_matrix(torch.stack([b.flatten() for b in B])), atol=1e-12)

    def cka(Ks):
        out = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                out[i, j] = (Ks[i] * Ks[j]).sum() / (np.linalg.norm(Ks[i]) * np.linalg.norm(Ks[j]))
        return out

    Kin = [(w.T @ w).numpy() for w in dW]
    Kout = [(w @ w.T).numpy() for w in dW]
    np.testing.assert_allclose(delta_cka(st, "a"), cka(Kin), atol=1e-10)
    np.testing.assert_allclose(delta_cka(st, "b"), cka(Kout), atol=1e-10)
    chance_in = np.array([[np.trace(Ki) * np.trace(Kj) / (d_in * np.linalg.norm(Ki) * np.linalg.norm(Kj))
                           for Kj in Kin] for Ki in Kin])
    np.testing.assert_allclose(chance_cka(st, "a"), chance_in, rtol=1e-10)

    Pa = [_dense_projector(a.numpy().T) for a in A]
    Pb = [_dense_projector(b.numpy()) for b in B]
    dense_oa = np.array([[np.linalg.norm(Pi @ Pj) ** 2 / 3 for Pj in Pa] for Pi in Pa])
    dense_ob = np.array([[np.linalg.norm(Pi @ Pj) ** 2 / 3 for Pj in Pb] for Pi in Pb])
    np.testing.assert_allclose(subspace_overlap(st, "a"), dense_oa, atol=1e-10)
    np.testing.assert_allclose(subspace_overlap(st, "b"), dense_ob, atol=1e-10)


def test_principal_angles_match_scipy_with_mixed_ranks():
    A, B = _factors(3, (2, 4, 3), d_in=9, d_out=6, seed=1)
    st = FactorStack(A, B, [1.0] * 3)
    for side, mats in (("a", [a.numpy().T for a in A]), ("b", [b.numpy() for b in B])):
        got = principal_angles_matrix(st, side)
        assert got.shape == (3, 3, 4)
        for i in range(3):
            for j in range(3):
                ref = np.sort(scipy.linalg.subspace_angles(mats[i], mats[j]))
                k = len(ref)
                np.testing.assert_allclose(got[i, j, :k], ref, atol=1e-7)
                assert np.isnan(got[i, j, k:]).all()
                # the overlap is the mean squared cosine of the principal angles
                assert subspace_overlap(st, side)[i, j] == pytest.approx(np.mean(np.cos(ref) ** 2), abs=1e-10)
        pair = principal_angles(A[0], A[1], "a") if side == "a" else principal_angles(B[0], B[1], "b")
        np.testing.assert_allclose(pair, got[0, 1, :2], atol=1e-7)


# --------------------------------------------------------------------------- known answers


def test_identical_adapters_have_similarity_one():
    A, B = _factors(1, (4,), d_in=20, d_out=12, seed=2)
    st = FactorStack(A * 3, B * 3, [1.0, 2.0, 0.5])
    sims = module_similarity(st, kinds=["cosine_a", "cosine_b", "cosine_delta", "overlap_a", "overlap_b",
                                        "cka_a", "cka_b", "angles_a", "angles_b"])
    for kind in ("cosine_a", "cosine_b", "cosine_delta", "overlap_a", "overlap_b", "cka_a", "cka_b"):
        np.testing.assert_allclose(sims[kind], np.ones((3, 3)), atol=1e-9, err_msg=kind)
    assert np.nanmax(sims["angles_a"]) < 1e-5 and np.nanmax(sims["angles_b"]) < 1e-5


def test_orthogonal_subspaces_and_a_known_rotation():
    e = torch.eye(6, dtype=torch.float64)
    theta = 0.3
    A1 = e[[0, 1]]
    A2 = torch.stack([e[0], np.cos(theta) * e[1] + np.sin(theta) * e[2]])
    A3 = e[[3, 4]]
    B = [torch.ones(5, 2, dtype=torch.float64)] * 3
    st = FactorStack([A1, A2, A3], B, [1.0] * 3)
    angles = principal_angles_matrix(st, "a")
    np.testing.assert_allclose(angles[0, 1], [0.0, theta], atol=1e-7)
    np.testing.assert_allclose(angles[0, 2], [np.pi / 2] * 2, atol=1e-7)
    ov = subspace_overlap(st, "a")
    assert ov[0, 1] == pytest.approx((1 + np.cos(theta) ** 2) / 2) and ov[0, 2] == pytest.approx(0.0, abs=1e-12)


def test_independent_random_subspaces_overlap_about_r_over_d():
    # E ||P_i P_j||_F^2 / r = r / d for independent uniform subspaces; 190 pairs, 5 standard errors
    n, r, d = 20, 6, 120
    A, B = _factors(n, (r,) * n, d_in=d, d_out=40, seed=3)
    st = FactorStack(A, B, [1.0] * n)
    ov = offdiagonal(subspace_overlap(st, "a"))
    assert abs(ov.mean() - r / d) < 5 * ov.std() / np.sqrt(ov.size)
    assert abs(ov.mean() - r / d) < 0.15 * r / d
    np.testing.assert_allclose(offdiagonal(chance_overlap(st, "a")), r / d)
    np.testing.assert_allclose(offdiagonal(chance_overlap(st, "b")), r / 40)
    # chance-corrected overlap of random subspaces is about 0 on both sides, although
    # the raw B-side overlap (d_out = 40) is much larger than the A side (d_in = 120)
    ob = offdiagonal(subspace_overlap(st, "b"))
    assert ob.mean() > 2 * ov.mean()
    for side in ("a", "b"):
        corr = offdiagonal(chance_corrected(subspace_overlap(st, side), chance_overlap(st, side)))
        assert abs(corr.mean()) < 0.03
        cka = offdiagonal(chance_corrected(delta_cka(st, side), chance_cka(st, side)))
        assert abs(cka.mean()) < 0.03


def test_zero_lora_b_gives_undefined_b_overlap_not_an_error():
    A, _ = _factors(2, (2, 2), d_in=8, d_out=5, seed=4)
    st = FactorStack(A, [torch.zeros(5, 2)] * 2, [1.0, 1.0])
    assert np.isnan(subspace_overlap(st, "b")).all()
    assert np.isnan(delta_cosine(st)).all()
    np.testing.assert_allclose(subspace_overlap(st, "a")[0, 0], 1.0)


# --------------------------------------------------------------------------- invariances


def test_reparametrisation_invariance_and_factor_cosine_non_invariance():
    A, B = _factors(3, (4, 4, 4), d_in=15, d_out=9, seed=5)
    g = torch.Generator().manual_seed(6)
    G = [torch.randn(4, 4, generator=g, dtype=torch.float64) + 3 * torch.eye(4, dtype=torch.float64) for _ in range(3)]
    A2 = [Gi @ a for Gi, a in zip(G, A)]
    B2 = [b @ torch.linalg.inv(Gi) for Gi, b in zip(G, B)]
    s1, s2 = [1.0, 2.0, 3.0], [0.1, 5.0, 1.0]  # the scalings must not matter for the normalised measures
    before = module_similarity(FactorStack(A, B, s1))
    after_reparam = module_similarity(FactorStack(A2, B2, s1))
    after_scaling = module_similarity(FactorStack(A, B, s2))
    for kind in ("overlap_a", "overlap_b", "cka_a", "cka_b", "cosine_delta", "chance_cka_a", "chance_overlap_b"):
        np.testing.assert_allclose(after_reparam[kind], before[kind], atol=1e-9, err_msg=kind)
        if kind != "cosine_delta":  # cosine of dW depends on the signs of the scalings only
            np.testing.assert_allclose(after_scaling[kind], before[kind], atol=1e-9, err_msg=kind)
    # the cosine of flattened factors changes although no dW changed
    assert np.abs(offdiagonal(after_reparam["cosine_a"]) - offdiagonal(before["cosine_a"])).max() > 0.05
    assert np.abs(offdiagonal(after_reparam["cosine_b"]) - offdiagonal(before["cosine_b"])).max() > 0.05


def test_factor_cosine_needs_equal_ranks():
    A, B = _factors(2, (2, 3), d_in=8, d_out=5, seed=7)
    st = FactorStack(A, B, [1.0, 1.0], module="model.layers.0.self_attn.q_proj")
    with pytest.raises(ValueError, match="q_proj.*equal ranks"):
        factor_cosine(st, "a")
    sims = module_similarity(st)
    assert np.isnan(sims["cosine_a"]).all() and np.isfinite(sims["overlap_a"]).all()
    assert sims["chance_overlap_a"][0, 1] == pytest.approx(3 / 8)  # max(k_i, k_j) / d
    with pytest.raises(ValueError, match="unknown kinds"):
        module_similarity(st, kinds=["cosine"])


# --------------------------------------------------------------------------- adapter sets


def test_adapter_similarity_on_an_adapter_set():
    g = torch.Generator().manual_seed(8)
    factors = {
        t: {f"model.layers.{l}.self_attn.{p}": (torch.randn(2, 12, generator=g), torch.randn(d, 2, generator=g), 2.0)
            for l in range(2) for p, d in (("q_proj", 12), ("v_proj", 4))}
        for t in ("t0", "t1", "t2")
    }
    aset = AdapterSet.from_factors(factors)
    res = adapter_similarity(aset)
    assert res.tasks == ["t0", "t1", "t2"] and sorted(res.modules) == sorted(aset.modules)
    module = "model.layers.1.self_attn.v_proj"
    dense = torch.stack([aset.delta(t, module).flatten() for t in aset.tasks])
    np.testing.assert_allclose(res.kind("cosine_delta")[module], cosine_matrix(dense), atol=1e-7)
    means = res.offdiagonal_means("overlap_b", by="projection")
    assert set(means) == {"q_proj", "v_proj"}
    expected = np.mean([offdiagonal(res.kind("overlap_b")[f"model.layers.{l}.self_attn.v_proj"]).mean() for l in range(2)])
    assert means["v_proj"] == pytest.approx(expected)
    assert res.mean_matrix("cka_a", by="layer")[0].shape == (3, 3)
    corrected = res.corrected("overlap_a")[module]
    np.testing.assert_allclose(corrected, (res.kind("overlap_a")[module] - 2 / 12) / (1 - 2 / 12))
    summary = res.summary()
    json.dumps(summary)
    assert set(summary) >= {"cosine_a", "overlap_b", "cka_b", "chance_overlap_a"}
    with pytest.raises(ValueError, match="was not computed"):
        res.kind("angles_a")
