"""Head runtime (hydralib.heads): one shared factor per module, a switchable head, against stock peft."""

from __future__ import annotations

import copy
import doctest
import warnings

import pytest
import torch

import hydralib.heads
from hydralib.adapters import AdapterSet, linear_shapes, load_adapters
from hydralib.errors import AdapterError
from hydralib.heads import HeadLayer, attach_heads
from hydralib.merge.bundle import bundle_storage, export_peft, save_bundle
from hydralib.merge.hydraopt import hydraopt
from hydralib.runtime import applied
from hydralib.storage import hydra_params

from conftest import tiny_gpt2, tiny_llama

ATOL = 1e-5
Q0 = "model.layers.0.self_attn.q_proj"


def _ids(seed=0, vocab=64):
    return torch.randint(0, vocab, (2, 7), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _logits(model, ids):
    return model(input_ids=ids).logits


@torch.no_grad()
def _peft_logits(base, directory, ids):
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")  # GPT-2: peft switches it on for Conv1D
        model = PeftModel.from_pretrained(copy.deepcopy(base), str(directory)).eval()
    return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def llama():
    return tiny_llama(seed=0)


@pytest.fixture(scope="module")
def llama_set(lora_dirs):
    """Three LoRA adapters (r=4) on q/k/v/o of a tiny Llama, written by stock peft and read back."""
    return load_adapters(lora_dirs)


RESULTS = {"A-2heads": dict(heads=2, side="A", rank=4), "B-task": dict(heads="task", side="B", rank=3)}


@pytest.fixture(scope="module", params=sorted(RESULTS))
def llama_result(request, llama_set):
    return hydraopt(llama_set, progress=False, **RESULTS[request.param])


def test_doctest_example():
    result = doctest.testmod(hydralib.heads)
    assert result.attempted > 0 and result.failed == 0


def test_every_task_matches_stock_peft_and_applied(tmp_path, llama, llama_result):
    result = llama_result
    dirs = export_peft(result, tmp_path / "peft")
    ids = _ids()
    model = copy.deepcopy(llama)
    runtime = attach_heads(model, result)
    assert set(runtime.layers) == set(result.modules) and all(isinstance(model.get_submodule(m), HeadLayer) for m in result.modules)
    base = _logits(llama, ids)
    dense = result.to_adapter_set()
    for task in result.tasks:
        runtime.set_task(task)
        assert runtime.active == result.head_index(task) and runtime.active_task == task
        assert runtime.active_head == result.task_to_head[task]
        ours = _logits(model, ids)
        assert not torch.allclose(ours, base, atol=1e-3)  # the head does something
        torch.testing.assert_close(ours, _peft_logits(llama, dirs[task], ids), atol=ATOL, rtol=1e-5)
        reference = copy.deepcopy(llama)
        with applied(reference, dense, task):
            torch.testing.assert_close(ours, _logits(reference, ids), atol=ATOL, rtol=1e-5)


def test_switching_heads_and_detach(llama, llama_set):
    result = hydraopt(llama_set, heads=2, side="A", rank=4, progress=False)
    ids = _ids(1)
    model = copy.deepcopy(llama)
    originals = {m: model.get_submodule(m) for m in result.modules}
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    base = _logits(model, ids)

    runtime = attach_heads(model, result)
    assert runtime.active is None
    assert torch.equal(_logits(model, ids), base)  # no head selected: exactly the base model
    by_head = {}
    for task in result.tasks:
        by_head.setdefault(result.head_index(task), task)
    assert len(by_head) == 2
    (k0, t0), (k1, t1) = sorted(by_head.items())
    runtime.set_task(t0)
    first = _logits(model, ids)
    runtime.set_head(k1)
    second = _logits(model, ids)
    assert runtime.active == k1 and runtime.active_task is None
    assert not torch.allclose(first, second, atol=1e-4)
    runtime.set_head(result.head_names[k0])
    assert torch.equal(_logits(model, ids), first)  # back: bit for bit
    runtime.set_task(t1)
    assert torch.equal(_logits(model, ids), second)
    with runtime.use(t0):
        assert runtime.active == k0 and torch.equal(_logits(model, ids), first)
    assert runtime.active == k1 and runtime.active_task == t1  # restored after the block
    with runtime.use(None):
        assert torch.equal(_logits(model, ids), base)
    assert runtime.active == k1

    runtime.detach()
    assert not runtime.attached
    assert all(model.get_submodule(m) is originals[m] for m in result.modules)  # the very same objects
    after = model.state_dict()
    assert after.keys() == state_before.keys() and all(torch.equal(after[k], v) for k, v in state_before.items())
    assert torch.equal(_logits(model, ids), base)
    runtime.detach()  # idempotent
    with pytest.raises(AdapterError, match="detached"):
        runtime.set_task(t0)
    again = attach_heads(model, result).set_task(t0)  # attachable again after detach
    assert torch.equal(_logits(model, ids), first)
    again.detach()


def test_shared_factor_is_stored_once(tmp_path, llama, llama_result):
    result = llama_result
    model = copy.deepcopy(llama)
    runtime = attach_heads(model, result)
    side = result.side
    for module, m in result.modules.items():
        layer = runtime.layers[module]
        # the result's own tensors, by reference: no copy at all on a CPU float32 model
        assert layer.shared.data_ptr() == m.shared.data_ptr() and layer.heads.data_ptr() == m.heads.data_ptr()
        shared_ptrs, head_ptrs = set(), []
        for task in result.tasks:
            lora_a, lora_b, s = runtime.factors(task, module)
            assert s == 1.0
            shared, head = (lora_a, lora_b) if side == "A" else (lora_b, lora_a)
            shared_ptrs.add(shared.data_ptr())
            k = result.head_index(task)
            assert head.data_ptr() == layer.heads.data_ptr() + k * layer.heads.stride(0) * layer.heads.element_size()
            head_ptrs.append(head.data_ptr())
        assert shared_ptrs == {layer.shared.data_ptr()}  # one A' (or B') for every task and head
        assert len(set(head_ptrs)) == result.n_heads
        names = [n for n, _ in layer.named_buffers()]
        assert names == ["shared", "heads"] and "shared" not in layer.state_dict()
    # two tensors per module, whatever the number of tasks
    assert len(runtime._tensors()) == 2 * len(result.modules)
    shapes = {m: shape for m, shape in linear_shapes(llama).items() if m in result.modules}
    expected = hydra_params(shapes, result.rank, result.n_heads, side)
    path = save_bundle(result, tmp_path / "bundle")
    assert runtime.storage_params() == result.storage == bundle_storage(path) == expected
    assert runtime.storage_bytes() == 4 * bundle_storage(path)
    runtime.detach()
    # a bundle path works as the result, and a float16 copy is made once per module
    from_bundle = attach_heads(model, path, dtype=torch.float16)
    assert from_bundle.storage_bytes() == 2 * bundle_storage(path)
    from_bundle.detach()


def test_mapping_routes_tasks_to_heads(llama, llama_set):
    result = hydraopt(llama_set, heads="task", side="A", rank=4, progress=False)
    ids = _ids(2)
    model = copy.deepcopy(llama)
    t0, t1 = result.tasks[:2]
    runtime = attach_heads(model, result, mapping={"new-task": result.task_to_head[t0], "other": 1})
    assert runtime.tasks == ["new-task", "other"]
    with runtime.use("new-task"):
        new = _logits(model, ids)
    runtime.set_head(result.head_index(t0))
    assert torch.equal(_logits(model, ids), new)
    with pytest.raises(AdapterError, match=f"unknown task '{t1}'"):
        runtime.set_task(t1)  # not in this mapping
    runtime.detach()


def test_errors_name_the_problem(llama, llama_set):
    result = hydraopt(llama_set, heads=2, side="A", rank=4, progress=False)
    model = copy.deepcopy(llama)
    runtime = attach_heads(model, result)
    with pytest.raises(AdapterError, match="unknown task 'nope'"):
        runtime.set_task("nope")
    with pytest.raises(AdapterError, match="unknown head 'nope'"):
        runtime.set_head("nope")
    with pytest.raises(AdapterError, match=r"not an index in 0\.\.1"):
        runtime.set_head(2)
    with pytest.raises(AdapterError, match="already attached"):
        attach_heads(model, result)
    with pytest.raises(AdapterError, match="unknown task 'nope'"):
        with runtime.use("nope"):
            pass
    assert runtime.active is None
    runtime.detach()

    head = result.head_names[0]
    with pytest.raises(AdapterError, match=r"task 'x' -> head 'missing', which is not one of the heads"):
        attach_heads(model, result, mapping={"x": "missing"})
    with pytest.raises(AdapterError, match=r"task 'x' -> head 5, outside 0\.\.1"):
        attach_heads(model, result, mapping={"y": head, "x": 5})
    with pytest.raises(AdapterError, match="mapping is empty"):
        attach_heads(model, result, mapping={})
    with pytest.raises(AdapterError, match="a head is a name"):
        attach_heads(model, result, mapping={"x": 1.5})
    assert all(not isinstance(m, HeadLayer) for m in model.modules())  # nothing was attached

    # a model without the modules, and one with other shapes: errors name the module, the model is untouched
    with pytest.raises(AdapterError, match=r"module model\.layers\.\d\.self_attn\.\w_proj: not found"):
        attach_heads(tiny_gpt2(), result)
    wider = tiny_llama(hidden=48)
    with pytest.raises(AdapterError, match=r"module model\.layers\.0\.self_attn\.k_proj: the result's update is 16x32 .* layer is 24x48"):
        attach_heads(wider, result)
    assert all(not isinstance(m, HeadLayer) for m in wider.modules())
    with pytest.raises(AdapterError, match=rf"module {Q0}: is a Embedding"):
        bad = copy.deepcopy(llama)
        bad.model.layers[0].self_attn.q_proj = torch.nn.Embedding(4, 4)
        attach_heads(bad, result)


def test_gpt2_conv1d_matches_stock_peft(tmp_path):
    base = tiny_gpt2(seed=0)
    shapes = {m: s for m, s in linear_shapes(base).items() if m.endswith(("attn.c_attn", "attn.c_proj"))}
    assert len(shapes) == 4 and shapes["transformer.h.0.attn.c_attn"] == (96, 32)
    g = torch.Generator().manual_seed(3)
    factors = {
        f"task{i}": {m: (0.3 * torch.randn(4, d_in, generator=g), 0.3 * torch.randn(d_out, 4, generator=g), 1.5)
                     for m, (d_out, d_in) in shapes.items()}
        for i in range(3)
    }
    aset = AdapterSet.from_factors(factors, base_model="tiny-gpt2", fan_in_fan_out=True)
    ids = _ids(4)
    base_logits = _logits(base, ids)
    for side, heads in (("A", 2), ("B", "task")):
        result = hydraopt(aset, heads=heads, side=side, rank=4, progress=False)
        dirs = export_peft(result, tmp_path / side)
        model = copy.deepcopy(base)
        runtime = attach_heads(model, result)
        assert type(runtime.layers["transformer.h.1.attn.c_attn"].base_layer).__name__ == "Conv1D"
        dense = result.to_adapter_set()
        for task in result.tasks:
            runtime.set_task(task)
            ours = _logits(model, ids)
            assert not torch.allclose(ours, base_logits, atol=1e-3)
            torch.testing.assert_close(ours, _peft_logits(base, dirs[task], ids), atol=ATOL, rtol=1e-5)
            reference = copy.deepcopy(base)
            with applied(reference, dense, task):
                torch.testing.assert_close(ours, _logits(reference, ids), atol=ATOL, rtol=1e-5)
        assert runtime.storage_params() == result.storage
        runtime.detach()
        assert torch.equal(_logits(model, ids), base_logits)
