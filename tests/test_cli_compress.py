"""`hydralib compress` and `hydralib merge --quantize`: the file written is the storage, it reads back to the same
factors, and its per-task PEFT export loads in stock peft with the compressed update."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from hydralib import load_adapters
from hydralib.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, main
from hydralib.compress import compress_adapters, load_compressed, relative_loss
from hydralib.compress.container import TENSORS_NAME
from hydralib.runtime import applied

# method -> (flags, knobs of compress_adapters)
METHODS = {
    "truncate": (["--rank", "2", "--codec", "int4"], {"rank": 2, "codec": "int4"}),
    "quantize": (["--codec", "int4:g16"], {"codec": "int4:g16"}),
    "compeft": (["--density", "0.2"], {"density": 0.2}),
    "jd": (["--c", "6", "--diagonal"], {"c": 6, "diagonal": True}),
}


def _compress(lora_dirs, method, out, *extra):
    return main(["compress", *map(str, lora_dirs), "--method", method, *METHODS[method][0], "--out", str(out), *extra])


def _usage(argv, capsys) -> str:
    """stderr of a usage error (exit code 2: argparse's usage, then one error line)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: hydralib ") and "Traceback" not in err, err
    return err.splitlines()[-1]


def _same_factors(got, expected):
    assert got.tasks == expected.tasks and got.mapping == expected.mapping and got.codecs == expected.codecs
    assert sorted(got.factors) == sorted(expected.factors)
    for module, named in expected.factors.items():
        assert sorted(got.factors[module]) == sorted(named)
        for name, x in named.items():
            assert torch.equal(got.factors[module][name], x), (module, name)


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_writes_the_storage_it_reports(method, lora_dirs, tmp_path, capsys):
    out = tmp_path / "small"
    assert _compress(lora_dirs, method, out) == EXIT_OK
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and line.startswith(f"{method} ("), line
    file = out / TENSORS_NAME
    assert sorted(p.name for p in out.iterdir()) == [TENSORS_NAME]
    printed = int(re.search(r"([\d,]+) bytes = ", line).group(1).replace(",", ""))
    assert printed == os.path.getsize(file)
    aset = load_adapters(lora_dirs)
    cset = compress_adapters(aset, method, **METHODS[method][1])
    assert printed == cset.nbytes(tmp_path)
    loaded = load_compressed(out)
    _same_factors(loaded, cset)
    assert loaded.base_model == aset.base_model == "tiny-llama"
    assert f"relative loss {relative_loss(cset, aset):.4g};" in line
    decoded, expected = loaded.to_adapter_set(), cset.to_adapter_set()
    for t in aset.tasks:
        for m in aset.modules:
            assert all(torch.equal(x, y) for x, y in zip(decoded.factors(t, m)[:2], expected.factors(t, m)[:2]))


@pytest.mark.parametrize("method", ["truncate", "jd"])
def test_export_peft_loads_in_stock_peft_with_the_compressed_update(method, lora_dirs, tmp_path, capsys, llama_base):
    from peft import PeftModel

    out, export = tmp_path / "small", tmp_path / "per-task"
    assert _compress(lora_dirs, method, out, "--export-peft", str(export)) == EXIT_OK
    assert f"3 PEFT directories under {export}" in capsys.readouterr().out
    cset = load_compressed(out)
    _same_factors(cset, compress_adapters(load_adapters(lora_dirs), method, **METHODS[method][1]))
    served = cset.to_adapter_set()
    assert sorted(p.name for p in export.iterdir()) == sorted(cset.tasks)
    ids = torch.arange(12).reshape(2, 6) % 64
    for task in cset.tasks:
        config = json.loads((export / task / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "tiny-llama"
        with torch.no_grad(), applied(llama_base, served, task):
            reference = llama_base(ids).logits
        model = PeftModel.from_pretrained(llama_base, str(export / task))
        try:
            with torch.no_grad():
                logits = model(ids).logits
        finally:
            model.unload()
        torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)
        with torch.no_grad():
            base = llama_base(ids).logits
        assert not torch.allclose(base, reference, atol=1e-4)  # the update is applied, and unloaded again


def test_existing_outputs_are_refused_and_untouched(lora_dirs, tmp_path, capsys):
    out, export = tmp_path / "small", tmp_path / "per-task"
    out.mkdir()
    (out / TENSORS_NAME).write_bytes(b"written before")
    assert _compress(lora_dirs, "quantize", out) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("hydralib compress: error: ") and err.count("\n") == 1, err
    assert str(out) in err and "--overwrite" in err
    assert (out / TENSORS_NAME).read_bytes() == b"written before"
    # an existing export refuses the whole run: --out is not written either
    fresh = tmp_path / "fresh"
    export.mkdir()
    assert _compress(lora_dirs, "quantize", fresh, "--export-peft", str(export)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(export) in err and err.count("\n") == 1, err
    assert not fresh.exists() and list(export.iterdir()) == []
    # with --overwrite both are written
    assert _compress(lora_dirs, "quantize", out, "--export-peft", str(export), "--overwrite") == EXIT_OK
    assert load_compressed(out).method == "int4:g16"
    assert sorted(load_adapters(str(export / "*")).tasks) == sorted(p.name for p in lora_dirs)


@pytest.mark.parametrize("argv,fragment", [
    (["--method", "truncate"], "--method truncate needs --rank"),
    (["--method", "truncate", "--rank", "0"], "argument --rank"),
    (["--method", "jd"], "--method jd needs --c"),
    (["--method", "quantize", "--codec", "int9"], "argument --codec: unknown codec 'int9'"),
    (["--method", "truncate", "--rank", "2", "--codec", "int4:g0"], "argument --codec: unknown codec"),
    (["--method", "quantize", "--rank", "2"], "--method quantize does not take --rank"),
    (["--method", "compeft", "--density", "1.5"], "argument --density"),
], ids=["no-rank", "rank-0", "no-c", "bad-codec", "bad-group", "foreign-knob", "bad-density"])
def test_usage_errors(argv, fragment, lora_dirs, tmp_path, capsys):
    out = tmp_path / "small"
    last = _usage(["compress", *map(str, lora_dirs), *argv, "--out", str(out)], capsys)
    assert last.startswith("hydralib compress: error: ") and fragment in last, last
    assert not out.exists()


def test_quantize_needs_hydraopt_and_help_works(lora_dirs, tmp_path, capsys):
    out = tmp_path / "merged"
    last = _usage(["merge", *map(str, lora_dirs), "--method", "ties", "--density", "0.5", "--quantize", "int4",
                   "--out", str(out)], capsys)
    assert last.startswith("hydralib merge: error: ") and "--quantize" in last and "ties" in last
    assert not out.exists()
    with pytest.raises(SystemExit) as exc:
        main(["compress", "--help"])
    assert exc.value.code == EXIT_OK
    assert "--method" in capsys.readouterr().out


def test_merge_quantize_writes_a_compressed_file(lora_dirs, tmp_path, capsys):
    out, export = tmp_path / "hydra-int4", tmp_path / "per-task"
    assert main(["merge", *map(str, lora_dirs), "--heads", "2", "--quantize", "int4", "--out", str(out),
                 "--export-peft", str(export)]) == EXIT_OK
    text = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [TENSORS_NAME]  # the compressed file instead of the bundle
    cset = load_compressed(out)
    assert cset.layout == "shared" and cset.codecs == {"shared": "int4", "heads": "int4"} and len(cset.entries) == 2
    printed = int(re.search(r"stored int4: ([\d,]+) bytes", text).group(1).replace(",", ""))
    assert printed == os.path.getsize(out / TENSORS_NAME)
    exported, served = load_adapters(str(export / "*")), cset.to_adapter_set()
    assert sorted(exported.tasks) == sorted(cset.tasks)
    for t in cset.tasks:
        for m in cset.factors:
            torch.testing.assert_close(exported.delta(t, m), served.delta(t, m), atol=1e-6, rtol=1e-5)
