"""dW-space baselines (hydralib.merge.baselines) against peft.utils.merge_utils."""

from __future__ import annotations

import warnings

import pytest
import torch
from peft.utils import merge_utils

from hydralib.adapters import AdapterSet
from hydralib.merge.baselines import MERGE_METHODS, merge_adapters, merge_deltas, seeded_rng
from hydralib.merge.lowrank import truncated_svd_dense
from hydralib.synthetic import derive_seed, random_lora_factors

MODULE = "model.layers.0.self_attn.q_proj"
PEFT_FN = {
    "task_arithmetic": merge_utils.task_arithmetic,
    "ties": merge_utils.ties,
    "dare_linear": merge_utils.dare_linear,
    "dare_ties": merge_utils.dare_ties,
    "magnitude_prune": merge_utils.magnitude_prune,
}


@pytest.fixture(autouse=True)
def _quiet_density_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The density")
        yield


def deltas(n=3, shape=(12, 10), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def kwargs_for(method, density=0.4):
    spec = MERGE_METHODS[method]
    return {"density": density} if spec.uses_density else {}


def test_registry_names_peft_functions_and_papers():
    assert set(MERGE_METHODS) == set(PEFT_FN)
    for name, spec in MERGE_METHODS.items():
        assert spec.fn is PEFT_FN[name]
        assert "arXiv" in spec.paper and spec.name == name
        assert "lam" in spec.grid and (("density" in spec.grid) == spec.uses_density)


@pytest.mark.parametrize("method", sorted(PEFT_FN))
def test_matches_peft_merge_utils_on_the_same_tensors(method):
    ds = deltas()
    w = torch.tensor([0.5, 1.0, -0.3])
    ours = merge_deltas(ds, method, weights=w, lam=0.7, seed=11, module=MODULE, **kwargs_for(method))
    peft_kwargs = kwargs_for(method)
    if MERGE_METHODS[method].random:
        # the oracle: peft itself, on the global RNG seeded the way merge_deltas documents
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(11, MODULE))
            oracle = PEFT_FN[method](ds, w, **peft_kwargs)
    else:
        oracle = PEFT_FN[method](ds, w, **peft_kwargs)
    torch.testing.assert_close(ours, 0.7 * oracle)


@pytest.mark.parametrize("method", sorted(PEFT_FN))
def test_one_adapter_with_weight_one_returns_it(method):
    d = deltas(n=1)
    out = merge_deltas(d, method, weights=[1.0], **({"density": 1.0} if MERGE_METHODS[method].uses_density else {}))
    torch.testing.assert_close(out, d[0])


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "magnitude_prune"])
def test_weights_one_minus_one_cancel(method):
    d = deltas(n=1)[0]
    out = merge_deltas([d, d.clone()], method, weights=[1.0, -1.0], **kwargs_for(method))
    assert out.abs().max() == 0


def test_weights_one_minus_one_cancel_for_stored_lora():
    f = random_lora_factors(1, {MODULE: (12, 10)}, rank=3, seed=0)
    both = {"a": f["task0"], "b": f["task0"]}
    merged = merge_adapters(both, "task_arithmetic", weights=[1.0, -1.0], rank=3, progress=False)
    assert merged.delta(MODULE).abs().max() < 1e-6


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_random_methods_are_seeded_and_order_independent(method):
    ds = deltas()
    a = merge_deltas(ds, method, density=0.5, seed=5, module=MODULE)
    torch.rand(100)  # disturb the global RNG
    b = merge_deltas(ds, method, density=0.5, seed=5, module=MODULE)
    assert torch.equal(a, b)
    assert not torch.equal(a, merge_deltas(ds, method, density=0.5, seed=6, module=MODULE))
    # per-module seeds: another module's result does not depend on call order
    other = "model.layers.1.self_attn.q_proj"
    first = merge_deltas(ds, method, density=0.5, seed=5, module=other)
    assert not torch.equal(first, a)
    assert torch.equal(first, merge_deltas(ds, method, density=0.5, seed=5, module=other))


def test_merging_leaves_the_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    merge_deltas(deltas(), "dare_ties", density=0.5, seed=1, module=MODULE)
    torch.testing.assert_close(torch.rand(3), expected)
    with seeded_rng(7):
        x = torch.rand(2)
    with seeded_rng(7):
        torch.testing.assert_close(torch.rand(2), x)


def test_lam_scales_the_result():
    ds = deltas()
    base = merge_deltas(ds, "ties", density=0.5)
    torch.testing.assert_close(merge_deltas(ds, "ties", density=0.5, lam=0.25), 0.25 * base)


def test_bad_input_errors():
    ds = deltas()
    with pytest.raises(ValueError, match="unknown merge method"):
        merge_deltas(ds, "average")
    with pytest.raises(ValueError, match="needs density"):
        merge_deltas(ds, "ties")
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.q_proj.*\(12, 9\)"):
        merge_deltas(ds[:2] + [torch.zeros(12, 9)], "task_arithmetic", module=MODULE)
    with pytest.raises(ValueError, match="q_proj.*2 weights for 3"):
        merge_deltas(ds, "task_arithmetic", weights=[1.0, 2.0], module=MODULE)


def synthetic_set(n=4, rank=3):
    modules = {MODULE: (16, 12), "model.layers.0.self_attn.v_proj": (8, 12)}
    return AdapterSet.from_factors(random_lora_factors(n, modules, rank=rank, seed=2, shared_a=0.3), base_model="toy")


def test_task_arithmetic_factored_path_equals_dense_path():
    aset = synthetic_set()
    w = [1.0, 0.5, -0.5, 2.0]
    fac = merge_adapters(aset, "task_arithmetic", weights=w, lam=0.3, rank=4, progress=False)
    den = merge_adapters(aset, "task_arithmetic", weights=w, lam=0.3, rank=4, factored=False, progress=False)
    for module in aset.modules:
        torch.testing.assert_close(fac.delta(module), den.delta(module), rtol=1e-4, atol=1e-6)
        assert fac.truncation[module] == pytest.approx(den.truncation[module], rel=1e-3)
    # full rank: the stored LoRA is the task-arithmetic sum itself
    full = merge_adapters(aset, "task_arithmetic", weights=w, lam=0.3, rank=12, progress=False)
    for module in aset.modules:
        expected = 0.3 * sum(wi * aset.delta(t, module) for wi, t in zip(w, aset.tasks))
        torch.testing.assert_close(full.delta(module), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["ties", "dare_ties", "magnitude_prune", "dare_linear"])
def test_merge_adapters_stores_the_truncated_svd_of_the_merged_delta(method):
    aset = synthetic_set()
    merged = merge_adapters(aset, method, density=0.5, lam=0.8, rank=3, seed=9, progress=False)
    assert merged.params["density"] == 0.5 and merged.params["seed"] == 9 and merged.rank == 3
    for module in aset.modules:
        deltas_ = [aset.delta(t, module) for t in aset.tasks]
        dense = merge_deltas(deltas_, method, lam=0.8, density=0.5, seed=9, module=module)
        svd = truncated_svd_dense(dense, 3)
        torch.testing.assert_close(merged.delta(module), svd.lora_b @ svd.lora_a)
        A, B, s = merged.factors(module)
        assert A.shape == (3, 12) and B.shape[1] == 3 and s == 1.0
    assert merged.storage == 3 * (16 + 12) + 3 * (8 + 12)
    again = merge_adapters(aset, method, density=0.5, lam=0.8, rank=3, seed=9, progress=False)
    for module in aset.modules:
        assert torch.equal(again.modules[module][0], merged.modules[module][0])
    one = merged.to_adapter_set()
    assert one.tasks == [method] and one.base_model == "toy"


def test_merge_adapters_accepts_factor_dicts_and_weight_mappings():
    f = random_lora_factors(2, {MODULE: (6, 5)}, rank=2, seed=0)
    merged = merge_adapters(f, "task_arithmetic", weights={"task0": 1.0, "task1": 0.0}, rank=2, progress=False)
    torch.testing.assert_close(merged.delta(MODULE), f["task0"][MODULE][2] * f["task0"][MODULE][1] @ f["task0"][MODULE][0],
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="no weight for tasks"):
        merge_adapters(f, "task_arithmetic", weights={"task0": 1.0}, progress=False)
