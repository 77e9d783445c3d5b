"""HydraOpt (hydralib.merge.hydraopt): exact and Adam solvers, sides, weighting, grouping."""

from __future__ import annotations

import pytest
import torch

from hydralib import storage
from hydralib.adapters import AdapterSet
from hydralib.errors import AdapterError
from hydralib.merge.baselines import merge_adapters
from hydralib.merge.hydraopt import (
    SOLVERS,
    WEIGHTINGS,
    group_by_clustering,
    group_by_metadata,
    group_by_task,
    group_explicit,
    hydraopt,
    objective,
    resolve_groups,
    solve_adam,
    solve_exact,
    task_similarity,
    task_weights,
)
from hydralib.merge.lowrank import delta_norms_sq, dense_stacked_floor
from hydralib.synthetic import random_lora_factors, synthetic_tasks

F64 = torch.float64
Q_PROJ = "model.layers.0.self_attn.q_proj"
V_PROJ = "model.layers.0.self_attn.v_proj"


def problem(n=6, d_out=18, d_in=14, ranks=None, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    ranks = ranks or [2, 3, 2, 1, 3, 2][:n]
    As = [torch.randn(r, d_in, generator=g, dtype=F64).to(dtype) for r in ranks]
    Bs = [torch.randn(d_out, r, generator=g, dtype=F64).to(dtype) for r in ranks]
    ss = [1.0 + 0.5 * i for i in range(n)]
    w = torch.rand(n, generator=g, dtype=F64) + 0.5
    return As, Bs, ss, w


def dense_objective(shared, heads, As, Bs, ss, w, gidx):
    return sum(float(w[i]) * float(((heads[gidx[i]].double() @ shared.double() - ss[i] * (Bs[i] @ As[i]).double()) ** 2).sum())
               for i in range(len(As)))


def suite(rank=3, seed=0, shared_a=0.5, group_b=0.0, modules=None, dtype=torch.float32):
    tasks, meta = synthetic_tasks(["qa", "summary", "reply"], ["en", "de"])
    modules = modules or {Q_PROJ: (24, 16), V_PROJ: (8, 16)}
    groups = [meta[t]["application"] for t in tasks]
    f = random_lora_factors(len(tasks), modules, rank=rank, seed=seed, shared_a=shared_a, groups=groups,
                            group_b=group_b, task_names=tasks, dtype=dtype)
    return AdapterSet.from_factors(f, base_model="toy-model", metadata=meta)


# ----------------------------------------------------------------------------- exact solver invariants


@pytest.mark.parametrize("groups,rank", [([0, 1, 2, 3, 4, 5], 2), ([0, 0, 1, 1, 2, 2], 4), ([0] * 6, 3), ([0, 1, 0, 2, 1, 0], 9)])
def test_exact_loss_equals_the_dense_eckart_young_floor(groups, rank):
    As, Bs, ss, w = problem()
    K = max(groups) + 1
    sol = solve_exact(As, Bs, ss, w, groups, K, rank)
    ref = dense_stacked_floor([s * (B @ A) for A, B, s in zip(As, Bs, ss)], w.tolist(), groups, rank)
    assert sol.spread == pytest.approx(ref["spread"], rel=1e-9, abs=1e-9)
    assert sol.truncation == pytest.approx(ref["truncation"], rel=1e-8, abs=1e-9)
    assert sol.floor == pytest.approx(ref["floor"], rel=1e-9)
    assert sol.loss == pytest.approx(ref["floor"], rel=1e-9)  # loss evaluated from the factors
    assert sol.loss == pytest.approx(dense_objective(sol.shared, sol.heads, As, Bs, ss, w, groups), rel=1e-9)
    assert sol.shared.shape == (rank, 14) and sol.heads.shape == (K, 18, rank)
    r_eff = min(rank, 13)
    torch.testing.assert_close(sol.shared[:r_eff] @ sol.shared[:r_eff].T, torch.eye(r_eff, dtype=F64))


def test_every_task_its_own_head_with_enough_rank_reconstructs_exactly():
    As, Bs, ss, w = problem()
    total_rank = sum(A.shape[0] for A in As)
    sol = solve_exact(As, Bs, ss, w, list(range(6)), 6, total_rank)
    assert sol.loss < 1e-12 * sol.energy and sol.floor < 1e-12 * sol.energy
    for i in range(6):
        torch.testing.assert_close(sol.heads[i] @ sol.shared, ss[i] * Bs[i] @ As[i])
    # float32 through the whole pipeline: exact up to rounding
    aset = suite(rank=2)
    result = hydraopt(aset, heads="task", rank=12, progress=False)
    assert result.total_loss < 1e-9 * result.total_energy
    for task in aset.tasks:
        torch.testing.assert_close(result.delta(task, Q_PROJ), aset.delta(task, Q_PROJ), rtol=1e-4, atol=1e-6)


def test_rank_beyond_the_row_space_pads_with_zeros():
    As, Bs, ss, w = problem(d_in=5)  # R = d_in = 5 < requested rank 8
    sol = solve_exact(As, Bs, ss, w, [0] * 6, 1, 8)
    assert sol.shared.shape == (8, 5) and sol.shared[5:].abs().max() == 0 and sol.heads[:, :, 5:].abs().max() == 0
    assert sol.truncation < 1e-20


def test_factored_objective_agrees_with_dense_at_any_point():
    As, Bs, ss, w = problem()
    g = torch.Generator().manual_seed(7)
    shared = torch.randn(4, 14, generator=g, dtype=F64)
    heads = torch.randn(3, 18, 4, generator=g, dtype=F64)
    gidx = [0, 1, 2, 0, 1, 2]
    assert objective(shared, heads, As, Bs, ss, w, gidx) == pytest.approx(dense_objective(shared, heads, As, Bs, ss, w, gidx), rel=1e-10)


def test_float32_exact_solver_matches_float64():
    As, Bs, ss, w = problem()
    sol64 = solve_exact(As, Bs, ss, w, [0, 0, 1, 1, 2, 2], 3, 3)
    sol32 = solve_exact([A.float() for A in As], [B.float() for B in Bs], ss, w, [0, 0, 1, 1, 2, 2], 3, 3)
    assert sol32.shared.dtype == torch.float32
    assert sol32.loss == pytest.approx(sol64.loss, rel=1e-4)
    assert sol32.floor == pytest.approx(sol64.floor, rel=1e-4)


def test_weights_scale_the_loss_but_not_the_solution():
    As, Bs, ss, w = problem()
    a = solve_exact(As, Bs, ss, w, [0, 0, 1, 1, 2, 2], 3, 3)
    b = solve_exact(As, Bs, ss, 10 * w, [0, 0, 1, 1, 2, 2], 3, 3)
    assert b.loss == pytest.approx(10 * a.loss, rel=1e-9)
    torch.testing.assert_close(b.heads @ b.shared, a.heads @ a.shared)


def test_one_head_is_the_truncated_svd_of_the_mean_delta():
    aset = suite()
    hydra = hydraopt(aset, heads=1, rank=3, progress=False)
    n = len(aset.tasks)
    ta = merge_adapters(aset, "task_arithmetic", lam=1.0 / n, rank=3, progress=False)
    for module in aset.modules:
        torch.testing.assert_close(hydra.delta(aset.tasks[0], module), ta.delta(module), rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------- Adam


def test_adam_approaches_but_never_undercuts_the_exact_loss():
    As, Bs, ss, w = problem(dtype=torch.float32)
    groups = [0, 0, 1, 1, 2, 2]
    exact = solve_exact(As, Bs, ss, w, groups, 3, 3)
    adam = solve_adam(As, Bs, ss, w, groups, 3, 3, max_steps=3000, device="cpu")
    slack = 1e-5 * exact.energy
    assert adam.loss >= exact.loss - slack
    assert min(adam.history) >= exact.loss - slack
    assert adam.loss <= 1.02 * exact.loss
    assert adam.history[-1] < adam.history[0]
    assert len(adam.history) == adam.steps
    assert adam.floor == pytest.approx(exact.floor)
    assert adam.loss == pytest.approx(dense_objective(adam.shared, adam.heads, As, Bs, ss, w, groups), rel=1e-5)


def test_adam_stops_at_a_target_and_pads_extra_rank():
    As, Bs, ss, w = problem(dtype=torch.float32)
    exact = solve_exact(As, Bs, ss, w, [0] * 6, 1, 6)
    adam = solve_adam(As, Bs, ss, w, [0] * 6, 1, 6, target_loss=1.5 * exact.loss, max_steps=4000, check_every=10)
    assert adam.steps < 4000 and adam.loss <= 1.5 * exact.loss + 1e-5 * exact.energy
    assert adam.shared.shape == (6, 14)  # r' = 6 > r = 3: extra seeded rows


def test_hydraopt_adam_records_history_and_reaches_the_floor():
    aset = suite()
    exact = hydraopt(aset, heads="application", rank=3, progress=False)
    adam = hydraopt(aset, heads="application", rank=3, solver="adam", progress=False, device="cpu",
                    max_steps=2000, target_ratio=0.01)
    assert set(adam.loss_history) == set(aset.modules) and not exact.loss_history
    assert adam.total_floor == pytest.approx(exact.total_floor, rel=1e-6)
    for module in aset.modules:
        m, e = adam.modules[module], exact.modules[module]
        assert m.loss >= e.loss - 1e-5 * e.energy
        assert m.loss <= 1.01 * e.floor + 1e-6 * e.energy or m.steps == 2000
    assert adam.total_loss <= 1.02 * exact.total_loss


# ----------------------------------------------------------------------------- side B


def test_side_b_equals_side_a_on_transposed_factors():
    aset = suite(rank=3, shared_a=0.2)
    transposed = {t: {m: (B.T.contiguous(), A.T.contiguous(), s) for m in aset.modules
                      for A, B, s in [aset.factors(t, m)]} for t in aset.tasks}
    tset = AdapterSet.from_factors(transposed, metadata=aset.metadata)
    side_b = hydraopt(aset, heads="language", rank=2, side="B", progress=False)
    side_a_t = hydraopt(tset, heads="language", rank=2, side="A", progress=False)
    for module in aset.modules:
        b, a = side_b.modules[module], side_a_t.modules[module]
        torch.testing.assert_close(b.shared, a.shared.T)  # shared lora_b (d_out, r')
        torch.testing.assert_close(b.heads, a.heads.transpose(1, 2))  # per-head lora_a (K, r', d_in)
        assert b.loss == pytest.approx(a.loss, rel=1e-6) and b.floor == pytest.approx(a.floor, rel=1e-6)
        d_out, d_in = aset.shape(module)
        assert b.storage == 2 * d_out + 2 * 2 * d_in == storage.hydra_module_params(d_out, d_in, 2, 2, side="B")
    A, B, s = side_b.factors(aset.tasks[0], Q_PROJ)
    assert A.shape == (2, 16) and B.shape == (24, 2) and s == 1.0


def test_the_shared_side_wins_where_adapters_are_alike():
    def losses(aset):
        return [hydraopt(aset, heads="task", rank=3, side=side, progress=False).total_loss for side in "AB"]

    a_side, b_side = losses(suite(shared_a=0.95, seed=1))
    assert a_side < 0.5 * b_side
    tasks, meta = synthetic_tasks(["qa", "summary", "reply"], ["en", "de"])
    b_alike = random_lora_factors(6, {Q_PROJ: (24, 16)}, rank=3, seed=1, shared_b=0.95, task_names=tasks)
    a_side, b_side = losses(AdapterSet.from_factors(b_alike, metadata=meta))
    assert b_side < 0.5 * a_side


# ----------------------------------------------------------------------------- weighting


def test_weighting_options():
    aset = suite()
    norms = delta_norms_sq(*[[aset.factors(t, Q_PROJ)[k] for t in aset.tasks] for k in (0, 1)],
                           [aset.factors(t, Q_PROJ)[2] for t in aset.tasks])
    dense_norms = torch.stack([(aset.delta(t, Q_PROJ).double() ** 2).sum() for t in aset.tasks])
    torch.testing.assert_close(norms, dense_norms, rtol=1e-5, atol=0)
    torch.testing.assert_close(task_weights("norm", aset.tasks, norms), 1 / norms)
    torch.testing.assert_close(task_weights("uniform", aset.tasks, norms), torch.ones(6, dtype=F64))
    explicit = {t: float(i + 1) for i, t in enumerate(aset.tasks)}
    torch.testing.assert_close(task_weights(explicit, aset.tasks, norms), torch.arange(1, 7, dtype=F64))
    assert set(WEIGHTINGS) == {"uniform", "norm"}
    with pytest.raises(ValueError, match="unknown weighting"):
        task_weights("inverse", aset.tasks, norms)

    by_norm = hydraopt(aset, heads=2, rank=2, weighting="norm", modules=[Q_PROJ], progress=False)
    manual = hydraopt(aset, heads=2, rank=2, weighting=(1 / norms).tolist(), modules=[Q_PROJ], progress=False)
    assert by_norm.weighting == "norm" and manual.weighting == "explicit"
    assert by_norm.total_loss == pytest.approx(manual.total_loss, rel=1e-6)
    uniform = hydraopt(aset, heads=2, rank=2, modules=[Q_PROJ], progress=False)
    ones = hydraopt(aset, heads=2, rank=2, weighting=[1.0] * 6, modules=[Q_PROJ], progress=False)
    assert uniform.total_loss == pytest.approx(ones.total_loss, rel=1e-9)
    with pytest.raises(ValueError, match="q_proj.*positive"):
        hydraopt(aset, heads=2, rank=2, weighting=[1.0, 0.0, 1, 1, 1, 1], modules=[Q_PROJ], progress=False)


# ----------------------------------------------------------------------------- grouping


def test_grouping_helpers():
    tasks, meta = synthetic_tasks(["qa", "summary"], ["en", "de", "fr"])
    assert group_by_task(tasks).head_names == tasks
    by_app = group_by_metadata(tasks, meta, "application")
    assert by_app.head_names == ["qa", "summary"] and by_app.index(tasks) == [0, 0, 0, 1, 1, 1]
    by_lang = group_by_metadata(tasks, meta, "language")
    assert by_lang.head_names == ["en", "de", "fr"] and by_lang.index(tasks) == [0, 1, 2, 0, 1, 2]
    mapping = {t: ("x" if "en" in t else "y") for t in tasks}
    explicit = group_explicit(tasks, mapping)
    assert explicit.n_heads == 2 and explicit.task_to_head == mapping
    with pytest.raises(ValueError, match="no head for tasks"):
        group_explicit(tasks, {tasks[0]: "x"})
    with pytest.raises(ValueError, match="no 'domain'"):
        group_by_metadata(tasks, meta, "domain")


def test_clustering_recovers_groups_and_similarity_is_factored():
    aset = suite(shared_a=0.3, group_b=0.9, seed=4)  # B strongly shared inside each application
    sim = task_similarity(aset)
    dense = torch.zeros(6, 6, dtype=F64)
    for m in aset.modules:
        flat = torch.stack([aset.delta(t, m).double().ravel() for t in aset.tasks])
        dense += flat @ flat.T
    norms = dense.diagonal().sqrt()
    torch.testing.assert_close(sim, dense / norms[:, None] / norms[None, :], rtol=1e-5, atol=1e-6)
    grouping = resolve_groups(3, aset)
    assert grouping.index(aset.tasks) == [0, 0, 1, 1, 2, 2]  # qa, summary, reply
    assert grouping.head_names == ["cluster0", "cluster1", "cluster2"]
    assert resolve_groups(1, aset).n_heads == 1 and resolve_groups(6, aset).n_heads == 6
    assert group_by_clustering(aset.tasks, sim, 2).n_heads == 2
    with pytest.raises(ValueError, match="1 <= K"):
        group_by_clustering(aset.tasks, sim, 7)
    with pytest.raises(TypeError, match="heads must be"):
        resolve_groups(2.5, aset)


# ----------------------------------------------------------------------------- the entry point


def test_hydraopt_result_reports_loss_floor_and_storage():
    aset = suite()
    result = hydraopt(aset, heads="application", rank=2, progress=False)
    assert result.head_names == ["qa", "summary", "reply"] and result.n_heads == 3
    assert result.task_to_head["summary-de"] == "summary"
    assert result.base_model == "toy-model" and result.solver == "exact" and result.side == "A"
    expected = sum(storage.hydra_module_params(*aset.shape(m), 2, 3, side="A") for m in aset.modules)
    assert result.storage == expected == 2 * 16 + 3 * 2 * 24 + 2 * 16 + 3 * 2 * 8
    total = sum(3 * (sum(aset.shape(m))) for m in aset.modules) * 6
    assert result.relative_storage(aset) == pytest.approx(expected / total)
    assert result.total_loss == pytest.approx(result.total_floor, rel=1e-4)
    assert result.total_floor == pytest.approx(result.total_spread + result.total_truncation)
    # loss from the per-task reconstructions, dense
    dense = sum(float(((result.delta(t, m).double() - aset.delta(t, m).double()) ** 2).sum())
                for t in aset.tasks for m in aset.modules)
    assert result.total_loss == pytest.approx(dense, rel=1e-4)
    summary = result.summary()
    assert summary["heads"] == 3 and summary["storage"] == expected
    again = result.to_adapter_set()
    assert again.tasks == aset.tasks and again.rank(aset.tasks[0], Q_PROJ) == 2


def test_hydraopt_accepts_factor_dicts_and_checks_arguments():
    tasks, meta = synthetic_tasks(["a", "b"], ["en"])
    f = random_lora_factors(2, {Q_PROJ: (10, 8)}, rank=2, seed=0, task_names=tasks)
    result = hydraopt(f, heads="application", metadata=meta, base_model="m", progress=False)
    assert result.rank == 2 and result.base_model == "m"
    with pytest.raises(ValueError, match="side must be"):
        hydraopt(f, side="C", progress=False)
    with pytest.raises(ValueError, match="unknown solver"):
        hydraopt(f, solver="lbfgs", progress=False)
    with pytest.raises(ValueError, match="takes no solver options.*max_steps"):
        hydraopt(f, max_steps=10, progress=False)
    with pytest.raises(ValueError, match="unknown modules"):
        hydraopt(f, modules=["nope"], progress=False)
    assert "arXiv:2507.17706" in SOLVERS["adam"].reference and "Eckart" in SOLVERS["exact"].reference


def test_shape_errors_name_the_module():
    As, Bs, ss, w = problem()
    Bs[2] = torch.zeros(17, 2, dtype=F64)
    with pytest.raises(AdapterError, match=r"model\.layers\.3\.mlp\.up_proj.*task #2"):
        solve_exact(As, Bs, ss, w, [0] * 6, 1, 2, module="model.layers.3.mlp.up_proj")
    As, Bs, ss, w = problem()
    with pytest.raises(AdapterError, match="up_proj.*heads"):
        solve_exact(As, Bs, ss, w, [0, 2, 2, 2, 2, 2], 3, 2, module="model.layers.3.mlp.up_proj")


# ----------------------------------------------------------------------------- the factored exact path (large R)


def structured_problem(n=10, ranks=None, d_out=40, d_in=320, shared=0.9, shared_b=0.7, seed=21, dtype=F64):
    """Tasks whose lora_A (and lora_B) share a part: R = sum r_i >= SUBSPACE_MIN_SIZE, a gap after r."""
    g = torch.Generator().manual_seed(seed)
    ranks = ranks or [30] * n
    common = torch.randn(max(ranks), d_in, generator=g, dtype=F64)
    common_b = torch.randn(d_out, max(ranks), generator=g, dtype=F64)
    As = [shared * common[:r] + (1 - shared) * torch.randn(r, d_in, generator=g, dtype=F64) for r in ranks]
    Bs = [(shared_b * common_b[:, :r] + (1 - shared_b) * torch.randn(d_out, r, generator=g, dtype=F64)) * 0.1
          for r in ranks]
    ss = [2.0 + 0.1 * i for i in range(n)]
    w = torch.rand(n, generator=g, dtype=F64) + 0.5
    return [A.to(dtype) for A in As], [B.to(dtype) for B in Bs], ss, w


def householder_solve(monkeypatch, *args):
    """The same problem through the Householder / eigensolver path (the factored one switched off)."""
    import importlib

    module = importlib.import_module("hydralib.merge.hydraopt.exact")  # (hydralib.merge.hydraopt is also a function)
    with monkeypatch.context() as m:
        m.setattr(module, "_solve_exact_factored", lambda *a, **k: None)
        return solve_exact(*args)


@pytest.mark.parametrize(
    "groups,ranks",
    [
        (list(range(10)), None),  # K = N
        ([0] * 10, None),  # K = 1
        ([0, 0, 0, 1, 2, 2, 3, 1, 4, 4], None),  # heads of 1 to 3 tasks, not contiguous
        (list(range(10)), [30, 28, 32, 30, 25, 31, 30, 29, 32, 33]),  # unequal ranks: padded
    ],
    ids=["K=N", "K=1", "groups", "unequal-ranks"],
)
def test_factored_exact_path_reaches_the_dense_floor(monkeypatch, groups, ranks):
    As, Bs, ss, w = structured_problem(ranks=ranks)
    K, rank = max(groups) + 1, 30
    sol = solve_exact(As, Bs, ss, w, groups, K, rank)
    assert sol.method == "factored"
    ref = dense_stacked_floor([s * (B @ A) for A, B, s in zip(As, Bs, ss)], w.tolist(), groups, rank)
    assert sol.spread == pytest.approx(ref["spread"], rel=1e-9, abs=1e-12)
    assert sol.truncation == pytest.approx(ref["truncation"], rel=1e-7)  # converged to ~1e-8 of the tail
    assert sol.floor == pytest.approx(ref["floor"], rel=1e-7) and sol.floor >= ref["floor"] * (1 - 1e-12)
    assert sol.loss == pytest.approx(ref["floor"], rel=1e-7) and sol.loss >= ref["floor"] * (1 - 1e-12)
    assert sol.loss == pytest.approx(objective(sol.shared, sol.heads, As, Bs, ss, w, groups), rel=1e-10)
    assert sol.loss == pytest.approx(dense_objective(sol.shared, sol.heads, As, Bs, ss, w, groups), rel=1e-9)
    assert sol.energy == pytest.approx(float(sum(w[i] * (ss[i] * Bs[i] @ As[i]).pow(2).sum() for i in range(10))), rel=1e-12)
    assert sol.shared.shape == (rank, 320) and sol.heads.shape == (K, 40, rank) and sol.eigenvalues.shape == (rank,)
    torch.testing.assert_close(sol.shared @ sol.shared.T, torch.eye(rank, dtype=F64))
    old = householder_solve(monkeypatch, As, Bs, ss, w, groups, K, rank)
    assert old.method == "householder"
    assert sol.loss == pytest.approx(old.loss, rel=1e-7)
    torch.testing.assert_close(sol.eigenvalues, old.eigenvalues, rtol=1e-9, atol=0)
    for k in range(K):  # the same merged updates (the basis of A' may differ by signs)
        new_k, old_k = sol.heads[k] @ sol.shared, old.heads[k] @ old.shared
        assert float((new_k - old_k).norm()) <= 1e-6 * float(old_k.norm())


def test_factored_exact_path_in_float32_agrees_with_float64(monkeypatch):
    As, Bs, ss, w = structured_problem(dtype=torch.float32)
    groups = list(range(10))
    sol = solve_exact(As, Bs, ss, w, groups, 10, 30)
    assert sol.method == "factored" and sol.shared.dtype == sol.heads.dtype == torch.float32
    As64, Bs64 = [A.double() for A in As], [B.double() for B in Bs]  # the same (rounded) adapters in float64
    ref = dense_stacked_floor([s * (B @ A) for A, B, s in zip(As64, Bs64, ss)], w.tolist(), groups, 30)
    assert ref["floor"] * (1 - 1e-12) <= sol.loss <= ref["floor"] * (1 + 1e-7)
    assert sol.floor == pytest.approx(ref["floor"], rel=1e-7)
    assert sol.loss == pytest.approx(objective(sol.shared, sol.heads, As, Bs, ss, w, groups), rel=1e-9)
    old = householder_solve(monkeypatch, As, Bs, ss, w, groups, 10, 30)  # float32 Householder path
    assert sol.loss <= old.loss * (1 + 1e-7)


def test_flat_spectrum_falls_back_to_the_householder_path():
    g = torch.Generator().manual_seed(22)
    n, r, d_in = 10, 30, 320
    Q = torch.linalg.qr(torch.randn(d_in, n * r, generator=g, dtype=F64)).Q.T  # orthonormal rows
    A_cat = (1.0 - 1e-3 * torch.arange(n * r, dtype=F64))[:, None] * Q  # slowly decaying spectrum, no gap
    As = list(A_cat.split(r))
    Bs = [torch.linalg.qr(torch.randn(40, r, generator=g, dtype=F64)).Q for _ in range(n)]  # B_i^T B_i = I
    ss, w, groups = [1.0] * n, torch.ones(n, dtype=F64), list(range(n))
    sol = solve_exact(As, Bs, ss, w, groups, n, 40)
    assert sol.method == "householder"
    ref = dense_stacked_floor([s * (B @ A) for A, B, s in zip(As, Bs, ss)], w.tolist(), groups, 40)
    assert sol.loss == pytest.approx(ref["floor"], rel=1e-9)


def test_hydraopt_on_factored_sizes_both_sides():
    modules = {"model.layers.0.self_attn.q_proj": (48, 300), "model.layers.0.self_attn.v_proj": (300, 40)}
    tasks = [f"t{i}" for i in range(9)]
    f = random_lora_factors(9, modules, rank=32, seed=3, shared_a=0.8, shared_b=0.8, task_names=tasks)
    aset = AdapterSet.from_factors(f)
    for side, module in (("A", "model.layers.0.self_attn.q_proj"), ("B", "model.layers.0.self_attn.v_proj")):
        result = hydraopt(aset, heads="task", rank=16, side=side, modules=[module], progress=False)
        m = result.modules[module]
        As, Bs, ss = zip(*(aset.factors(t, module) for t in tasks))
        if side == "B":
            As, Bs = [B.T for B in Bs], [A.T for A in As]
        sol = solve_exact(list(As), list(Bs), ss, torch.ones(9, dtype=F64), list(range(9)), 9, 16)
        assert sol.method == "factored"  # R = 9 * 32 = 288 on the shared side
        assert m.loss == pytest.approx(sol.loss, rel=1e-12) and m.floor == pytest.approx(sol.floor, rel=1e-12)
        deltas = [aset.delta(t, module).double() for t in tasks]
        ref = dense_stacked_floor([d if side == "A" else d.T for d in deltas], [1.0] * 9, list(range(9)), 16)
        assert m.loss == pytest.approx(ref["floor"], rel=1e-6)
        for t in tasks[:2]:
            dense = result.delta(t, module).double()
            assert float(((dense - aset.delta(t, module).double()) ** 2).sum()) <= m.loss


def test_solvers_check_the_factors_unless_the_caller_has():
    """hydraopt() checks each module's factors once and tells the solvers (check=False); called alone they check."""
    As, Bs, ss, w = problem()
    gidx = [0, 0, 1, 1, 2, 2]
    bad = [A.clone() for A in As]
    bad[2][0, 0] = float("nan")
    for fn in (solve_exact, solve_adam):
        with pytest.raises(AdapterError, match="module m: task #2: lora_a has NaN/Inf"):
            fn(bad, Bs, ss, w, gidx, 3, 2, "m")
    checked, unchecked = solve_exact(As, Bs, ss, w, gidx, 3, 2, "m"), solve_exact(As, Bs, ss, w, gidx, 3, 2, "m", check=False)
    assert torch.equal(checked.shared, unchecked.shared) and torch.equal(checked.heads, unchecked.heads)
    assert checked.loss == unchecked.loss
