"""Property-based tests (hypothesis) of the loaders and the merge invariants, on random shapes and ranks."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydralib import AdapterSet, load_adapters
from hydralib.merge import hydraopt, merge_adapters, merge_deltas

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def adapter_sets(draw, min_tasks=1, max_tasks=4):
    """Random LoRA sets: 1-3 modules of random shapes, per-task ranks and scalings."""
    n_tasks = draw(st.integers(min_tasks, max_tasks))
    n_modules = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    shapes = {f"model.layers.{i}.proj": (draw(st.integers(2, 12)), draw(st.integers(2, 12))) for i in range(n_modules)}
    factors = {}
    for t in range(n_tasks):
        factors[f"task{t}"] = {}
        for name, (d_out, d_in) in shapes.items():
            r = draw(st.integers(1, 4))
            s = draw(st.floats(0.25, 4.0))
            factors[f"task{t}"][name] = (torch.randn(r, d_in, generator=g), torch.randn(d_out, r, generator=g), s)
    return AdapterSet.from_factors(factors, base_model="prop-model")


@SETTINGS
@given(aset=adapter_sets())
def test_peft_round_trip_preserves_every_delta(aset):
    root = Path(tempfile.mkdtemp())
    try:
        for task in aset.tasks:
            aset.save_peft(task, root / task)
        back = load_adapters([root / t for t in aset.tasks])
        assert back.tasks == aset.tasks and back.modules == aset.modules
        for t in aset.tasks:
            for m in aset.modules:
                assert back.rank(t, m) == aset.rank(t, m)
                torch.testing.assert_close(back.delta(t, m), aset.delta(t, m), atol=1e-5, rtol=1e-5)
    finally:
        shutil.rmtree(root)


@SETTINGS
@given(aset=adapter_sets(min_tasks=1, max_tasks=1))
def test_merging_one_adapter_with_weight_one_returns_it(aset):
    t = aset.tasks[0]
    for m in aset.modules:
        delta = aset.delta(t, m)
        torch.testing.assert_close(merge_deltas([delta], "task_arithmetic", weights=[1.0]), delta)
        torch.testing.assert_close(merge_deltas([delta], "ties", weights=[1.0], density=1.0), delta)
    merged = merge_adapters(aset, "task_arithmetic", rank=max(aset.rank(t, m) for m in aset.modules), progress=False)
    for m in aset.modules:
        torch.testing.assert_close(merged.delta(m), aset.delta(t, m), atol=1e-4, rtol=1e-4)


@SETTINGS
@given(aset=adapter_sets(min_tasks=1, max_tasks=1))
def test_opposite_weights_cancel(aset):
    t = aset.tasks[0]
    for m in aset.modules:
        delta = aset.delta(t, m)
        assert merge_deltas([delta, delta], "task_arithmetic", weights=[1.0, -1.0]).abs().max() <= 1e-6


@SETTINGS
@given(aset=adapter_sets(min_tasks=2, max_tasks=4), heads=st.sampled_from(["task", 1, 2]),
       side=st.sampled_from(["A", "B"]))
def test_hydraopt_exact_reaches_its_floor_and_full_rank_reconstructs(aset, heads, side):
    result = hydraopt(aset, heads=heads, rank=2, side=side, progress=False, device="cpu")
    assert result.total_loss <= result.total_energy * (1 + 1e-6) + 1e-6
    assert abs(result.total_loss - result.total_floor) <= 1e-4 * max(1.0, result.total_energy)
    # d_in, d_out <= 12: a shared factor of rank 12 spans every task's row (column) space
    exact = hydraopt(aset, heads="task", rank=12, side=side, progress=False, device="cpu")
    assert exact.total_loss <= 1e-6 * max(1.0, exact.total_energy)
