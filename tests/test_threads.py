"""The solvers' use of threads: modules side by side, results independent of the thread setting.

The timing side (the default thread setting is never slower than one thread)
is measured by ``hydralib bench``, which records both settings; here are the
invariants that make the default safe: the same bits as a one-thread run, the
order kept, errors raised, the settings restored, one BLAS pool at a time.
"""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

from hydralib import AdapterSet
from hydralib.merge import hydraopt, merge_adapters
from hydralib.synthetic import attention_modules, random_lora_factors
from hydralib.threads import map_modules, plan


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def aset():
    shapes = attention_modules(3, 48, 16)  # 12 modules, more than the threads
    factors = random_lora_factors(6, shapes, rank=4, seed=1, shared_a=0.5)
    return AdapterSet.from_factors(factors, metadata={t: {"group": str(i % 2)} for i, t in enumerate(factors)})


def test_plan_uses_modules_side_by_side_only_on_the_cpu_with_enough_modules():
    assert plan(120, "cpu", threads=4) == (4, 1)
    assert plan(3, "cpu", threads=4) == (1, 4)  # one large module at a time, all intra-op threads
    assert plan(120, "cpu", threads=1) == (1, 1)
    assert plan(120, "cuda", threads=4) == (1, 4)


def test_map_modules_keeps_the_order_raises_errors_and_restores_the_settings():
    from threadpoolctl import threadpool_info

    seen_threads, blas = set(), []

    def fn(m):
        seen_threads.add(threading.current_thread().name)
        blas.append({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
        return torch.get_num_threads(), m * 10

    with torch_threads(2):
        out = list(map_modules(fn, range(8), device="cpu"))
        assert torch.get_num_threads() == 2
    assert [m for m, _ in out] == list(range(8)) and [v for _, (_, v) in out] == [m * 10 for m in range(8)]
    assert {n for _, (n, _) in out} == {1}  # every op on one thread while modules run side by side
    assert all(name.startswith("hydralib-module") for name in seen_threads)
    assert all(s <= {1} for s in blas)  # numpy's / scipy's OpenBLAS capped at one thread

    def boom(m):
        if m == 3:
            raise ValueError("module 3: bad")
        return m

    with torch_threads(2), pytest.raises(ValueError, match="module 3: bad"):
        list(map_modules(boom, range(8), device="cpu"))
    with torch_threads(2):
        assert torch.get_num_threads() == 2


def test_map_modules_keeps_a_bounded_window_of_modules_in_flight():
    """A slow consumer (a streamed writer) never has more than WINDOW_PER_WORKER x workers modules started
    ahead of it: results do not pile up in memory whatever the number of modules."""
    from hydralib.threads import WINDOW_PER_WORKER

    started, lock = [], threading.Lock()

    def fn(m):
        with lock:
            started.append(m)
        return m

    ahead = []
    with torch_threads(2):
        for m, out in map_modules(fn, range(40), device="cpu"):
            assert out == m
            threading.Event().wait(0.002)  # the consumer is slower than the workers
            with lock:
                ahead.append(len(started) - (m + 1))
    assert sorted(started) == list(range(40))
    assert max(ahead) <= WINDOW_PER_WORKER * 2 and max(ahead) >= 1  # bounded, and the workers did run ahead


@pytest.mark.parametrize("heads", ["task", 1, "group"])
@pytest.mark.parametrize("solver", ["exact", "adam"])
def test_hydraopt_gives_the_same_bits_with_any_thread_setting(aset, heads, solver):
    options = {"max_steps": 30} if solver == "adam" else {}
    runs = []
    for n in (1, 2, 3):
        with torch_threads(n):
            runs.append(hydraopt(aset, heads=heads, rank=4, solver=solver, progress=False, **options))
    for other in runs[1:]:
        for module, res in runs[0].modules.items():
            assert torch.equal(res.shared, other.modules[module].shared), module
            assert torch.equal(res.heads, other.modules[module].heads), module
            assert res.loss == other.modules[module].loss


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_ties"])
def test_baseline_merges_give_the_same_bits_with_any_thread_setting(aset, method):
    runs = []
    for n in (1, 2):
        with torch_threads(n):
            runs.append(merge_adapters(aset, method, density=0.5, seed=3, progress=False))
    for module, (A, B) in runs[0].modules.items():
        A2, B2 = runs[1].modules[module]
        assert torch.equal(A, A2) and torch.equal(B, B2), module
