"""Storage accounting: counts equal the numbers actually stored."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from hydralib import AdapterSet, load_adapters, storage
from hydralib.peft_io import WEIGHTS_NAME


def test_adapter_params_equal_tensor_sizes_on_disk(lora_dirs):
    aset = load_adapters(lora_dirs)
    for task, directory in zip(aset.tasks, lora_dirs):
        on_disk = sum(t.numel() for t in load_file(str(directory / WEIGHTS_NAME)).values())
        assert storage.adapter_params(aset, task) == on_disk
    assert storage.set_params(aset) == sum(storage.adapter_params(aset, t) for t in aset.tasks)


def test_vera_counts_only_the_vectors(tmp_path):
    from peft import VeraConfig

    from conftest import LLAMA_TARGETS, save_peft_adapter, tiny_llama

    d = save_peft_adapter(tmp_path / "v", tiny_llama(), VeraConfig(r=8, target_modules=LLAMA_TARGETS))
    aset = load_adapters([d])
    vectors = sum(t.numel() for k, t in load_file(str(d / WEIGHTS_NAME)).items() if "lambda" in k)
    assert storage.adapter_params(aset, aset.tasks[0]) == vectors


def test_table_rows_and_relative(lora_dirs):
    aset = load_adapters(lora_dirs)
    shapes = storage.module_shapes(aset)
    merged = storage.merged_lora_params(shapes, rank=4)
    hydra = storage.hydra_params(shapes, rank=4, heads=len(aset.tasks))
    rows = storage.storage_table(aset, extra={"merged r=4": merged, "hydra K=N": hydra})
    by = {r.label: r for r in rows}
    assert by["all 3 adapters"].relative == 1.0
    assert by["merged r=4"].params == storage.adapter_params(aset, "grammar-en")  # same rank, same modules
    assert abs(by["merged r=4"].relative - 1 / 3) < 1e-12
    # K = N heads of rank r with one shared A: less than N full adapters, more than one
    assert merged < hydra < by["all 3 adapters"].params
    assert by["grammar-en"].bytes == 4 * by["grammar-en"].params  # float32 files


def test_formulas():
    assert storage.lora_module_params(192, 576, 8) == 8 * (576 + 192)
    assert storage.hydra_module_params(192, 576, 8, heads=5, side="A") == 8 * 576 + 5 * 8 * 192
    assert storage.hydra_module_params(192, 576, 8, heads=5, side="B") == 8 * 192 + 5 * 8 * 576
    assert storage.hydra_module_params(192, 576, 8, heads=1) == storage.lora_module_params(192, 576, 8)
    assert storage.vera_module_params(192, 256) == 448
    assert storage.bytes_per_param(torch.float16) == 2 and storage.bytes_per_param("float32") == 4
    assert storage.human_bytes(1536) == "1.5 KiB" and storage.human_bytes(12) == "12 B"


def test_from_factors_storage():
    aset = AdapterSet.from_factors({t: {"m": (torch.ones(3, 10), torch.ones(6, 3), 1.0)} for t in "abcd"})
    assert storage.set_params(aset) == 4 * 3 * 16
    assert storage.hydra_params(storage.module_shapes(aset), rank=3, heads=2) == 3 * 10 + 2 * 3 * 6
