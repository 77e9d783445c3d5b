"""DoRA and AdaLoRA adapters: read, merged, exported; stock peft's forward pass is the oracle.

The adapters are written by stock peft on a tiny Llama (hydralib.bench.adapter_types: random factors, DoRA
magnitudes = peft's initial row norms perturbed, AdaLoRA pruned by a rank_pattern). "Our" model is the base
model with every adapted weight replaced by the weight hydralib computes; peft's is the base model with the
adapter loaded by ``PeftModel.from_pretrained``. Their logits must agree to 1e-5.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from hydralib.adapters import load_adapters
from hydralib.bench.adapter_types import tiny_llama, write_adalora_adapter, write_dora_adapter
from hydralib.errors import AdapterError
from hydralib.merge import hydraopt, hydraopt_dora, merge_adapters, merge_dora
from hydralib.merge.dora import dora_base_weights
from hydralib.peft_io import dora_weight

IDS = torch.tensor([[1, 5, 9, 2, 33, 7, 60, 11]])
ZERO = "model.layers.1.self_attn.k_proj"  # the AdaLoRA module whose mask keeps nothing


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def _with_weights(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of a fresh base model whose modules carry ``weights`` ``{module: (d_out, d_in)}``."""
    model = tiny_llama()
    with torch.no_grad():
        for name, W in weights.items():
            model.get_submodule(name).weight.copy_(W)
    return _logits(model)


def _peft_logits(directory) -> torch.Tensor:
    from peft import PeftModel

    return _logits(PeftModel.from_pretrained(tiny_llama(), str(directory)).eval())


def _dora_weights(aset, task, base) -> dict[str, torch.Tensor]:
    W0 = dora_base_weights(aset, base)
    return {m: dora_weight(W0[m], aset.delta(task, m), aset.magnitudes[task][m]) for m in aset.modules}


def _lora_weights(aset, task, base, delta=None) -> dict[str, torch.Tensor]:
    state = base.state_dict()
    return {m: state[f"{m}.weight"] + (delta or aset.delta)(task, m) for m in aset.modules}


@pytest.fixture(scope="module")
def base():
    return tiny_llama()


@pytest.fixture(scope="module")
def dora_dirs(tmp_path_factory, base):
    root = tmp_path_factory.mktemp("dora")
    return [write_dora_adapter(root / f"dora-{i}", base, seed=i) for i in range(3)]


@pytest.fixture(scope="module")
def adalora_dirs(tmp_path_factory, base):
    root = tmp_path_factory.mktemp("adalora")
    return [write_adalora_adapter(root / f"ada-{i}", base, seed=i, zero_module=ZERO if i == 0 else None)
            for i in range(3)]


# --------------------------------------------------------------------------- AdaLoRA


def test_adalora_reads_as_lora_of_the_kept_rank_and_matches_peft(adalora_dirs, base):
    aset = load_adapters(adalora_dirs)
    assert aset.kind == "lora" and aset.adapter_type == "adalora"
    assert {aset.rank("ada-1", m) for m in aset.modules} == {3}
    assert aset.rank("ada-0", ZERO) == 1 and float(aset.delta("ada-0", ZERO).abs().max()) == 0.0
    for i, task in enumerate(aset.tasks):
        ours, theirs = _with_weights(_lora_weights(aset, task, base)), _peft_logits(adalora_dirs[i])
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), float((ours - theirs).abs().max())
        assert not torch.allclose(ours, _logits(base), atol=1e-3)  # the adapter does change the model


def test_adalora_exports_as_plain_lora_that_peft_loads(adalora_dirs, tmp_path):
    aset = load_adapters(adalora_dirs)
    out = aset.save_peft("ada-0", tmp_path / "ada-0-lora")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and not config.get("use_dora")
    assert torch.allclose(_peft_logits(out), _peft_logits(adalora_dirs[0]), atol=1e-5, rtol=0)


def test_adalora_merges_and_compresses_like_lora(adalora_dirs):
    from hydralib.compress import compress_adapters

    one = load_adapters(adalora_dirs[1:2])
    ta = merge_adapters(one, "task_arithmetic", progress=False)
    hydra = hydraopt(one, progress=False)
    for m in one.modules:
        assert torch.allclose(ta.delta(m), one.delta("ada-1", m), atol=1e-6)
        assert torch.allclose(hydra.delta("ada-1", m), one.delta("ada-1", m), atol=1e-6)
    small = compress_adapters(load_adapters(adalora_dirs), "quantize", codec="int8")
    assert small.tasks == ["ada-0", "ada-1", "ada-2"]


def test_adalora_mask_disagreeing_with_stored_rank_is_refused(adalora_dirs, tmp_path):
    bad = shutil.copytree(adalora_dirs[1], tmp_path / "bad")
    config = json.loads((bad / "adapter_config.json").read_text())
    key = next(iter(config["rank_pattern"]))
    config["rank_pattern"][key] = [True] * len(config["rank_pattern"][key])
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError) as err:
        load_adapters([bad])
    msg = str(err.value)
    assert "\n" not in msg and "adapter_model.safetensors" in msg
    assert f"module {key.removesuffix('.lora_E')}: 3 triplets stored but its rank_pattern mask keeps 6" in msg


@pytest.mark.parametrize("change, text", [
    ({"init_r": 0}, "init_r must be an integer >= 1, got 0"),
    ({"rank_pattern": {"model.layers.0.self_attn.q_proj.lora_E": [True, 1]}}, "must be a list of true/false"),
    ({"rank_pattern": {"model.layers.0.self_attn.q_proj.lora_E": [True]}}, "has 1 entries, not init_r=6"),
    ({"rank_pattern": {"model.layers.0.self_attn.q_proj": [True] * 6}}, "the key is not '<module>.lora_E'"),
    ({"rank_pattern": {"model.layers.9.q_proj.lora_E": [True] * 6}}, "names module model.layers.9.q_proj that"),
    ({"use_dora": True}, "use_dora=true is not supported for AdaLoRA"),
])
def test_adalora_bad_config_is_refused_in_one_line(adalora_dirs, tmp_path, change, text):
    bad = shutil.copytree(adalora_dirs[1], tmp_path / "bad")
    config = json.loads((bad / "adapter_config.json").read_text())
    config.update(change)
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError) as err:
        load_adapters([bad])
    assert "\n" not in str(err.value) and str(bad) in str(err.value) and text in str(err.value)


def test_adalora_missing_lora_e_is_refused(adalora_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = shutil.copytree(adalora_dirs[1], tmp_path / "bad")
    path = str(bad / "adapter_model.safetensors")
    tensors = load_file(path)
    key = next(k for k in tensors if k.endswith(".lora_E"))
    del tensors[key]
    save_file(tensors, path)
    with pytest.raises(AdapterError, match=r"lora_E is missing"):
        load_adapters([bad])


# --------------------------------------------------------------------------- DoRA


def test_dora_weight_matches_peft_forward(dora_dirs, base):
    aset = load_adapters(dora_dirs)
    assert aset.kind == "lora" and aset.adapter_type == "dora" and set(aset.magnitudes) == set(aset.tasks)
    for i, task in enumerate(aset.tasks):
        ours, theirs = _with_weights(_dora_weights(aset, task, base)), _peft_logits(dora_dirs[i])
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), float((ours - theirs).abs().max())
        # the magnitude matters: the plain LoRA update alone is a different model
        assert not torch.allclose(_with_weights(_lora_weights(aset, task, base)), theirs, atol=1e-3)


def test_dora_round_trip_and_base_model_forms(dora_dirs, base, tmp_path):
    aset = load_adapters(dora_dirs[:1])
    out = aset.save_peft("dora-0", tmp_path / "copy")
    assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True
    assert torch.allclose(_peft_logits(out), _peft_logits(dora_dirs[0]), atol=1e-6, rtol=0)
    base.save_pretrained(tmp_path / "base")
    for form in (base, tmp_path / "base", str(tmp_path / "base"), base.state_dict()):
        W0 = dora_base_weights(aset, form)
        assert all(torch.equal(W0[m], base.get_submodule(m).weight) for m in aset.modules)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_linear"])
def test_merging_one_dora_adapter_returns_it(dora_dirs, base, method):
    one = load_adapters(dora_dirs[:1])
    kw = {"density": 1.0} if method != "task_arithmetic" else {}
    merged = merge_dora(one, method, base_model=base, progress=False, **kw)
    assert merged.loss < 1e-10
    for m in one.modules:
        assert torch.allclose(merged.magnitudes[m], one.magnitudes["dora-0"][m])
    hydra = hydraopt_dora(one, base_model=base, progress=False)
    assert max(hydra.losses.values()) < 1e-10


def test_dora_hydraopt_magnitude_fits(dora_dirs, base):
    aset = load_adapters(dora_dirs)
    result = hydraopt_dora(aset, base_model=base, rank=2, progress=False)
    assert result.magnitude == "lstsq" and result.loss == result.losses["lstsq"]
    # refit (W_i's row norms) is |m_i|: the same as kept for positive magnitudes
    assert all(float(m.min()) > 0 for mods in aset.magnitudes.values() for m in mods.values())
    assert abs(result.losses["refit"] - result.losses["kept"]) < 1e-6 * result.losses["kept"]
    # least squares is optimal row by row, so never worse
    assert result.losses["lstsq"] < result.losses["kept"]
    assert 0 < result.losses["lstsq"] < 1
    # the loss is measured, not assumed: recompute it from the exported adapters' weights
    W0 = dora_base_weights(aset, base)
    recon = result.to_adapter_set()
    num = sum(float((dora_weight(W0[m], recon.delta(t, m), recon.magnitudes[t][m])
                     - dora_weight(W0[m], aset.delta(t, m), aset.magnitudes[t][m])).square().sum())
              for t in aset.tasks for m in aset.modules)
    assert abs(num / result.energy - result.loss) < 1e-4
    assert result.storage == result.hydra.storage + len(aset.tasks) * sum(aset.shape(m)[0] for m in aset.modules)


def test_dora_hydraopt_side_b_and_fewer_heads(dora_dirs, base):
    aset = load_adapters(dora_dirs)
    full = hydraopt_dora(aset, base_model=base, rank=2, progress=False)
    for options in ({"side": "B"}, {"heads": 2}):
        result = hydraopt_dora(aset, base_model=base, rank=2, magnitude="kept", progress=False, **options)
        assert result.loss == result.losses["kept"] >= result.losses["lstsq"]
        assert result.to_adapter_set().adapter_type == "dora"
    assert hydraopt_dora(aset, base_model=base, rank=2, heads=2, progress=False).loss > full.loss  # fewer heads lose more
    with pytest.raises(ValueError, match="magnitude must be one of"):
        hydraopt_dora(aset, base_model=base, magnitude="mean")


def test_dora_exports_load_in_peft_with_the_same_logits(dora_dirs, base, tmp_path):
    aset = load_adapters(dora_dirs)
    result = hydraopt_dora(aset, base_model=base, rank=2, progress=False)
    dirs = result.export_peft(tmp_path / "hydra")
    recon = result.to_adapter_set()
    for task, directory in dirs.items():
        assert json.loads((directory / "adapter_config.json").read_text())["use_dora"] is True
        ours = _with_weights(_dora_weights(recon, task, base))
        assert torch.allclose(ours, _peft_logits(directory), atol=1e-5, rtol=0)
    merged = merge_dora(aset, "ties", base_model=base, density=0.5, lam=1.0, progress=False)
    out = merged.save_peft(tmp_path / "ties")
    one = merged.to_adapter_set()
    assert torch.allclose(_with_weights(_dora_weights(one, one.tasks[0], base)), _peft_logits(out), atol=1e-5, rtol=0)


def test_dora_refusals_are_one_line(dora_dirs, lora_dirs, base, tmp_path):
    aset = load_adapters(dora_dirs)
    cases = [
        (lambda: merge_dora(aset, "ties"), "merge_dora: a DoRA merge needs base_model="),
        (lambda: hydraopt_dora(aset), "hydraopt_dora: a DoRA merge needs base_model="),
        (lambda: merge_adapters(aset, progress=False), "merge_adapters: DoRA adapters: use hydralib.merge.merge_dora"),
        (lambda: hydraopt(aset, progress=False), "hydraopt: DoRA adapters: use hydralib.merge.hydraopt_dora"),
        (lambda: hydraopt_dora(load_adapters(lora_dirs), base_model=base), "expects an AdapterSet of DoRA adapters"),
        (lambda: load_adapters([dora_dirs[0], lora_dirs[0]]), "a lora adapter cannot join a set of dora adapters"),
        (lambda: hydraopt_dora(aset, base_model=tmp_path), "no *.safetensors weights of a base model"),
        (lambda: hydraopt_dora(aset, base_model={}), "base_model: no weight for module model.layers.0.self_attn"),
    ]
    for call, text in cases:
        with pytest.raises(AdapterError) as err:
            call()
        assert "\n" not in str(err.value) and text in str(err.value), str(err.value)


def test_dora_bad_magnitudes_are_refused(dora_dirs, tmp_path):
    from safetensors.torch import load_file, save_file

    def broken(fn):
        bad = shutil.copytree(dora_dirs[0], tmp_path / f"bad{len(list(tmp_path.iterdir()))}")
        path = str(bad / "adapter_model.safetensors")
        tensors = load_file(path)
        fn(tensors, next(k for k in sorted(tensors) if k.endswith("lora_magnitude_vector")))
        save_file(tensors, path)
        with pytest.raises(AdapterError) as err:
            load_adapters([bad])
        assert "\n" not in str(err.value) and str(bad / "adapter_model.safetensors") in str(err.value)
        return str(err.value)

    assert "lora_magnitude_vector is missing (use_dora=true)" in broken(lambda t, k: t.pop(k))
    assert "lora_magnitude_vector (15,) is not (d_out,) = (16,)" in broken(lambda t, k: t.__setitem__(k, t[k][:-1]))
    assert "lora_magnitude_vector has NaN/Inf values" in broken(lambda t, k: t[k].__setitem__(0, float("nan")))
    assert "no '<module>.lora_magnitude_vector' tensors are stored" in broken(
        lambda t, k: [t.pop(x) for x in [x for x in t if x.endswith("lora_magnitude_vector")]])


@pytest.mark.parametrize("method,knobs", [("quantize", {"codec": "int8"}), ("truncate", {"rank": 1}),
                                          ("compeft", {"density": 0.5}), ("jd", {"c": 4})])
def test_dora_compresses_its_directions_and_keeps_its_magnitudes(dora_dirs, base, tmp_path, method, knobs):
    """Every per-adapter family compresses the direction updates; the magnitudes ride along in fp16, survive the
    file, and the decoded set runs as DoRA (peft's forward of its export is the oracle)."""
    from hydralib.compress import compress_adapters, load_compressed, relative_loss

    aset = load_adapters(dora_dirs)
    cset = compress_adapters(aset, method, **knobs)
    assert cset.is_dora and cset.codecs["magnitude"] == "fp16"
    back = load_compressed(cset.save(tmp_path / "c"))
    assert back.is_dora
    for t in aset.tasks:
        for m in aset.modules:
            kept = aset.magnitudes[t][m]
            assert torch.equal(back.task_magnitude(t, m), kept.half().float())  # fp16, as the adapter files hold it
    plain = compress_adapters(hydralib_directions(aset), method, **knobs)
    assert relative_loss(cset, aset) == pytest.approx(relative_loss(plain, hydralib_directions(aset)))
    magnitude_bytes = 2 * len(aset.tasks) * sum(aset.shape(m)[0] for m in aset.modules)  # N x d_out fp16 per module
    assert back.payload_bytes() == plain.payload_bytes() + magnitude_bytes
    assert back.nbytes() >= plain.nbytes() + magnitude_bytes  # the file: payload plus a header that names them
    decoded = back.to_adapter_set()
    assert decoded.adapter_type == "dora"
    task = aset.tasks[1]
    out = decoded.save_peft(task, tmp_path / "export")
    assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True
    assert torch.allclose(_with_weights(_dora_weights(decoded, task, base)), _peft_logits(out), atol=1e-5, rtol=0)


def hydralib_directions(aset):
    from hydralib.merge.dora import directions

    return directions(aset)


def test_dora_merged_magnitude_is_stored_once(dora_dirs, base):
    """A merge served to every task stores one magnitude row per module, read by every task."""
    from hydralib.compress import from_merged, with_magnitudes

    aset = load_adapters(dora_dirs)
    merged = merge_dora(aset, "task_arithmetic", base_model=base, progress=False)
    cset = with_magnitudes(from_merged(merged.merged.to_adapter_set("merged"), aset.tasks, "ta"),
                           {t: merged.magnitudes for t in aset.tasks})
    m = aset.modules[0]
    assert cset.factors[m]["magnitude"].shape == (1, aset.shape(m)[0])
    assert all(torch.equal(cset.task_magnitude(t, m), merged.magnitudes[m].half().float()) for t in aset.tasks)


# --------------------------------------------------------------------------- command line


def test_cli_info_names_the_adapter_type(dora_dirs, adalora_dirs, capsys):
    from hydralib.cli import main

    assert main(["info", *map(str, dora_dirs)]) == 0
    out = capsys.readouterr().out
    assert "3 DORA adapters" in out and "direction update s B A" in out
    assert main(["info", "--json", *map(str, adalora_dirs)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["adapter_type"] == "adalora" and summary["tasks"][1]["ranks"] == [3]


def test_cli_merge_dora_needs_base_model(dora_dirs, tmp_path, capsys):
    from hydralib.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["merge", *map(str, dora_dirs), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "DoRA adapters: pass --base-model DIR" in capsys.readouterr().err


def test_cli_merge_dora_hydraopt_and_ties(dora_dirs, base, tmp_path, capsys):
    from hydralib.cli import main

    base.save_pretrained(tmp_path / "base")
    out = tmp_path / "hydra"
    argv = ["merge", *map(str, dora_dirs), "--rank", "2", "--base-model", str(tmp_path / "base"), "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    api = hydraopt_dora(load_adapters(dora_dirs), base_model=base, rank=2, progress=False)
    assert f"lstsq {api.losses['lstsq']:.4g}" in text and "magnitudes lstsq" in text
    for task in api.tasks:
        recon = api.to_adapter_set([task])
        ours = _with_weights(_dora_weights(recon, task, base))
        assert torch.allclose(ours, _peft_logits(out / task), atol=1e-5, rtol=0)
    ties = tmp_path / "ties"
    argv = ["merge", *map(str, dora_dirs), "--method", "ties", "--density", "0.5", "--base-model",
            str(tmp_path / "base"), "--out", str(ties)]
    assert main(argv) == 0
    merged = merge_dora(load_adapters(dora_dirs), "ties", base_model=base, density=0.5, progress=False)
    assert f"{merged.loss:.4g}" in capsys.readouterr().out
    assert json.loads((ties / "adapter_config.json").read_text())["use_dora"] is True


def test_cli_merge_dora_quantize_writes_one_file_and_dora_exports(dora_dirs, base, tmp_path, capsys):
    from hydralib.cli import main
    from hydralib.compress import load_compressed

    base.save_pretrained(tmp_path / "base")
    common = ["merge", *map(str, dora_dirs), "--rank", "2", "--base-model", str(tmp_path / "base")]
    assert main([*common, "--quantize", "int8", "--out", str(tmp_path / "q"), "--export-peft", str(tmp_path / "e")]) == 0
    assert "magnitudes fp16" in capsys.readouterr().out
    cset = load_compressed(tmp_path / "q")
    assert cset.is_dora and cset.codecs["shared"] == "int8"
    decoded = cset.to_adapter_set()
    for task in decoded.tasks:
        assert json.loads((tmp_path / "e" / task / "adapter_config.json").read_text())["use_dora"] is True
        ours = _with_weights(_dora_weights(decoded, task, base))
        assert torch.allclose(ours, _peft_logits(tmp_path / "e" / task), atol=1e-5, rtol=0)
    with pytest.raises(SystemExit) as exc:
        main([*common, "--out", str(tmp_path / "x"), "--export-peft", str(tmp_path / "y")])
    assert exc.value.code == 2 and "it goes with --quantize" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_adalora_merges_and_compresses_like_lora(adalora_dirs, dora_dirs, base, tmp_path, capsys):
    from hydralib.cli import EXIT_BAD_INPUT, main

    out = tmp_path / "ta"
    assert main(["merge", *map(str, adalora_dirs[1:2]), "--method", "task_arithmetic", "--out", str(out)]) == 0
    assert torch.allclose(_peft_logits(out), _peft_logits(adalora_dirs[1]), atol=1e-5, rtol=0)
    assert main(["compress", *map(str, adalora_dirs), "--method", "truncate", "--rank", "2",
                 "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert main(["compress", *map(str, dora_dirs), "--method", "quantize", "--codec", "int4",
                 "--out", str(tmp_path / "d"), "--export-peft", str(tmp_path / "d-peft")]) == 0
    assert "of the DoRA direction updates (magnitudes kept in fp16)" in capsys.readouterr().out
    for d in dora_dirs:
        exported = tmp_path / "d-peft" / d.name
        assert json.loads((exported / "adapter_config.json").read_text())["use_dora"] is True
        assert torch.allclose(_peft_logits(exported), _peft_logits(d), atol=0.05)  # int4 directions: close
        assert not torch.equal(_peft_logits(exported), _peft_logits(d))


def test_dora_on_fan_in_fan_out_layers_matches_peft(tmp_path):
    """DoRA on GPT-2's Conv1D layers (weights stored (d_in, d_out), fan_in_fan_out=True): hydralib's weight, applied
    at evaluation, and its HydraOpt export all give peft's own forward."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from conftest import tiny_gpt2
    from hydralib.runtime import applied

    ids = torch.tensor([[1, 5, 9, 2, 33, 7]])
    dirs = []
    for i in range(2):
        base = tiny_gpt2()
        base.name_or_path = "tiny-gpt2"
        config = LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True,
                            use_dora=True, lora_dropout=0.0)
        model = get_peft_model(base, config)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.requires_grad:
                    p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g)) if "magnitude" in name else \
                        p.copy_(0.1 * torch.randn(p.shape, generator=g))
        model.save_pretrained(str(tmp_path / f"t{i}"))
        dirs.append(tmp_path / f"t{i}")
    aset = load_adapters(dirs)
    assert aset.adapter_type == "dora" and all(aset.module_info(m).fan_in_fan_out for m in aset.modules)

    def peft_logits(directory):
        with torch.no_grad():
            return PeftModel.from_pretrained(tiny_gpt2(), str(directory)).eval()(ids).logits

    ours = tiny_gpt2()
    for task, directory in zip(aset.tasks, dirs):
        with torch.no_grad(), applied(ours, aset, task):
            got = ours(ids).logits
        assert torch.allclose(got, peft_logits(directory), atol=1e-5, rtol=0)
    result = hydraopt_dora(aset, base_model=tiny_gpt2(), heads="task", rank=2, progress=False)
    exported = result.export_peft(tmp_path / "hydra")
    recon = result.to_adapter_set()
    for task, directory in exported.items():
        assert json.loads((directory / "adapter_config.json").read_text())["fan_in_fan_out"] is True
        with torch.no_grad(), applied(ours, recon, task):
            got = ours(ids).logits
        assert torch.allclose(got, peft_logits(directory), atol=1e-5, rtol=0)
