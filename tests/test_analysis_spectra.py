"""hydralib.analysis.spectra (and the shared plumbing in analysis.core): known answers and dense references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hydralib.adapters import AdapterSet
from hydralib.analysis.core import FactorStack, aggregate, parse_module_name
from hydralib.analysis.spectra import (
    adapter_spectra,
    captured_energy,
    delta_singular_values,
    effective_rank,
    energy_curve,
    factor_singular_values,
    module_spectra,
    rank_for_energy,
    shared_directions,
    stacked_singular_values,
)


def _random_stack(n=5, ranks=(3, 3, 3, 3, 3), d_in=12, d_out=7, seed=0, scalings=None):
    g = torch.Generator().manual_seed(seed)
    A = [torch.randn(r, d_in, generator=g) for r in ranks[:n]]
    B = [torch.randn(d_out, r, generator=g) for r in ranks[:n]]
    s = scalings if scalings is not None else [0.5 + i for i in range(n)]
    return A, B, s, FactorStack(A, B, s, module="model.layers.0.self_attn.q_proj")


# --------------------------------------------------------------------------- module names and aggregation


@pytest.mark.parametrize(
    "name, layer, projection",
    [
        ("model.layers.12.self_attn.q_proj", 12, "q_proj"),
        ("transformer.h.3.attn.c_attn", 3, "c_attn"),
        ("encoder.layer.1.attention.self.query", 1, "query"),
        ("base_model.model.model.layers.7.mlp.down_proj.lora_A.weight", 7, "down_proj"),
        ("lm_head", None, "lm_head"),
    ],
)
def test_parse_module_name(name, layer, projection):
    key = parse_module_name(name)
    assert (key.layer, key.projection) == (layer, projection)


def test_aggregate_by_projection_and_layer_sorts_layers_numerically_and_pads():
    values = {
        "model.layers.10.self_attn.q_proj": 1.0,
        "model.layers.2.self_attn.q_proj": 3.0,
        "model.layers.2.self_attn.k_proj": 5.0,
        "model.layers.10.self_attn.k_proj": float("nan"),  # ignored by nanmean
    }
    assert aggregate(values, by="projection") == {"q_proj": 2.0, "k_proj": 5.0}
    by_layer = aggregate(values, by="layer")
    assert list(by_layer) == [2, 10] and by_layer == {2: 4.0, 10: 1.0}
    assert aggregate(values, by="projection", reduce="count") == {"q_proj": 2, "k_proj": 2}
    curves = aggregate({"l.0.q": np.array([0.5, 1.0]), "l.1.q": np.array([0.5, 0.75, 1.0])}, by="all", pad=1.0)
    np.testing.assert_allclose(curves["all"], [0.5, 0.875, 1.0])
    with pytest.raises(ValueError, match="unknown grouping"):
        aggregate(values, by="depth")


def test_factor_stack_rejects_shapes_that_disagree_naming_the_module():
    A, B = torch.randn(2, 5), torch.randn(4, 2)
    with pytest.raises(ValueError, match="module 'layers.3.q_proj'.*task 't1'"):
        FactorStack([A, torch.randn(2, 6)], [B, B], [1, 1], module="layers.3.q_proj", tasks=["t0", "t1"])
    with pytest.raises(ValueError, match="module 'm'.*not \\(r, d_in\\) and \\(d_out, r\\)"):
        FactorStack([A], [torch.randn(4, 3)], [1], module="m")
    with pytest.raises(ValueError, match="NaN/Inf"):
        FactorStack([A * float("nan")], [B], [1], module="m")


# --------------------------------------------------------------------------- generic spectra


def test_energy_curve_and_effective_rank_known_values():
    np.testing.assert_allclose(energy_curve([3.0, 4.0]), [16 / 25, 1.0])  # sorted descending first
    np.testing.assert_allclose(energy_curve([[1.0, np.nan], [0.0, 0.0]]), [[1.0, 1.0], [np.nan, np.nan]])
    assert effective_rank([2.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert effective_rank([0.7] * 5) == pytest.approx(5.0)
    p = np.array([3.0, 1.0]) / 4
    assert effective_rank([3.0, 1.0]) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    np.testing.assert_allclose(effective_rank(np.array([[1.0, 1.0, np.nan], [1.0, 0.0, 0.0]])), [2.0, 1.0])
    assert rank_for_energy([3.0, 2.0, 1.0], q=9 / 14) == 1
    assert rank_for_energy([3.0, 2.0, 1.0], q=0.9) == 2


# --------------------------------------------------------------------------- per-task spectra vs dense


def test_factor_singular_values_match_dense_svd_with_mixed_ranks():
    A, B, s, st = _random_stack(n=3, ranks=(2, 4, 3))
    fa, fb = factor_singular_values(st, "a"), factor_singular_values(st, "b")
    assert fa.shape == (3, 4)
    for i in range(3):
        r = A[i].shape[0]
        np.testing.assert_allclose(fa[i, :r], torch.linalg.svdvals(A[i].double()).numpy(), rtol=1e-9)
        np.testing.assert_allclose(fb[i, :r], torch.linalg.svdvals(B[i].double()).numpy(), rtol=1e-9)
        assert np.isnan(fa[i, r:]).all() and np.isnan(fb[i, r:]).all()
    # the list-of-tensors route (direct SVD) agrees with the stack route (Gram eigenvalues)
    np.testing.assert_allclose(factor_singular_values(A, "a"), fa, rtol=1e-9)
    np.testing.assert_allclose(factor_singular_values(B, "b"), fb, rtol=1e-9)


def test_delta_singular_values_match_dense_svd_of_scaled_update():
    A, B, s, st = _random_stack(n=3, ranks=(2, 4, 3), scalings=[2.0, -0.5, 1.5])
    got = delta_singular_values(st)
    for i in range(3):
        dense = torch.linalg.svdvals(s[i] * B[i].double() @ A[i].double()).numpy()
        r = A[i].shape[0]
        np.testing.assert_allclose(got[i, :r], dense[:r], rtol=1e-9, atol=1e-12)
        assert np.isnan(got[i, r:]).all()


# --------------------------------------------------------------------------- stacked spectra vs dense


@pytest.mark.parametrize("d_in, d_out", [(40, 30), (9, 6)])  # N r <= d (task Gram) and N r > d (feature Gram)
def test_stacked_singular_values_match_dense_svd(d_in, d_out):
    A, B, s, st = _random_stack(n=5, ranks=(3,) * 5, d_in=d_in, d_out=d_out, seed=1)
    dense_a = torch.linalg.svdvals(torch.cat(A).double()).numpy()
    dense_b = torch.linalg.svdvals(torch.cat(B, dim=1).double()).numpy()
    got_a, got_b = stacked_singular_values(st, "a"), stacked_singular_values(st, "b")
    assert got_a.shape == (min(15, d_in),) and got_b.shape == (min(15, d_out),)
    np.testing.assert_allclose(got_a, dense_a, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(got_b, dense_b, rtol=1e-7, atol=1e-10)
    # list input gives the same
    np.testing.assert_allclose(stacked_singular_values(A, "a"), got_a, rtol=1e-9)


def _dense_captured(mats: list[np.ndarray]) -> np.ndarray:
    """c[i, k-1] = ||X_i V_k||^2 / ||X_i||^2 with V_k the top-k right singular vectors of [X_1; ...; X_N]."""
    x = np.concatenate(mats)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    K = min(x.shape)
    out = np.zeros((len(mats), K))
    for i, m in enumerate(mats):
        proj = m @ vt[:K].T
        out[i] = np.cumsum((proj**2).sum(axis=0)) / (m**2).sum()
    return out


@pytest.mark.parametrize("d_in, d_out", [(40, 30), (9, 6)])
def test_captured_energy_and_shared_directions_match_dense_projection(d_in, d_out):
    A, B, s, st = _random_stack(n=5, ranks=(3,) * 5, d_in=d_in, d_out=d_out, seed=2)
    dense_a = _dense_captured([a.double().numpy() for a in A])
    dense_b = _dense_captured([b.double().numpy().T for b in B])  # column space of B = row space of B^T
    np.testing.assert_allclose(captured_energy(st, "a"), dense_a, atol=1e-9)
    np.testing.assert_allclose(captured_energy(st, "b"), dense_b, atol=1e-9)
    for q in (0.5, 0.9, 0.99):
        assert shared_directions(st, "a", q) == int(np.argmax(dense_a.min(axis=0) >= q) + 1)
        assert shared_directions(st, "b", q) == int(np.argmax(dense_b.min(axis=0) >= q) + 1)


def test_identical_factors_need_only_their_own_directions():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(4, 20, generator=g)
    B = torch.randn(10, 4, generator=g)
    st = FactorStack([A] * 6, [B] * 6, [1.0] * 6)
    # the stacked spectrum is sqrt(N) times the single spectrum, then zeros
    np.testing.assert_allclose(stacked_singular_values(st, "a")[:4], math.sqrt(6) * torch.linalg.svdvals(A.double()).numpy(), rtol=1e-8)
    assert np.all(stacked_singular_values(st, "a")[4:] < 1e-6)
    for q in (0.5, 0.9, 1.0):
        assert shared_directions(st, "a", q) == rank_for_energy(torch.linalg.svdvals(A.double()).numpy(), q)
        assert shared_directions(st, "b", q) == rank_for_energy(torch.linalg.svdvals(B.double()).numpy(), q)


def test_disjoint_subspaces_need_every_direction_of_the_weakest_task():
    # task i uses coordinates [i r, (i+1) r) with scale (i+1): nothing is shared and the
    # weakest task's directions come last, so k = (N-1) r + ceil(q r).
    n, r, d = 4, 10, 50
    A = [torch.zeros(r, d) for _ in range(n)]
    for i in range(n):
        A[i][:, i * r:(i + 1) * r] = (i + 1) * torch.eye(r)
    B = [torch.ones(3, r)] * n
    st = FactorStack(A, B, [1.0] * n)
    assert shared_directions(st, "a", 0.9) == (n - 1) * r + 9
    assert shared_directions(st, "a", 0.95) == n * r
    assert shared_directions(st, "a", 0.05) == (n - 1) * r + 1


def test_normalize_removes_the_effect_of_one_large_task():
    A, B, s, _ = _random_stack(n=4, ranks=(3,) * 4, d_in=30, seed=4)
    base = FactorStack(A, B, s)
    big = FactorStack([A[0] * 100] + A[1:], B, s)
    for q in (0.6, 0.9):
        assert shared_directions(big, "a", q, normalize=True) == shared_directions(
            FactorStack([a / a.norm() for a in A], B, s), "a", q
        )
    # without normalisation the large task dominates the top directions
    assert captured_energy(big, "a")[0, 2] > captured_energy(base, "a")[0, 2]


def test_zero_lora_b_is_skipped_not_an_error():
    g = torch.Generator().manual_seed(5)
    A = [torch.randn(2, 8, generator=g) for _ in range(3)]
    B = [torch.zeros(6, 2)] * 3  # PEFT's initial B
    ms = module_spectra(FactorStack(A, B, [1.0] * 3, module="model.layers.0.self_attn.v_proj"))
    assert ms.shared_b == 0 and np.isnan(ms.captured_b).all()
    assert np.allclose(np.nan_to_num(ms.delta), 0.0)
    row = ms.summary()
    assert row["erank_b"] is None and row["shared_b"] == 0  # NaN becomes None (JSON null)
    json.dumps(row)


# --------------------------------------------------------------------------- adapter sets


def _adapter_set(n_tasks=4, n_layers=3, r=2, hidden=16, kv=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    factors = {}
    for t in range(n_tasks):
        factors[f"task{t}"] = {}
        for layer in range(n_layers):
            for proj, d_out in (("q_proj", hidden), ("k_proj", kv)):
                A = torch.randn(r, hidden, generator=g)
                B = torch.randn(d_out, r, generator=g)
                factors[f"task{t}"][f"model.layers.{layer}.self_attn.{proj}"] = (A, B, 2.0)
    return factors


def test_adapter_spectra_on_an_adapter_set_is_per_module_and_aggregates():
    factors = _adapter_set()
    aset = AdapterSet.from_factors(factors)
    res = adapter_spectra(aset, q=0.9)
    assert sorted(res.modules) == sorted(aset.modules)
    module = "model.layers.1.self_attn.k_proj"
    m = res.modules[module]
    assert (m.layer, m.projection, m.shape) == (1, "k_proj", (8, 16))
    assert m.max_shared_a == min(4 * 2, 16) and m.max_shared_b == min(4 * 2, 8)
    A, B, s = zip(*(factors[t][module] for t in aset.tasks))
    np.testing.assert_allclose(m.stacked_b, torch.linalg.svdvals(torch.cat(B, dim=1).double()).numpy(), rtol=1e-7)
    np.testing.assert_allclose(m.delta[1], torch.linalg.svdvals(2.0 * B[1].double() @ A[1].double()).numpy()[:2], rtol=1e-9)
    table = res.table()
    assert len(table) == len(aset.modules) and {"shared_a", "erank_delta", "layer"} <= set(table[0])
    by_proj = res.aggregate("shared_b", "projection")
    expected = np.mean([res.modules[f"model.layers.{l}.self_attn.q_proj"].shared_b for l in range(3)])
    assert by_proj["q_proj"] == pytest.approx(expected)
    curves = res.aggregate("energy_a", "layer")
    assert sorted(curves) == [0, 1, 2] and curves[0][-1] == pytest.approx(1.0)
    json.dumps(res.summary())
    # a plain mapping works too and gives the same numbers
    res2 = adapter_spectra(factors, modules=[module])
    np.testing.assert_allclose(res2.modules[module].stacked_a, m.stacked_a)
