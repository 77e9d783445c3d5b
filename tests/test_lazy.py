"""Out-of-core adapter sets (hydralib.lazy): the same bits as eager sets, bounded memory, streamed outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hydralib.adapters import load_adapters
from hydralib.errors import AdapterError
from hydralib.lazy import LazyAdapterSet, load_adapters_lazy, open_adapters
from hydralib.peft_io import WEIGHTS_NAME

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic_dirs(tmp_path_factory):
    """Six synthetic LoRA adapters (two groups, two module shapes, r = 3) written as PEFT directories."""
    from hydralib.synthetic import random_lora_factors, write_peft_dirs

    shapes = {"model.layers.0.self_attn.q_proj": (24, 20), "model.layers.0.self_attn.k_proj": (8, 20),
              "model.layers.1.mlp.up_proj": (40, 20), "model.layers.1.mlp.down_proj": (20, 40)}
    factors = random_lora_factors(6, shapes, rank=3, seed=5, task_names=[f"t{i}" for i in range(6)])
    metadata = {f"t{i}": {"application": f"app{i % 2}"} for i in range(6)}
    return write_peft_dirs(factors, metadata, tmp_path_factory.mktemp("syn"))


@pytest.fixture(params=["tiny", "synthetic"])
def dirs(request, lora_dirs, synthetic_dirs):
    return lora_dirs if request.param == "tiny" else synthetic_dirs


def _equal_factors(a, b):
    assert a.tasks == b.tasks and a.modules == b.modules
    for t in a.tasks:
        for m in a.modules:
            (A1, B1, s1), (A2, B2, s2) = a.factors(t, m), b.factors(t, m)
            assert torch.equal(A1, A2) and torch.equal(B1, B2) and s1 == s2


def test_lazy_reads_headers_only_and_matches(dirs):
    lazy, eager = load_adapters_lazy(dirs), load_adapters(dirs)
    assert isinstance(lazy, LazyAdapterSet) and not lazy._lora  # nothing held in memory
    assert lazy.base_model == eager.base_model and lazy.stored_dtypes == eager.stored_dtypes
    for m in eager.modules:
        assert lazy.module_info(m) == eager.module_info(m)
    _equal_factors(lazy, eager)
    assert lazy.subset(lazy.tasks[:2]).tasks == lazy.tasks[:2]
    half = lazy.to(dtype=torch.float64)
    assert half.factors(lazy.tasks[0], lazy.modules[0])[0].dtype == torch.float64


@pytest.mark.parametrize("method, kwargs", [
    ("task_arithmetic", {}), ("ties", {"density": 0.5}), ("dare_linear", {"density": 0.5, "seed": 3}),
    ("dare_ties", {"density": 0.4, "seed": 1}),
])
def test_baselines_bit_identical(dirs, method, kwargs):
    from hydralib.merge import merge_adapters

    lazy, eager = load_adapters_lazy(dirs), load_adapters(dirs)
    a = merge_adapters(lazy, method, progress=False, **kwargs)
    b = merge_adapters(eager, method, progress=False, **kwargs)
    for m in eager.modules:
        assert torch.equal(a.modules[m][0], b.modules[m][0]) and torch.equal(a.modules[m][1], b.modules[m][1])


@pytest.mark.parametrize("heads", ["task", 1, 2])
def test_hydraopt_and_streamed_bundle_bit_identical(dirs, heads, tmp_path):
    from hydralib.merge import export_peft, hydraopt
    from hydralib.merge.hydraopt.stream import export_peft_streamed, hydraopt_to_bundle

    lazy, eager = load_adapters_lazy(dirs), load_adapters(dirs)
    a = hydraopt(lazy, heads=heads, progress=False)
    b = hydraopt(eager, heads=heads, progress=False)
    for m in eager.modules:
        assert torch.equal(a.modules[m].shared, b.modules[m].shared)
        assert torch.equal(a.modules[m].heads, b.modules[m].heads)
    b.save(tmp_path / "eager")
    streamed = hydraopt_to_bundle(lazy, tmp_path / "lazy", heads=heads, progress=False)
    assert streamed.modules[eager.modules[0]].shared.device.type == "meta"
    for name in ("hydraopt.safetensors", "hydraopt.json"):  # the same files, byte for byte
        assert (tmp_path / "lazy" / name).read_bytes() == (tmp_path / "eager" / name).read_bytes()
    export_peft(b, tmp_path / "peft-eager")
    export_peft_streamed(tmp_path / "lazy", tmp_path / "peft-lazy")
    for task in eager.tasks:
        for name in (WEIGHTS_NAME, "adapter_config.json"):
            assert (tmp_path / "peft-lazy" / task / name).read_bytes() == (tmp_path / "peft-eager" / task / name).read_bytes()


def test_save_peft_streamed_same_files(dirs, tmp_path):
    lazy, eager = load_adapters_lazy(dirs), load_adapters(dirs)
    task = eager.tasks[-1]
    lazy.save_peft(task, tmp_path / "lazy")
    eager.save_peft(task, tmp_path / "eager")
    for name in (WEIGHTS_NAME, "adapter_config.json"):
        assert (tmp_path / "lazy" / name).read_bytes() == (tmp_path / "eager" / name).read_bytes()


@pytest.mark.parametrize("method, knobs", [("quantize", {"codec": "int4"}), ("truncate", {"rank": 2}),
                                           ("compeft", {"density": 0.3}), ("jd", {"c": 4})])
def test_compression_bit_identical(dirs, method, knobs, tmp_path):
    from hydralib.compress import compress_adapters

    lazy, eager = load_adapters_lazy(dirs), load_adapters(dirs)
    a, b = compress_adapters(lazy, method, **knobs), compress_adapters(eager, method, **knobs)
    assert a.save(tmp_path / "a").read_bytes() == b.save(tmp_path / "b").read_bytes()


def test_streamed_quantize_same_file(dirs, tmp_path):
    from hydralib.compress import compress_adapters, load_compressed
    from hydralib.compress.stream import quantize_to_file

    lazy, eager = load_adapters_lazy(dirs), load_adapters(dirs)
    for codec in ("int4", "int8:g8"):
        eager_file = compress_adapters(eager, "quantize", codec=codec).save(tmp_path / f"eager-{codec}")
        lazy_file = quantize_to_file(lazy, tmp_path / f"lazy-{codec}", codec=codec)
        assert lazy_file.read_bytes() == eager_file.read_bytes()
        assert load_compressed(lazy_file).tasks == eager.tasks


def test_analyses_bit_identical(synthetic_dirs):
    from hydralib.analysis import analyse_adapters, to_jsonable

    lazy, eager = load_adapters_lazy(synthetic_dirs), load_adapters(synthetic_dirs)
    a, b = analyse_adapters(lazy, q=0.9), analyse_adapters(eager, q=0.9)
    assert json.dumps(to_jsonable(a[0].__dict__), default=str, sort_keys=True) == \
        json.dumps(to_jsonable(b[0].__dict__), default=str, sort_keys=True)
    assert json.dumps(to_jsonable(a[1].__dict__), default=str, sort_keys=True) == \
        json.dumps(to_jsonable(b[1].__dict__), default=str, sort_keys=True)


def test_streamed_ties_matches_peft(synthetic_dirs):
    from hydralib.merge.baselines import merge_deltas
    from hydralib.merge.streamed import ties_module

    aset = load_adapters_lazy(synthetic_dirs)
    for m in aset.modules:
        triples = [aset.factors(t, m) for t in aset.tasks]
        w = [1.0 + 0.1 * i for i in range(len(triples))]
        ours = ties_module(triples, w, density=0.4, lam=0.7)
        peft = merge_deltas([s * (B @ A) for A, B, s in triples], "ties", w, 0.7, 0.4, module=m)
        torch.testing.assert_close(ours, peft, rtol=1e-5, atol=1e-6)
        assert not torch.equal(ours, torch.zeros_like(ours))


def test_stream_writer_matches_safetensors(tmp_path):
    from safetensors.torch import save

    from hydralib.peft_io.stream import SafetensorsWriter

    g = torch.Generator().manual_seed(0)
    tensors = {"z.b": torch.randn(3, 5, generator=g), "a.x": torch.randn(7, generator=g).half(),
               "m.1": torch.randn(2, 2, generator=g).double(), "m.10": torch.randn(4, generator=g).bfloat16(),
               "m.1-": torch.randn(1, 3, generator=g)}
    w = SafetensorsWriter(tmp_path / "x.safetensors", {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()},
                          {"format": "t"})
    for k in reversed(list(tensors)):  # any order
        w.write(k, tensors[k])
    digest = w.close()
    blob = save(tensors, metadata={"format": "t"})
    assert (tmp_path / "x.safetensors").read_bytes() == blob
    import hashlib

    assert digest == hashlib.sha256(blob).hexdigest()
    w = SafetensorsWriter(tmp_path / "y.safetensors", {"a": (torch.float32, (2,))})
    with pytest.raises(ValueError, match="never written"):
        w.close()


def test_truncated_file_while_open_is_one_line(synthetic_dirs, tmp_path):
    import shutil

    copies = [Path(shutil.copytree(d, tmp_path / d.name)) for d in synthetic_dirs[:3]]
    lazy = load_adapters_lazy(copies)
    victim = copies[1] / WEIGHTS_NAME
    size = victim.stat().st_size
    with open(victim, "r+b") as fh:
        fh.truncate(size // 2)
    lazy.factors(lazy.tasks[0], lazy.modules[0])  # the other files still read
    with pytest.raises(AdapterError) as err:
        for m in lazy.modules:
            lazy.factors(lazy.tasks[1], m)
    message = str(err.value)
    assert str(victim) in message and "\n" not in message and "truncated" in message


def test_open_adapters_threshold(synthetic_dirs, monkeypatch):
    assert isinstance(open_adapters(synthetic_dirs, threshold=0), LazyAdapterSet)
    assert not isinstance(open_adapters(synthetic_dirs), LazyAdapterSet)  # far below 1 GiB
    monkeypatch.setenv("HYDRALIB_LAZY_THRESHOLD", "10")
    assert isinstance(open_adapters(synthetic_dirs), LazyAdapterSet)
    assert not isinstance(open_adapters(synthetic_dirs, lazy=False), LazyAdapterSet)
    monkeypatch.setenv("HYDRALIB_LAZY_THRESHOLD", "lots")
    with pytest.raises(AdapterError, match="HYDRALIB_LAZY_THRESHOLD"):
        open_adapters(synthetic_dirs)


def test_cli_lazy_above_threshold_and_no_lazy(synthetic_dirs, tmp_path, monkeypatch, capsys):
    from hydralib.cli import main

    dirs = list(map(str, synthetic_dirs))
    monkeypatch.setenv("HYDRALIB_LAZY_THRESHOLD", "1000")  # the adapters here are a few KB
    assert main(["merge", *dirs, "--out", str(tmp_path / "lazy"), "--device", "cpu",
                 "--export-peft", str(tmp_path / "peft-lazy")]) == 0
    assert "lazily" in capsys.readouterr().err
    assert main(["merge", *dirs, "--out", str(tmp_path / "eager"), "--device", "cpu", "--no-lazy",
                 "--export-peft", str(tmp_path / "peft-eager")]) == 0
    assert "lazily" not in capsys.readouterr().err
    assert (tmp_path / "lazy" / "hydraopt.safetensors").read_bytes() == \
        (tmp_path / "eager" / "hydraopt.safetensors").read_bytes()
    t = Path(dirs[0]).name
    assert (tmp_path / "peft-lazy" / t / WEIGHTS_NAME).read_bytes() == (tmp_path / "peft-eager" / t / WEIGHTS_NAME).read_bytes()
    monkeypatch.delenv("HYDRALIB_LAZY_THRESHOLD")
    assert main(["info", *dirs, "--json"]) == 0  # small: eager
    assert "lazily" not in capsys.readouterr().err
    assert main(["info", *dirs, "--json", "--lazy"]) == 0
    captured = capsys.readouterr()
    assert "lazily" in captured.err and json.loads(captured.out)["tasks"]
    assert main(["compress", *dirs, "--method", "quantize", "--out", str(tmp_path / "q"), "--lazy"]) == 0


_PEAK = textwrap.dedent("""
    import gc, json, sys
    import torch
    from hydralib.bench.machine import hwm_mib, reset_hwm, rss_mib
    from hydralib.adapters import load_adapters
    from hydralib.lazy import load_adapters_lazy
    from hydralib.merge.hydraopt.stream import hydraopt_to_bundle
    mode, dirs, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    gc.collect()
    assert reset_hwm()
    before = rss_mib()
    aset = load_adapters_lazy(dirs) if mode == "lazy" else load_adapters(dirs)
    hydraopt_to_bundle(aset, out, heads=1, progress=False)
    print(json.dumps({"added_kib": (hwm_mib() - before) * 1024}))
""")


def test_lazy_merge_memory_does_not_grow_with_n(tmp_path):
    """Peak RSS a lazy HydraOpt (K = 1) merge adds, N = 32 against N = 4 adapters, in fresh processes: it grows by
    by at most 1.5x and by less than 60 % of the 28 extra adapters' bytes (one module of N tasks is in memory at a time); the eager set,
    which holds them all, grows by more (the control that shows the measurement can fail)."""
    from hydralib.synthetic import random_lora_factors, write_peft_dirs

    # d_in = 128 < SUBSPACE_MIN_SIZE: N = 4 and N = 32 take the same eigensolver path (R = min(d_in, N r))
    shapes = {f"model.layers.{i}.self_attn.{p}": (1024, 128) for i in range(12) for p in ("q_proj", "v_proj")}
    factors = random_lora_factors(32, shapes, rank=8, seed=0, task_names=[f"t{i:02d}" for i in range(32)])
    dirs = [str(d) for d in write_peft_dirs(factors, {}, tmp_path / "adapters")]
    del factors
    extra_kib = sum((Path(d) / WEIGHTS_NAME).stat().st_size for d in dirs[4:]) / 1024
    # one thread; allocations of 16 KiB and more are mapped and unmapped by glibc (no free-list caching that
    # depends on the order of frees): the peak then follows what is alive, not the allocator's history
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "16384",
           "MALLOC_ARENA_MAX": "1"}

    runs = iter(range(100))

    def added(mode: str, n: int) -> float:
        out = subprocess.run([sys.executable, "-c", _PEAK, mode, json.dumps(dirs[:n]), str(tmp_path / f"{mode}{n}-{next(runs)}")],
                             capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])["added_kib"]

    # the least of two runs each: a peak can only be raised by noise (another job's page faults, the allocator)
    lazy4, lazy32, eager32 = (min(added("lazy", 4), added("lazy", 4)), min(added("lazy", 32), added("lazy", 32)),
                              added("eager", 32))
    print(f"peak RSS added (KiB): lazy N=4 {lazy4:.0f}, lazy N=32 {lazy32:.0f}, eager N=32 {eager32:.0f}; "
          f"extra input {extra_kib:.0f}")
    assert lazy32 <= 1.5 * lazy4, (lazy4, lazy32)
    assert lazy32 - lazy4 < 0.6 * extra_kib, (lazy4, lazy32, extra_kib)
    assert eager32 - lazy4 > 1.0 * extra_kib, (lazy4, eager32, extra_kib)  # control: holding the set is measured


def _small_8b_like(n_tasks=3):
    from dataclasses import replace

    from hydralib.bench.presets import bench_preset

    return replace(bench_preset("llama-3.1-8b"), n_layers=2, d_model=64, d_kv=16, d_ff=160, rank=2, n_tasks=n_tasks)


def test_out_of_core_methods_in_process(tmp_path, monkeypatch):
    """The out-of-core bench's methods on a small preset of the 8B's structure (attention + MLP), in this process."""
    from hydralib.bench.outofcore import _peft_record, ensure_adapters, lazy_eager_ratios, llama_base_params, run_method
    from hydralib.bench.presets import bench_preset

    monkeypatch.setenv("HYDRALIB_CACHE", str(tmp_path / "cache"))
    preset = _small_8b_like()
    dirs = ensure_adapters(preset)
    assert ensure_adapters(preset) == dirs  # written once, then reused
    aset = load_adapters(dirs)
    assert len(aset.modules) == 14 and aset.shape("model.layers.1.mlp.down_proj") == (64, 160)
    assert aset.stored_dtypes[aset.tasks[0]] == torch.bfloat16 and aset.scaling(aset.tasks[0], aset.modules[0]) == 2.0
    spec = {"dirs": [str(d) for d in dirs], "rank": 2, "ties_layers": [1]}
    records = {}
    for i, (method, lazy) in enumerate([("hydraopt-task", True), ("hydraopt-task", False), ("hydraopt-1", True),
                                        ("ties", True), ("int4", True)]):
        (tmp_path / f"s{i}").mkdir()
        records[method, lazy] = run_method({**spec, "method": method, "lazy": lazy, "scratch": str(tmp_path / f"s{i}")})
    assert records["hydraopt-task", True]["loss"] == records["hydraopt-task", False]["loss"]
    assert records["hydraopt-task", True]["bundle_bytes"] == records["hydraopt-task", False]["bundle_bytes"]
    assert records["hydraopt-1", True]["heads"] == 1 and records["hydraopt-1", True]["loss"] > 0
    ties = records["ties", True]
    assert ties["modules_run"] == 7 and ties["layers_run"] == [1] and "extrapolated" in ties
    assert ties["seconds_extrapolated_all_layers"] >= ties["seconds"]
    assert all(r["peak_rss_mib"] > 0 for r in records.values())
    full = bench_preset("llama-3.1-8b")
    assert 7.9e9 < llama_base_params(full) < 8.1e9  # Llama-3.1-8B has 8.03 B parameters
    ratios = lazy_eager_ratios([{**records["hydraopt-task", lazy], "status": "ok"} for lazy in (True, False)])
    assert list(ratios) == ["hydraopt-task N=3"] and ratios["hydraopt-task N=3"]["time_lazy_over_eager"] > 0
    why = _peft_record(full)["why"]
    assert "\n" not in why and "GiB" in why


@pytest.mark.slow
def test_out_of_core_suite_subprocesses(tmp_path, monkeypatch):
    from hydralib.bench.outofcore import out_of_core_suite, text_table

    monkeypatch.setenv("HYDRALIB_CACHE", str(tmp_path / "cache"))
    result = out_of_core_suite(_small_8b_like(4), ["hydraopt-task", "ties", "int4", "peft-svd"], ties_layers=[0],
                               tasks_grid=[2], compare_eager=True, echo=lambda _: None)
    assert all(r["status"] in ("ok", "not run") for r in result["records"]), result["records"]
    assert "peft-svd" in text_table(result)
    assert set(result["comparisons"]) == {"hydraopt-task N=2", "hydraopt-task N=4"}
