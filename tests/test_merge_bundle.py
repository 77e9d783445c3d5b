"""HydraOpt bundles (hydralib.merge.bundle): round trip, determinism, validation, PEFT export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hydralib.adapters import AdapterSet, load_adapters
from hydralib.errors import AdapterError, OutputExistsError
from hydralib.merge.bundle import META_NAME, TENSORS_NAME, bundle_storage, export_peft, load_bundle, save_bundle
from hydralib.merge.hydraopt import hydraopt
from hydralib.synthetic import random_lora_factors, synthetic_tasks

MODULES = {
    "model.layers.0.self_attn.q_proj": (12, 10),
    "model.layers.0.self_attn.v_proj": (6, 10),
}
Q = "model.layers.0.self_attn.q_proj"


def adapter_set(seed=0):
    tasks, meta = synthetic_tasks(["qa", "reply"], ["en", "de"])
    f = random_lora_factors(4, MODULES, rank=2, seed=seed, shared_a=0.5, task_names=tasks)
    return AdapterSet.from_factors(f, base_model="toy/base", metadata=meta)


@pytest.fixture(scope="module")
def result():
    return hydraopt(adapter_set(), heads="application", rank=3, progress=False)


def test_round_trip(tmp_path, result):
    path = save_bundle(result, tmp_path / "bundle")
    assert sorted(p.name for p in path.iterdir()) == [META_NAME, TENSORS_NAME]
    again = load_bundle(path)
    assert again.task_to_head == result.task_to_head and again.head_names == result.head_names
    assert (again.side, again.rank, again.solver, again.weighting, again.base_model) == ("A", 3, "exact", "uniform", "toy/base")
    assert again.metadata["qa-de"] == {"application": "qa", "language": "de"}
    for module, m in result.modules.items():
        assert torch.equal(again.modules[module].shared, m.shared) and torch.equal(again.modules[module].heads, m.heads)
        assert again.modules[module].loss == m.loss and again.modules[module].floor == m.floor
    for task in result.tasks:
        torch.testing.assert_close(again.delta(task, Q), result.delta(task, Q))
    assert again.total_loss == pytest.approx(result.total_loss) and again.total_floor == pytest.approx(result.total_floor)
    meta = json.loads((path / META_NAME).read_text())
    assert meta["target_modules"] == sorted(MODULES) and meta["task_to_head"]["reply-en"] == "reply"
    assert meta["side"] == "A" and meta["rank"] == 3 and meta["weighting"] == "uniform"
    assert bundle_storage(path) == result.storage == again.storage == meta["storage"]
    assert result.storage == sum(3 * d_in + 2 * 3 * d_out for d_out, d_in in MODULES.values())
    keys = set(load_file(str(path / TENSORS_NAME)))
    assert keys == {f"{m}.shared.lora_a" for m in MODULES} | {f"{m}.heads.lora_b" for m in MODULES}


def test_side_b_round_trip(tmp_path):
    res = hydraopt(adapter_set(), heads=2, rank=2, side="B", progress=False)
    again = load_bundle(save_bundle(res, tmp_path / "b"))
    assert again.side == "B"
    m = again.modules[Q]
    assert m.shared.shape == (12, 2) and m.heads.shape == (2, 2, 10)
    torch.testing.assert_close(again.delta("qa-en", Q), res.delta("qa-en", Q))


def test_bytes_are_deterministic(tmp_path, result):
    a = save_bundle(result, tmp_path / "a")
    rerun = hydraopt(adapter_set(), heads="application", rank=3, progress=False)
    b = save_bundle(rerun, tmp_path / "b")
    for name in (META_NAME, TENSORS_NAME):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_refuses_to_overwrite(tmp_path, result):
    path = save_bundle(result, tmp_path / "bundle")
    before = (path / TENSORS_NAME).read_bytes()
    other = hydraopt(adapter_set(seed=1), heads="task", rank=2, progress=False)
    with pytest.raises(OutputExistsError, match="already exists"):
        save_bundle(other, path)
    assert (path / TENSORS_NAME).read_bytes() == before  # nothing lost
    save_bundle(other, path, overwrite=True)
    assert load_bundle(path).n_heads == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def _rewrite_tensors(path, change):
    tensors = load_file(str(path / TENSORS_NAME))
    change(tensors)
    save_file(tensors, str(path / TENSORS_NAME))


def test_load_errors_name_the_file_and_module(tmp_path, result):
    path = save_bundle(result, tmp_path / "bundle")
    with pytest.raises(AdapterError, match="sha256"):
        _rewrite_tensors(path, lambda t: None)
        load_bundle(path)

    def wrong_shape(t):
        t[f"{Q}.heads.lora_b"] = torch.zeros(2, 12, 4)

    _rewrite_tensors(path, wrong_shape)
    with pytest.raises(AdapterError, match=rf"{TENSORS_NAME}: module {Q}: tensor .*heads.lora_b has shape \(2, 12, 4\), expected \(2, 12, 3\)"):
        load_bundle(path, verify_hash=False)

    path = save_bundle(result, tmp_path / "b2")
    _rewrite_tensors(path, lambda t: t.pop(f"{Q}.shared.lora_a"))
    with pytest.raises(AdapterError, match=rf"module {Q}: tensor .*shared.lora_a is missing"):
        load_bundle(path, verify_hash=False)

    path = save_bundle(result, tmp_path / "b3")
    _rewrite_tensors(path, lambda t: t.update({"extra.weight": torch.zeros(1)}))
    with pytest.raises(AdapterError, match="belong to no target module"):
        load_bundle(path, verify_hash=False)

    path = save_bundle(result, tmp_path / "b4")

    def nan(t):
        t[f"{Q}.shared.lora_a"][0, 0] = float("nan")

    _rewrite_tensors(path, nan)
    with pytest.raises(AdapterError, match=f"module {Q}.*NaN"):
        load_bundle(path, verify_hash=False)

    path = save_bundle(result, tmp_path / "b5")
    data = (path / TENSORS_NAME).read_bytes()
    (path / TENSORS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterError, match=f"{TENSORS_NAME}: corrupt"):
        load_bundle(path, verify_hash=False)

    (path / META_NAME).write_text("{not json")
    with pytest.raises(AdapterError, match=f"{META_NAME}: invalid JSON"):
        load_bundle(path)
    with pytest.raises(AdapterError, match="no such bundle"):
        load_bundle(tmp_path / "missing")


def test_export_peft_round_trips_through_hydralib(tmp_path, result):
    dirs = export_peft(result, tmp_path / "peft")
    assert sorted(dirs) == sorted(result.tasks)
    config = json.loads((dirs["qa-en"] / "adapter_config.json").read_text())
    assert config["r"] == 3 and config["lora_alpha"] == 3 and config["base_model_name_or_path"] == "toy/base"
    loaded = load_adapters([dirs[t] for t in result.tasks], tasks=result.tasks)
    for task in result.tasks:
        for module in MODULES:
            A, B, s = loaded.factors(task, module)
            A0, B0, _ = result.factors(task, module)
            assert s == 1.0 and torch.equal(A, A0) and torch.equal(B, B0)
    with pytest.raises(OutputExistsError):
        export_peft(result, tmp_path / "peft")
    # a bundle path works too, and only some tasks can be exported
    bundle = save_bundle(result, tmp_path / "bundle")
    assert sorted(export_peft(bundle, tmp_path / "two", tasks=["qa-de", "reply-de"])) == ["qa-de", "reply-de"]


class _Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(10, 12, bias=False)
        self.v_proj = torch.nn.Linear(10, 6, bias=False)


class _Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = _Attention()


class _Inner(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([_Layer()])


class _Toy(torch.nn.Module):
    """A model whose module names match MODULES, so stock peft can load the export."""

    def __init__(self):
        super().__init__()
        self.model = _Inner()

    def forward(self, x):
        attn = self.model.layers[0].self_attn
        return torch.cat([attn.q_proj(x), attn.v_proj(x)], dim=-1)


def test_stock_peft_loads_the_export_and_gives_the_same_outputs(tmp_path, result):
    from peft import PeftModel

    dirs = export_peft(result, tmp_path / "peft", tasks=["reply-de"])
    torch.manual_seed(0)
    base = _Toy()
    x = torch.randn(5, 10)
    with torch.no_grad():
        expected = base(x) + torch.cat([x @ result.delta("reply-de", m).T for m in sorted(MODULES)], dim=-1)
    model = PeftModel.from_pretrained(base, str(dirs["reply-de"]))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
