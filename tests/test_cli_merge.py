"""`hydralib merge`: HydraOpt bundles and per-task PEFT exports, dW-space baselines, all loadable by stock peft."""

from __future__ import annotations

import json

import pytest
import torch

from hydralib import load_adapters
from hydralib.cli import EXIT_BAD_INPUT, main
from hydralib.merge import load_bundle, merge_adapters


@pytest.fixture
def meta_file(tmp_path):
    path = tmp_path / "meta.json"
    path.write_text(json.dumps({"grammar-en": {"application": "grammar", "language": "en"},
                                "grammar-de": {"application": "grammar", "language": "de"},
                                "reply-en": {"application": "reply", "language": "en"}}))
    return path


def test_hydraopt_bundle_and_peft_export(lora_dirs, tmp_path, meta_file, capsys, llama_base):
    from peft import PeftModel

    from conftest import peft_deltas

    out, export = tmp_path / "bundle", tmp_path / "per-task"
    argv = ["merge", *map(str, lora_dirs), "--heads", "application", "--metadata", str(meta_file),
            "--rank", "4", "--out", str(out), "--export-peft", str(export)]
    assert main(argv) == 0
    assert "2 heads" in capsys.readouterr().out
    bundle = load_bundle(out)
    exported = load_adapters(str(export / "*"))
    assert sorted(exported.tasks) == sorted(p.name for p in lora_dirs)
    # tasks of one application share their head: identical exported updates
    m = exported.modules[0]
    assert torch.equal(exported.delta("grammar-en", m), exported.delta("grammar-de", m))
    assert not torch.equal(exported.delta("grammar-en", m), exported.delta("reply-en", m))
    model = PeftModel.from_pretrained(llama_base, str(export / "reply-en"))
    for module, delta in peft_deltas(model).items():
        torch.testing.assert_close(delta, exported.delta("reply-en", module), atol=1e-6, rtol=1e-5)
    model.unload()
    assert bundle is not None
    assert main(argv) == EXIT_BAD_INPUT  # outputs exist: refused without --overwrite
    assert "already exists" in capsys.readouterr().err


def test_baseline_merge_matches_library(lora_dirs, tmp_path, capsys):
    out = tmp_path / "ties"
    assert main(["merge", *map(str, lora_dirs), "--method", "ties", "--density", "0.5", "--lam", "0.7",
                 "--out", str(out)]) == 0
    assert "ties: rank 4" in capsys.readouterr().out
    merged = load_adapters([out])
    reference = merge_adapters(load_adapters(lora_dirs), "ties", density=0.5, lam=0.7, progress=False)
    for m in merged.modules:
        torch.testing.assert_close(merged.delta("ties", m), reference.delta(m), atol=1e-6, rtol=1e-5)


def test_bad_heads_is_a_clean_error(lora_dirs, tmp_path, capsys):
    code = main(["merge", *map(str, lora_dirs), "--heads", "language", "--out", str(tmp_path / "x")])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("hydralib merge: error: hydraopt:") and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_device_defaults_to_get_device_and_can_be_chosen(lora_dirs, tmp_path, capsys, monkeypatch):
    """``--device`` picks where HydraOpt and the baselines compute; without it, presets.get_device()
    (CUDA when available, else CPU; $HYDRALIB_DEVICE overrides). Bad values fail cleanly, in one line."""
    import hydralib.merge as merge
    from hydralib.presets import DEVICE_ENV, get_device

    seen = []
    real_hydraopt, real_merge = merge.hydraopt, merge.merge_adapters

    def spy(real):
        def call(*args, **kwargs):
            seen.append(torch.device(kwargs["device"]))
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(merge, "hydraopt", spy(real_hydraopt))
    monkeypatch.setattr(merge, "merge_adapters", spy(real_merge))
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    dirs = list(map(str, lora_dirs))
    assert main(["merge", *dirs, "--heads", "2", "--out", str(tmp_path / "default")]) == 0
    assert seen[-1] == get_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert main(["merge", *dirs, "--heads", "2", "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    assert seen[-1] == torch.device("cpu")
    assert main(["merge", *dirs, "--method", "ties", "--density", "0.5", "--device", "cpu",
                 "--out", str(tmp_path / "ties")]) == 0
    assert seen[-1] == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert main(["merge", *dirs, "--out", str(tmp_path / "env")]) == 0 and seen[-1] == torch.device("cpu")
    monkeypatch.delenv(DEVICE_ENV)
    capsys.readouterr()

    with pytest.raises(SystemExit) as usage:  # not a device: a usage error
        main(["merge", *dirs, "--device", "gpu", "--out", str(tmp_path / "bad")])
    assert usage.value.code == 2 and "--device: 'gpu': use cpu, cuda or cuda:N" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["merge", *dirs, "--device", "cuda", "--out", str(tmp_path / "nocuda")]) == EXIT_BAD_INPUT
        err = capsys.readouterr().err.strip()
        assert "CUDA is not available" in err and len(err.splitlines()) == 1 and "Traceback" not in err
        assert not (tmp_path / "nocuda").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_merge_on_cuda_matches_cpu(lora_dirs, tmp_path, capsys):
    dirs = list(map(str, lora_dirs))
    assert main(["merge", *dirs, "--heads", "task", "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    assert main(["merge", *dirs, "--heads", "task", "--device", "cuda", "--out", str(tmp_path / "cuda")]) == 0
    cpu, cuda = load_bundle(tmp_path / "cpu"), load_bundle(tmp_path / "cuda")
    assert cuda.task_to_head == cpu.task_to_head
    for task in cpu.tasks:
        for module in cpu.modules:
            torch.testing.assert_close(cuda.delta(task, module), cpu.delta(task, module), atol=1e-5, rtol=1e-4)
