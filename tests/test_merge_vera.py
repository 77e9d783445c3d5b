"""VeRA merging (hydralib.merge.vera): vector baselines, the vector-average gap, the HydraOpt analogue, stock peft."""

from __future__ import annotations

import copy
import doctest
import importlib
import warnings

import pytest
import torch
from peft.utils import merge_utils

import hydralib.merge.vera as vera_module
import hydralib.merge.vera_solvers as vera_solvers_module
from hydralib import AdapterError, AdapterSet, load_adapters
from hydralib.merge.vera import (
    merge_vera_dense,
    merge_vera_vectors,
    vector_average_gap,
    vera_delta,
    vera_floor,
    vera_hydraopt,
    vera_objective,
)
from hydralib.synthetic import derive_seed, random_vera_adapters

from conftest import LLAMA_TARGETS, randomise_adapter, tiny_llama

SHAPES = {"layers.0.q_proj": (24, 16), "layers.0.k_proj": (12, 16)}
Q = "layers.0.q_proj"
VECTOR_METHODS = ["task_arithmetic", "ties", "dare_linear", "dare_ties", "magnitude_prune"]


@pytest.fixture(autouse=True)
def _quiet_density_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The density")
        yield


def _dense_set_loss(result, aset):
    """``sum_m sum_i w_i ||dW'_i - dW_i||^2`` with dense matrices (the reference)."""
    total = 0.0
    for m, mod in result.modules.items():
        for i, t in enumerate(aset.tasks):
            diff = result.delta(t, m).double() - aset.delta(t, m).double()
            total += float(mod.weights[i]) * float(diff.pow(2).sum())
    return total


def _module_tensors(aset, module):
    LB = torch.stack([aset.vera_vectors(t, module)[0] for t in aset.tasks]).double()
    LD = torch.stack([aset.vera_vectors(t, module)[1] for t in aset.tasks]).double()
    vA, vB = (p.double() for p in aset.vera_projections(module))
    return LB, LD, vA, vB


@pytest.mark.parametrize("module", ["hydralib.merge.vera", "hydralib.merge.vera.solvers"])
def test_doctest_example(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_split_keeps_the_public_api():
    """hydralib.merge.vera is a package (algebra, solvers, sets, gap, baselines, result); every public name is
    importable from hydralib.merge.vera, the solvers' also from the old path hydralib.merge.vera_solvers, and the
    merge package's exports are unchanged."""
    import hydralib.merge as merge

    for name in vera_module.__all__:
        assert hasattr(vera_module, name), name
    for name in vera_solvers_module.__all__:
        assert getattr(vera_module, name) is getattr(vera_solvers_module, name), name
    for name in ("VERA_SOLVERS", "MergedVeRA", "VectorAverageGap", "VeraHydraResult", "VeraModuleResult",
                 "merge_vera_dense", "merge_vera_vectors", "vector_average_gap",
                 "vera_hydraopt"):
        assert getattr(merge, name) is getattr(vera_module, name), name
    assert vera_module.VERA_SOLVERS["als"].fn is vera_module.solve_vera_als


# ----------------------------------------------------------------------------- factored algebra


@pytest.mark.parametrize("side", ["d", "b"])
def test_factored_loss_equals_dense_loss(side):
    from hydralib.merge.vera.solvers import _expanded_loss, _make_problem

    aset = random_vera_adapters(4, SHAPES, rank=4, seed=3)
    LB, LD, vA, vB = _module_tensors(aset, Q)
    g = torch.Generator().manual_seed(0)
    gidx, K = [0, 1, 1, 0], 2
    w = torch.tensor([1.0, 0.5, 2.0, 0.3], dtype=torch.float64)
    d_out, r = LB.shape[1], LD.shape[1]
    shared = torch.randn(r if side == "d" else d_out, generator=g, dtype=torch.float64)
    heads = torch.randn(K, d_out if side == "d" else r, generator=g, dtype=torch.float64)
    dense = 0.0
    for i, k in enumerate(gidx):
        lb, ld = (heads[k], shared) if side == "d" else (shared, heads[k])
        dense += float(w[i] * (vera_delta(lb, ld, vA, vB) - vera_delta(LB[i], LD[i], vA, vB)).pow(2).sum())
    ours = vera_objective(shared, heads, LB, LD, vA, vB, w, gidx, side)
    assert ours == pytest.approx(dense, rel=1e-10)
    problem = _make_problem(LB, LD, vA, vB, w, gidx, K, side, "cpu")  # the Gram expansion ALS and Adam use
    assert float(_expanded_loss(problem, shared, heads)) == pytest.approx(dense, rel=1e-9)
    energy = sum(float(w[i] * vera_delta(LB[i], LD[i], vA, vB).pow(2).sum()) for i in range(4))
    assert problem.energy == pytest.approx(energy, rel=1e-10)
    # the floor is the within-group spread of dW, computed densely
    spread = 0.0
    for k in range(K):
        members = [i for i in range(4) if gidx[i] == k]
        mean = sum(w[i] * vera_delta(LB[i], LD[i], vA, vB) for i in members) / sum(w[i] for i in members)
        spread += sum(float(w[i] * (vera_delta(LB[i], LD[i], vA, vB) - mean).pow(2).sum()) for i in members)
    assert vera_floor(LB, LD, vA, vB, w, gidx) == pytest.approx(spread, rel=1e-9)


def test_vector_average_gap():
    distinct = random_vera_adapters(4, SHAPES, rank=4, seed=0)
    gap = vector_average_gap(distinct)
    # dense reference: update of the averaged vectors vs the average update
    LB, LD, vA, vB = _module_tensors(distinct, Q)
    mean_dw = sum(vera_delta(LB[i], LD[i], vA, vB) for i in range(4)) / 4
    avg_vec = vera_delta(LB.mean(0), LD.mean(0), vA, vB)
    expected = float((avg_vec - mean_dw).norm() / mean_dw.norm())
    assert gap.relative[Q] == pytest.approx(expected, rel=1e-9)
    assert gap.relative[Q] > 0.1 and gap.total > 0.1
    same = random_vera_adapters(4, SHAPES, rank=4, seed=0, shared_b=1.0, shared_d=1.0)
    assert vector_average_gap(same).total < 1e-12
    # the gap is the cross-covariance of lambda_b and lambda_d: equal lambda_d alone is enough for zero
    same_d = random_vera_adapters(4, SHAPES, rank=4, seed=0, shared_d=1.0)
    assert vector_average_gap(same_d).total < 1e-12
    # weights matter: all weight on one task means no gap
    assert vector_average_gap(distinct, weights=[1.0, 0.0, 0.0, 0.0]).total < 1e-12


# ----------------------------------------------------------------------------- baselines on the vectors


@pytest.mark.parametrize("method", VECTOR_METHODS)
def test_merging_one_adapter_returns_it(method):
    one = random_vera_adapters(1, SHAPES, rank=4, seed=5)
    density = 1.0 if method != "task_arithmetic" else None
    merged = merge_vera_vectors(one, method, weights=[1.0], density=density, progress=False)
    for m in one.modules:
        lb, ld = one.vera_vectors("task0", m)
        torch.testing.assert_close(merged.vectors[m][0], lb)
        torch.testing.assert_close(merged.vectors[m][1], ld)
    assert merged.storage == sum(d_out + 4 for d_out, _ in SHAPES.values())


def test_vector_baselines_match_peft_merge_utils_and_are_seeded():
    aset = random_vera_adapters(3, SHAPES, rank=4, seed=1)
    w = [0.5, 1.0, -0.3]
    lbs = [aset.vera_vectors(t, Q)[0] for t in aset.tasks]
    lds = [aset.vera_vectors(t, Q)[1] for t in aset.tasks]
    wt = torch.tensor(w)
    ties = merge_vera_vectors(aset, "ties", weights=w, lam=0.7, density=0.5, progress=False)
    torch.testing.assert_close(ties.vectors[Q][0], 0.7 * merge_utils.ties(lbs, wt, density=0.5))  # lam on lambda_b only
    torch.testing.assert_close(ties.vectors[Q][1], merge_utils.ties(lds, wt, density=0.5))
    dare = merge_vera_vectors(aset, "dare_ties", weights=w, density=0.5, seed=4, progress=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(4, f"{Q}.vera_lambda_b"))
        oracle = merge_utils.dare_ties(lbs, wt, density=0.5)
    torch.testing.assert_close(dare.vectors[Q][0], oracle)
    again = merge_vera_vectors(aset, "dare_ties", weights=w, density=0.5, seed=4, progress=False)
    other = merge_vera_vectors(aset, "dare_ties", weights=w, density=0.5, seed=5, progress=False)
    assert torch.equal(again.vectors[Q][0], dare.vectors[Q][0])
    assert not torch.equal(other.vectors[Q][0], dare.vectors[Q][0])
    # weights [1, -1] on the same adapter cancel
    twins = random_vera_adapters(2, SHAPES, rank=4, seed=2, shared_b=1.0, shared_d=1.0)
    cancel = merge_vera_vectors(twins, "task_arithmetic", weights=[1.0, -1.0], progress=False)
    assert all(float(cancel.delta(m).abs().max()) == 0.0 for m in SHAPES)


def test_dense_reference_merge_is_the_mean_update():
    aset = random_vera_adapters(3, SHAPES, rank=4, seed=6)
    ta = merge_vera_dense(aset, "task_arithmetic", weights=[1 / 3] * 3, progress=False)
    assert ta.params["space"] == "dW" and ta.rank == 4
    for m in SHAPES:
        mean = sum(aset.delta(t, m) for t in aset.tasks) / 3
        torch.testing.assert_close(ta.delta(m), mean, atol=1e-6, rtol=1e-5)  # rank r is exact: rows in span(vera_A)
        assert ta.truncation[m] < 1e-8 * float(mean.pow(2).sum())
        # ... and differs from the merge of the vectors by the vector-average gap
        vec = merge_vera_vectors(aset, "task_arithmetic", weights=[1 / 3] * 3, progress=False)
        rel = float((vec.delta(m) - mean).norm() / mean.norm())
        assert rel == pytest.approx(vector_average_gap(aset).relative[m], rel=1e-4)


# ----------------------------------------------------------------------------- the HydraOpt analogue


@pytest.mark.parametrize("side", ["d", "b"])
@pytest.mark.parametrize("solver", ["als", "adam"])
def test_one_adapter_one_head_returns_it(side, solver):
    one = random_vera_adapters(1, SHAPES, rank=4, seed=7)
    result = vera_hydraopt(one, heads=1, side=side, solver=solver, progress=False)
    assert result.n_heads == 1
    assert result.relative_loss < (1e-12 if solver == "als" else 1e-8)
    results = [result]
    if solver == "als":  # from random starts too: the gauge (scale and sign of the shared vector) is fixed
        results += [vera_hydraopt(one, heads=1, side=side, init="random", seed=s, progress=False) for s in range(3)]
    for res in results:
        # The loss is a squared norm, so vectors at relative loss L are off by about sqrt(L) relative: Adam stops
        # at L < 1e-8, which allows ~1e-4 (a CI run saw 2e-4 on one element); ALS reaches L < 1e-12.
        tol = max(1e-4, 30 * res.relative_loss**0.5)
        for m in SHAPES:
            lb, ld = res.vectors("task0", m)
            torch.testing.assert_close(lb, one.vera_vectors("task0", m)[0], atol=tol, rtol=tol)
            torch.testing.assert_close(ld, one.vera_vectors("task0", m)[1], atol=tol, rtol=tol)


@pytest.mark.parametrize("side", ["d", "b"])
def test_als_and_adam_reach_the_same_loss(side):
    aset = random_vera_adapters(4, SHAPES, rank=4, seed=0)
    heads = {"task0": "x", "task1": "x", "task2": "y", "task3": "y"}
    w = [1.0, 0.5, 2.0, 0.3]
    als = vera_hydraopt(aset, heads=heads, side=side, solver="als", weighting=w, progress=False)
    adam = vera_hydraopt(aset, heads=heads, side=side, solver="adam", weighting=w, progress=False)
    assert abs(adam.total_loss - als.total_loss) <= 0.01 * als.total_loss
    assert als.total_loss == pytest.approx(_dense_set_loss(als, aset), rel=1e-6)
    assert adam.total_loss == pytest.approx(_dense_set_loss(adam, aset), rel=1e-6)
    for m in als.modules.values():
        h = torch.tensor(m.history)
        assert (h[1:] <= h[:-1] * (1 + 1e-9)).all()  # ALS never increases the loss
        assert m.floor - 1e-9 * m.energy <= m.loss <= m.energy
    assert 0.0 < als.relative_loss < 1.0 and als.relative_floor < als.relative_loss


def test_restarts_keep_the_best_of_several_local_minima():
    aset = random_vera_adapters(4, SHAPES, rank=4, seed=0)
    heads = {"task0": "x", "task1": "x", "task2": "y", "task3": "y"}
    plain = vera_hydraopt(aset, heads=heads, progress=False)
    best = vera_hydraopt(aset, heads=heads, restarts=5, progress=False)
    seen = set()
    for m, mod in best.modules.items():
        assert len(mod.start_losses) == 6 and mod.start_losses[0] == pytest.approx(plain.modules[m].loss, rel=1e-12)
        assert mod.loss == min(mod.start_losses) <= plain.modules[m].loss
        seen.update(round(x / mod.energy, 6) for x in mod.start_losses)
    assert len(seen) > len(best.modules)  # not convex: starts end in different local minima
    assert best.options["restarts"] == 5


def test_one_head_per_task_is_exact_only_with_a_shared_vector_to_share():
    # side d shares lambda_d: exact when all tasks have the same lambda_d ...
    same_d = random_vera_adapters(4, SHAPES, rank=4, seed=8, shared_d=1.0)
    exact = vera_hydraopt(same_d, heads="task", side="d", progress=False)
    assert exact.relative_loss < 1e-12 and exact.total_floor < 1e-20
    for t in same_d.tasks:
        torch.testing.assert_close(exact.delta(t, Q), same_d.delta(t, Q), atol=1e-5, rtol=1e-5)
    # ... and the mirror: side b shares lambda_b, exact when all tasks have the same lambda_b
    same_b = random_vera_adapters(4, SHAPES, rank=4, seed=8, shared_b=1.0)
    assert vera_hydraopt(same_b, heads="task", side="b", progress=False).relative_loss < 1e-12
    # sharing the wrong side is not exact, and distinct tasks are not exact either
    assert vera_hydraopt(same_d, heads="task", side="b", progress=False).relative_loss > 1e-3
    assert vera_hydraopt(same_b, heads="task", side="d", progress=False).relative_loss > 1e-3
    distinct = random_vera_adapters(4, SHAPES, rank=4, seed=8)
    per_task = vera_hydraopt(distinct, heads="task", progress=False)
    single = vera_hydraopt(distinct, heads=1, progress=False)
    assert per_task.total_floor < 1e-20 < per_task.relative_loss  # floor 0, not reached
    assert per_task.total_loss < single.total_loss


def test_heads_forms_storage_and_weighting():
    meta = {f"task{i}": {"application": app} for i, app in enumerate(["qa", "qa", "sum", "sum", "sum"])}
    aset = random_vera_adapters(5, SHAPES, rank=4, seed=9, metadata=meta)
    by_app = vera_hydraopt(aset, heads="application", side="d", progress=False)
    assert by_app.head_names == ["qa", "sum"] and by_app.task_to_head["task3"] == "sum"
    assert by_app.storage == sum(4 + 2 * d_out for d_out, _ in SHAPES.values())
    mirror = vera_hydraopt(aset, heads=3, side="b", progress=False)
    assert mirror.n_heads == 3 and mirror.storage == sum(d_out + 3 * 4 for d_out, _ in SHAPES.values())
    assert mirror.relative_storage() == pytest.approx(mirror.storage / (5 * sum(d + 4 for d, _ in SHAPES.values())))
    mapped = vera_hydraopt(aset, heads={t: ("a" if t == "task4" else "b") for t in aset.tasks}, progress=False)
    assert mapped.head_names == ["b", "a"]
    assert mapped.to_adapter_set(by="head").tasks == ["b", "a"]
    normed = vera_hydraopt(aset, heads=1, weighting="norm", progress=False)
    for m, mod in normed.modules.items():
        expected = torch.tensor([1.0 / float(aset.delta(t, m).double().pow(2).sum()) for t in aset.tasks])
        torch.testing.assert_close(mod.weights.float(), expected.float(), rtol=1e-4, atol=0)
    assert normed.total_loss == pytest.approx(_dense_set_loss(normed, aset), rel=1e-6)


def test_errors_name_the_problem():
    from hydralib.synthetic import random_lora_factors

    lora = AdapterSet.from_factors(random_lora_factors(2, {Q: (8, 6)}, rank=2, seed=0))
    with pytest.raises(AdapterError, match="VeRA"):
        vera_hydraopt(lora, progress=False)
    with pytest.raises(AdapterError, match="VeRA"):
        merge_vera_vectors(lora, progress=False)
    aset = random_vera_adapters(2, SHAPES, rank=4, seed=0)
    with pytest.raises(ValueError, match="side"):
        vera_hydraopt(aset, side="B", progress=False)
    with pytest.raises(ValueError, match="solver"):
        vera_hydraopt(aset, solver="exact", progress=False)
    with pytest.raises(ValueError, match="density"):
        merge_vera_vectors(aset, "ties", progress=False)
    with pytest.raises(ValueError, match="weights"):
        merge_vera_vectors(aset, weights=[1.0], progress=False)


# ----------------------------------------------------------------------------- stock peft


def _vera_dirs(root, base, n=3, key=5):
    """``n`` VeRA adapters (r=4, one projection_prng_key) on q/k/v/o of ``base``, vectors N(0, 1), saved by stock peft."""
    from peft import VeraConfig, get_peft_model

    base.name_or_path = "tiny-llama"
    dirs = []
    for i in range(n):
        cfg = VeraConfig(r=4, target_modules=LLAMA_TARGETS, projection_prng_key=key, vera_dropout=0.0,
                         base_model_name_or_path="tiny-llama")
        model = get_peft_model(base, cfg)
        randomise_adapter(model, seed=30 + i, scale=1.0)
        model.save_pretrained(str(root / f"vera{i}"))
        model.unload()
        dirs.append(root / f"vera{i}")
    return dirs


@torch.no_grad()
def _peft_logits(base, directory, ids):
    from peft import PeftModel

    return PeftModel.from_pretrained(copy.deepcopy(base), str(directory)).eval()(input_ids=ids).logits


@torch.no_grad()
def _reference_logits(base, deltas, ids):
    """The base model with ``W += dW`` at every module (dW formed from our vectors)."""
    model = copy.deepcopy(base)
    for module, delta in deltas.items():
        model.get_submodule(module).weight += delta
    return model(input_ids=ids).logits


def test_merged_vera_directories_load_in_stock_peft(tmp_path):
    base = tiny_llama(seed=0)
    aset = load_adapters(_vera_dirs(tmp_path, base))
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    plain = _logits_of(base, ids)

    ties = merge_vera_vectors(aset, "ties", density=0.5, progress=False)
    out = ties.save_peft(tmp_path / "ties")
    theirs = _peft_logits(base, out, ids)
    ours = _reference_logits(base, {m: ties.delta(m) for m in aset.modules}, ids)
    assert float((theirs - plain).abs().max()) > 1e-2  # the adapter does change the output
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)

    for side, by in (("d", "task"), ("b", "head")):
        heads = {aset.tasks[0]: "h0", aset.tasks[1]: "h0", aset.tasks[2]: "h1"}
        result = vera_hydraopt(aset, heads=heads, side=side, progress=False)
        dirs = result.save_peft(tmp_path / f"hydra-{side}", by=by)
        assert sorted(dirs) == sorted(result.tasks if by == "task" else result.head_names)
        for task in result.tasks:
            name = task if by == "task" else result.task_to_head[task]
            theirs = _peft_logits(base, dirs[name], ids)
            ours = _reference_logits(base, {m: result.delta(task, m) for m in aset.modules}, ids)
            assert float((theirs - plain).abs().max()) > 1e-2
            torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
        back = load_adapters(list(dirs.values()), tasks=list(dirs))
        for name in dirs:
            task = name if by == "task" else next(t for t in result.tasks if result.task_to_head[t] == name)
            for m in aset.modules:
                for got, want in zip(back.vera_vectors(name, m), result.vectors(task, m)):
                    assert torch.equal(got, want.float())


@torch.no_grad()
def _logits_of(model, ids):
    return model(input_ids=ids).logits
