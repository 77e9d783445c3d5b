"""hydralib.analysis.structure: metadata groups, clustering, the initialisation control, the summary."""

from __future__ import annotations

import json
import resource
import time

import numpy as np
import pytest
import torch

from hydralib.adapters import AdapterSet
from hydralib.analysis import analyse_adapters, combine_adapter_sets
from hydralib.analysis.core import offdiagonal
from hydralib.analysis.similarity import adapter_similarity
from hydralib.analysis.structure import (
    adapter_init_distance,
    adapter_seed_control,
    adjusted_rand_index,
    cluster_agreement,
    cluster_tasks,
    group_similarity,
    init_distance,
    pair_categories,
    peft_initial_lora_a,
    seed_control,
    summarise_asymmetry,
)
from hydralib.synthetic import (
    attention_modules,
    smollm2_shapes,
    synthetic_adapters,
    synthetic_initial_a,
    task_grid,
)

SHAPES = attention_modules(n_layers=2, d_model=32, d_kv=16)


# --------------------------------------------------------------------------- groups


def test_pair_categories_and_group_similarity_known_answer():
    _, meta = task_grid(["qa", "reply"], ["en", "fr", "ja"])
    meta = [{"application": m["application"], "language": m["language"]} for m in meta.values()]
    masks = pair_categories(meta)
    # 6 tasks: each has 2 same-application, 1 same-language, 2 unrelated partners
    assert [int(masks[k].sum()) for k in ("same_task", "same_application", "same_language", "unrelated")] == [0, 12, 6, 12]
    assert not any(np.diag(m).any() for m in masks.values())
    # a similarity that is 0.9 within a language, 0.5 within an application, 0.1 otherwise
    sim = np.where(masks["same_language"], 0.9, np.where(masks["same_application"], 0.5, 0.1))
    np.fill_diagonal(sim, 1.0)
    g = group_similarity(sim, meta)
    assert g["same_language"] == {"mean": pytest.approx(0.9), "std": pytest.approx(0.0), "n_pairs": 3}
    assert g["same_application"]["mean"] == pytest.approx(0.5) and g["same_application"]["n_pairs"] == 6
    assert g["unrelated"]["mean"] == pytest.approx(0.1)
    assert g["all"]["n_pairs"] == 15
    assert g["contrast"]["language_minus_application"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="no metadata key 'seed'"):
        group_similarity(sim, meta, seed="same")
    with pytest.raises(ValueError, match="3 x 3 but there are 6 tasks"):
        group_similarity(np.eye(3), meta)


def test_group_similarity_seed_filter():
    _, meta = task_grid(["qa"], ["en", "fr"], seeds=(0, 1))
    meta = list(meta.values())  # qa-en@0, qa-fr@0, qa-en@1, qa-fr@1
    sim = np.array([[1, .2, .7, .0], [.2, 1, .0, .7], [.7, .0, 1, .3], [.0, .7, .3, 1]])
    same = group_similarity(sim, meta, seed="same")
    assert same["same_application"] == {"mean": pytest.approx(0.25), "std": pytest.approx(0.05), "n_pairs": 2}
    diff = group_similarity(sim, meta, seed="different")
    assert diff["same_task"]["mean"] == pytest.approx(0.7) and diff["same_application"]["mean"] == pytest.approx(0.0)


# --------------------------------------------------------------------------- clustering


def test_adjusted_rand_index_known_values():
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)  # hand-computed
    assert adjusted_rand_index(["a", "a", "b", "b"], [5, 5, 3, 3]) == pytest.approx(1.0)  # label names do not matter
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)


def test_cluster_tasks_recovers_blocks():
    labels = np.array([0, 1, 0, 2, 1, 2, 0])
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 0.05, (7, 7))
    sim = np.where(labels[:, None] == labels[None, :], 0.9, 0.2) + (noise + noise.T) / 2
    np.fill_diagonal(sim, 1.0)
    tasks = [f"t{i}" for i in range(7)]
    cl = cluster_tasks(sim, n_clusters=3, tasks=tasks)
    assert cl.linkage.shape == (6, 4)
    assert adjusted_rand_index(labels, cl.labels) == pytest.approx(1.0)
    ordered = labels[cl.order]
    assert (np.diff(ordered) != 0).sum() == 2  # each block is contiguous in the leaf order
    assert sorted(cl.ordered_tasks) == sorted(tasks)
    assert adjusted_rand_index(labels, cl.flat(3)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not symmetric"):
        cluster_tasks(sim + np.triu(np.ones((7, 7)), 1))


def test_a_side_follows_language_and_b_side_follows_application():
    tasks, meta = task_grid(["qa", "reply", "summary"], ["en", "fr", "ja", "ko"])
    aset = synthetic_adapters(SHAPES, meta, rank=4, a_init=0.0, a_groups={"language": 1.0}, a_noise=0.4,
                              b_groups={"application": 1.0}, b_noise=0.4)
    sim = adapter_similarity(aset, kinds=["overlap_a", "overlap_b", "cka_a", "cka_b"])
    metas = [aset.metadata[t] for t in aset.tasks]
    for kind, key, other in (("overlap_a", "language", "application"), ("overlap_b", "application", "language"),
                             ("cka_a", "language", "application"), ("cka_b", "application", "language")):
        mean = sim.mean_matrix(kind)["all"]
        g = group_similarity(mean, metas)
        assert g[f"same_{key}"]["mean"] > g[f"same_{other}"]["mean"] + 0.3, kind
        k = len({m[key] for m in metas})
        cl = cluster_tasks(mean, n_clusters=k, tasks=aset.tasks)
        agreement = cluster_agreement(cl.labels, metas)
        assert agreement[key] == pytest.approx(1.0), kind
        assert agreement[other] < 0.2, kind


# --------------------------------------------------------------------------- initialisation control


def test_init_distance_known_answers():
    A0 = torch.randn(4, 10)
    assert init_distance(1.5 * A0, A0) == pytest.approx(0.5)
    np.testing.assert_allclose(init_distance(torch.stack([A0, 2 * A0, A0]), A0), [0.0, 1.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="disagree"):
        init_distance(torch.randn(4, 11), A0)


def test_adapter_init_distance_by_seed_on_synthetic_adapters():
    # A_i = A0[seed] + 0.3 * noise of the same entry scale: the relative distance is about 0.3
    _, meta = task_grid(["qa", "reply"], ["en", "fr"], seeds=(0, 1))
    aset = synthetic_adapters(SHAPES, meta, rank=8, a_noise=0.3)
    init = synthetic_initial_a(SHAPES, seeds=(0, 1), rank=8)
    dist = adapter_init_distance(aset, init, by_seed=True)
    values = np.concatenate(list(dist.values()))
    assert values.shape == (len(SHAPES) * 8,)
    assert abs(values.mean() - 0.3) < 0.03
    # with the wrong initialisation (the other seed) A looks far from its start
    swapped = {0: init[1], 1: init[0]}
    assert np.concatenate(list(adapter_init_distance(aset, swapped, by_seed=True).values())).mean() > 1.2


def test_peft_initial_lora_a_reproduces_peft_exactly():
    from conftest import tiny_llama
    from peft import LoraConfig, get_peft_model

    base = tiny_llama(seed=0)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0)
    torch.manual_seed(999)
    state = torch.random.get_rng_state()
    init = peft_initial_lora_a(base, cfg, seed=123)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    other = peft_initial_lora_a(base, cfg, seed=124)
    assert len(init) == 2 * 4 and all(a.shape == (4, 32) for a in init.values())

    torch.manual_seed(123)
    model = get_peft_model(base, cfg)  # what a training run does right after seeding
    trained_start = {
        name: module.lora_A["default"].weight.detach()
        for name, module in model.base_model.model.named_modules()
        if hasattr(module, "lora_A") and "default" in module.lora_A
    }
    assert sorted(trained_start) == sorted(init)
    for name, a in trained_start.items():
        assert torch.equal(a, init[name]), name
        assert not torch.equal(a, other[name])
    # an ordered {module: (d_out, d_in)} in model order gives the same
    shapes = {name: (module.out_features, module.in_features) for name, module in tiny_llama(seed=1).named_modules()
              if name.split(".")[-1] in cfg.target_modules}
    from_shapes = peft_initial_lora_a(shapes, cfg, seed=123)
    assert all(torch.equal(from_shapes[n], init[n]) for n in init)
    # an adapter that has not moved is at distance 0 from its recomputed start
    factors = {"t": {n: (a, torch.zeros(32 if "q_proj" in n or "o_proj" in n else 16, 4), 2.0) for n, a in trained_start.items()}}
    dist = adapter_init_distance(AdapterSet.from_factors(factors), init)
    assert all(float(v[0]) == 0.0 for v in dist.values())


def test_peft_initial_lora_a_on_gpt2_conv1d_layers():
    from conftest import tiny_gpt2
    from peft import LoraConfig, get_peft_model

    base = tiny_gpt2(seed=0)
    cfg = LoraConfig(r=4, lora_alpha=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True, lora_dropout=0.0)
    init = peft_initial_lora_a(base, cfg, seed=7)
    torch.manual_seed(7)
    model = get_peft_model(base, cfg)
    found = 0
    for name, module in model.base_model.model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            assert torch.equal(module.lora_A["default"].weight, init[name]), name
            found += 1
    assert found == len(init) == 2 * 3  # attn.c_attn, attn.c_proj, mlp.c_proj per layer


def test_seed_control_separates_initialisation_from_task_similarity():
    # PEFT-like: A = shared start of its seed + small task change; B task-specific
    _, meta = task_grid(["qa", "reply"], ["en", "fr"], seeds=(0, 1, 2))
    aset = synthetic_adapters(SHAPES, meta, rank=4, a_noise=0.3)
    sim = adapter_similarity(aset, kinds=["cosine_a", "cosine_b"])
    metas = [aset.metadata[t] for t in aset.tasks]
    cells = seed_control({"a": sim.mean_matrix("cosine_a")["all"], "b": sim.mean_matrix("cosine_b")["all"]}, metas)
    a, b = cells["a"], cells["b"]
    assert a["same_seed"]["different_task"]["mean"] == pytest.approx(1 / (1 + 0.3**2), abs=0.05)
    assert abs(a["different_seed"]["different_task"]["mean"]) < 0.05
    assert abs(a["different_seed"]["same_task"]["mean"]) < 0.05
    assert a["same_seed"]["same_task"]["n_pairs"] == 0  # every task occurs once per seed
    assert a["different_seed"]["same_task"]["n_pairs"] == 4 * 3
    assert all(abs(b[s][t]["mean"]) < 0.05 for s in b for t in ("different_task", "same_task") if b[s][t]["n_pairs"])
    with pytest.raises(ValueError, match="no metadata key 'seed'"):
        seed_control({"a": np.eye(2)}, [{}, {}])


def test_adapter_seed_control_on_a_list_of_adapter_sets():
    # the zoo (seed 0) and a control set of the same tasks retrained with seed 1
    _, meta = task_grid(["qa", "reply"], ["en", "fr"])
    zoo = synthetic_adapters(SHAPES, meta, rank=4, a_noise=0.3)
    control = synthetic_adapters(SHAPES, {t: {**m, "seed": 1} for t, m in meta.items()}, rank=4, a_noise=0.3)
    result = adapter_seed_control([zoo, control], seeds=[0, 1])
    json.dumps(result)
    cos = result["cosine"]["overall"]
    assert cos["a"]["same_seed"]["different_task"]["mean"] > 0.8  # shared start
    assert abs(cos["a"]["different_seed"]["same_task"]["mean"]) < 0.1  # same task, other start: unrelated A
    assert cos["a"]["different_seed"]["same_task"]["n_pairs"] == 4
    ov = result["overlap"]["by_projection"]["v_proj"]
    assert ov["a"]["same_seed"]["different_task"]["mean"] > ov["b"]["same_seed"]["different_task"]["mean"]


def test_combine_adapter_sets_renames_duplicates_and_sets_seeds():
    _, meta = task_grid(["qa"], ["en", "fr"])
    s0 = synthetic_adapters(SHAPES, meta, rank=2)
    s1 = synthetic_adapters(SHAPES, {t: {**m, "seed": 1} for t, m in meta.items()}, rank=2)
    both = combine_adapter_sets([s0, s1], seeds=[0, 1])
    assert both.tasks == ["qa-en@0", "qa-fr@0", "qa-en@1", "qa-fr@1"]
    assert [both.metadata[t]["seed"] for t in both.tasks] == [0, 0, 1, 1]
    assert both.metadata["qa-fr@1"]["task"] == "qa-fr"
    m = next(iter(SHAPES))
    assert torch.equal(both.factors("qa-fr@1", m)[0], s1.factors("qa-fr", m)[0])


# --------------------------------------------------------------------------- the summary


def test_summarise_asymmetry_verdicts_on_a_shared_and_b_shared_worlds():
    # A shared: every task starts from the same A (one seed) and moves little; B task-specific
    _, meta = task_grid(["qa", "reply"], ["en", "fr", "ja"])
    a_world = synthetic_adapters(SHAPES, meta, rank=4, a_noise=0.2)
    summary = summarise_asymmetry(a_world)
    json.dumps(summary)  # JSON-serialisable
    assert summary["n_tasks"] == 6 and summary["projections"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    for measure in ("cosine", "overlap", "cka"):
        assert summary["verdict"][measure]["overall"]["more_similar"] == "A", measure
        assert all(v["more_similar"] == "A" for v in summary["verdict"][measure]["by_projection"].values())
    ov = summary["measures"]["overlap"]
    assert ov["chance_b"]["by_projection"]["k_proj"] == pytest.approx(4 / 16)
    assert ov["chance_a"]["by_projection"]["k_proj"] == pytest.approx(4 / 32)
    assert summary["spectra"]["overall"]["shared_a"] < summary["spectra"]["overall"]["shared_b"]
    assert "groups" in summary and "seed_control" not in summary

    # B shared: every task has its own seed (so its own random A) and one common B
    meta_b = {t: {**m, "seed": i, "world": "all"} for i, (t, m) in enumerate(meta.items())}
    b_world = synthetic_adapters(SHAPES, meta_b, rank=4, a_noise=0.2, b_groups={"world": 1.0}, b_noise=0.2)
    summary_b = summarise_asymmetry(b_world)
    for measure in ("cosine", "overlap", "cka"):
        assert summary_b["verdict"][measure]["overall"]["more_similar"] == "B", measure
    assert "seed_control" in summary_b and summary_b["groups"]["seed_filter"] == "same"


def test_summarise_asymmetry_with_seed_control_and_init_distance():
    _, meta = task_grid(["qa", "reply"], ["en", "fr"], seeds=(0, 1))
    aset = synthetic_adapters(SHAPES, meta, rank=4, a_noise=0.3)
    sim, spec = analyse_adapters(aset)
    init = synthetic_initial_a(SHAPES, seeds=(0, 1), rank=4)
    summary = summarise_asymmetry(aset, similarity=sim, spectra=spec, init_a=init, init_by_seed=True)
    json.dumps(summary)
    control = summary["seed_control"]["cosine"]["overall"]
    assert control["a"]["same_seed"]["different_task"]["mean"] > 0.8
    assert abs(control["a"]["different_seed"]["different_task"]["mean"]) < 0.1
    assert set(summary["seed_control"]["overlap"]["by_projection"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert summary["init_distance"]["overall"] == pytest.approx(0.3, abs=0.05)
    # A looks shared only between adapters that started from the same A
    by_seed = summary["verdict"]["cosine"]["by_seed"]
    assert by_seed["same_seed"]["more_similar"] == "A" and by_seed["same_seed"]["a"] > 0.8
    assert abs(by_seed["different_seed"]["a"]) < 0.1
    # the one-pass analysis equals the separate calls
    sim2 = adapter_similarity(aset)
    module = aset.modules[0]
    np.testing.assert_allclose(sim2.kind("cka_b")[module], sim.kind("cka_b")[module])
    assert offdiagonal(sim.kind("cosine_a")[module]).size == 28


# --------------------------------------------------------------------------- speed


def _time_full_analysis(shapes, rank, n_apps=5, n_langs=8):
    from hydralib.presets import APPLICATIONS, LANGUAGES

    _, meta = task_grid(APPLICATIONS[:n_apps], LANGUAGES[:n_langs])
    aset = synthetic_adapters(shapes, meta, rank=rank)
    start = time.perf_counter()
    summary = summarise_asymmetry(aset)
    json.dumps(summary)
    return time.perf_counter() - start


@pytest.mark.slow
def test_speed_smollm2_shapes_40_tasks():
    """Issue 4: the full analysis of 40 adapters on SmolLM2 (30 layers x q,k,v,o; r=8) in at most 60 s."""
    seconds = _time_full_analysis(smollm2_shapes(), rank=8)
    print(f"full analysis, SmolLM2 shapes, N=40, r=8: {seconds:.1f} s")
    assert seconds < 60


@pytest.mark.slow
def test_speed_paper_shapes_40_tasks():
    """Issue 4: paper shapes (16 layers; 2048 / 512; r=32; N=40) in at most 5 minutes and 4 GB."""
    from hydralib.synthetic import paper_shapes

    seconds = _time_full_analysis(paper_shapes(), rank=32)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"full analysis, paper shapes, N=40, r=32: {seconds:.1f} s, peak RSS {peak_gb:.2f} GB")
    assert seconds < 300 and peak_gb < 4
