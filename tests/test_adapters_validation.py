"""Bad input: every case gets a clear error naming the file (and the module), and nothing is left half-written."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch

from hydralib import AdapterError, AdapterSet, OutputExistsError, load_adapters
from hydralib.peft_io import CONFIG_NAME, WEIGHTS_NAME

from conftest import LLAMA_TARGETS, save_peft_adapter, tiny_llama
from conftest import edit_config as _edit_config, edit_tensors as _edit_tensors

MODULE = "model.layers.0.self_attn.q_proj"
A_KEY = f"base_model.model.{MODULE}.lora_A.weight"
B_KEY = f"base_model.model.{MODULE}.lora_B.weight"


@pytest.fixture
def good(lora_dirs, tmp_path) -> Path:
    """A private copy of a valid adapter to corrupt."""
    return Path(shutil.copytree(lora_dirs[0], tmp_path / "good"))


def _error(sources, **kwargs) -> str:
    with pytest.raises(AdapterError) as info:
        load_adapters(sources, **kwargs)
    return str(info.value)


def test_missing_directory(tmp_path):
    assert f"{tmp_path / 'nope'}: no such adapter directory" in _error([tmp_path / "nope"])


def test_path_is_a_file(good):
    msg = _error([good / CONFIG_NAME])
    assert str(good / CONFIG_NAME) in msg and "is a file" in msg


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    msg = _error([tmp_path / "empty"])
    assert str(tmp_path / "empty" / CONFIG_NAME) in msg and "missing adapter config" in msg


def test_glob_matching_nothing(tmp_path):
    assert "matches no adapter directory" in _error(str(tmp_path / "zz*"))


def test_missing_weights(good):
    (good / WEIGHTS_NAME).unlink()
    msg = _error([good])
    assert str(good / WEIGHTS_NAME) in msg and "missing adapter weights" in msg


def test_truncated_safetensors(good):
    data = (good / WEIGHTS_NAME).read_bytes()
    (good / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    msg = _error([good])
    assert str(good / WEIGHTS_NAME) in msg and "corrupt or truncated" in msg


def test_garbage_safetensors(good):
    (good / WEIGHTS_NAME).write_bytes(b"\x00\x01 definitely not safetensors" * 10)
    assert "corrupt or truncated safetensors" in _error([good])


def test_non_utf8_config(good):
    (good / CONFIG_NAME).write_bytes(b'{"peft_type": "LORA", "r": 4, "x": "\xff\xfe"}')
    msg = _error([good])
    assert str(good / CONFIG_NAME) in msg and "not valid UTF-8" in msg


def test_invalid_json_config(good):
    (good / CONFIG_NAME).write_text('{"peft_type": "LORA",')
    assert "invalid JSON" in _error([good])


def test_unsupported_peft_type(good):
    _edit_config(good, peft_type="IA3")
    assert "peft_type 'IA3' is not supported" in _error([good])


def test_shapes_disagree_with_config(good):
    _edit_config(good, r=5)
    msg = _error([good])
    assert str(good / WEIGHTS_NAME) in msg and "model.layers.0.self_attn." in msg and "disagree with rank 5" in msg


def test_huge_declared_rank(good):
    _edit_config(good, r=10**9)
    assert "disagree with rank 1000000000" in _error([good])


def test_non_positive_rank(good):
    _edit_config(good, r=0)
    assert f"{good / CONFIG_NAME}: r must be an integer >= 1, got 0" == _error([good])


def _raw_config(directory: Path, field: str, json_value: str) -> None:
    """Set ``field`` of adapter_config.json to raw JSON text (``NaN``, ``Infinity``, ``1e999``...)."""
    import json

    config = json.loads((directory / CONFIG_NAME).read_text())
    config[field] = "@@"
    (directory / CONFIG_NAME).write_text(json.dumps(config).replace('"@@"', json_value))


# field, raw JSON value, the end of the message (after "<file>: ")
BAD_FIELDS = [
    ("lora_alpha", "NaN", "lora_alpha must be a finite number, got NaN"),
    ("lora_alpha", "Infinity", "lora_alpha must be a finite number, got Infinity"),
    ("lora_alpha", "-Infinity", "lora_alpha must be a finite number, got -Infinity"),
    ("lora_alpha", "1e999", "lora_alpha must be a finite number, got Infinity"),
    ("lora_alpha", "1" + "0" * 400, "lora_alpha must be a finite number, got 1000000000000000000000000000000000000..."),
    ("lora_alpha", "true", "lora_alpha must be a finite number, got true"),
    ("lora_alpha", '"8"', 'lora_alpha must be a finite number, got "8"'),
    ("lora_alpha", "null", "lora_alpha must be a finite number, got null"),
    ("lora_alpha", "[8]", "lora_alpha must be a finite number, got [8]"),
    ("r", "true", "r must be an integer >= 1, got true"),
    ("r", "4.0", "r must be an integer >= 1, got 4.0"),
    ("r", "-4", "r must be an integer >= 1, got -4"),
    ("r", "NaN", "r must be an integer >= 1, got NaN"),
    ("r", '{"r": 4}', 'r must be an integer >= 1, got {"r": 4}'),
    ("rank_pattern", '{"q_proj": 0}', 'rank_pattern["q_proj"] must be an integer >= 1, got 0'),
    ("rank_pattern", '{"q_proj": false}', 'rank_pattern["q_proj"] must be an integer >= 1, got false'),
    ("rank_pattern", '{"q_proj": {"x": 4}}', 'rank_pattern["q_proj"] must be an integer >= 1, got {"x": 4}'),
    ("rank_pattern", "[4]", "rank_pattern must be an object {module regex: value}, got [4]"),
    ("rank_pattern", '{"(": 4}', 'rank_pattern["("]: the key is not a valid regular expression'),
    ("alpha_pattern", '{"q_proj": NaN}', 'alpha_pattern["q_proj"] must be a finite number, got NaN'),
    ("alpha_pattern", '{"q_proj": "16"}', 'alpha_pattern["q_proj"] must be a finite number, got "16"'),
    ("use_rslora", '"false"', 'use_rslora must be true or false, got "false"'),
    ("fan_in_fan_out", "1", "fan_in_fan_out must be true or false, got 1"),
    ("base_model_name_or_path", "[1]", "base_model_name_or_path must be a string or null, got [1]"),
]


@pytest.mark.parametrize("field,value,message", BAD_FIELDS, ids=[f"{f}={v[:12]}" for f, v, _ in BAD_FIELDS])
def test_bad_numeric_fields_name_the_file_and_the_field(good, field, value, message):
    _raw_config(good, field, value)
    msg = _error([good])
    assert msg.startswith(f"{good / CONFIG_NAME}: {message}"), msg
    assert "\n" not in msg


@pytest.mark.parametrize("value,scaling", [("0", 0.0), ("-8", -2.0), ("2.5", 0.625)])
def test_alpha_takes_any_finite_value_as_peft_does(good, value, scaling):
    _raw_config(good, "lora_alpha", value)
    assert load_adapters([good]).scaling("good", MODULE) == scaling


def test_pattern_values_apply_per_module(good):
    _raw_config(good, "alpha_pattern", '{"q_proj": 2}')
    aset = load_adapters([good])
    assert aset.scaling("good", MODULE) == 0.5 and aset.scaling("good", MODULE.replace("q_proj", "k_proj")) == 2.0


def test_huge_alpha_makes_the_update_too_large(good):
    _raw_config(good, "lora_alpha", "1e300")
    msg = _error([good])
    assert msg.startswith(f"{good / WEIGHTS_NAME}: module model.layers.0.self_attn.") and "too large" in msg


def test_config_numbers_beyond_json_limits(good):
    (good / CONFIG_NAME).write_text('{"peft_type": "LORA", "r": ' + "9" * 5000 + "}")
    msg = _error([good])
    assert msg.startswith(f"{good / CONFIG_NAME}: invalid JSON (") and "\n" not in msg
    (good / CONFIG_NAME).write_text("[" * 100000 + "]" * 100000)
    assert _error([good]) == f"{good / CONFIG_NAME}: invalid JSON (nested too deeply)"


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int32, torch.bool, torch.complex64])
def test_non_floating_factors_are_refused(good, dtype):
    def to_codes(tensors):
        for key in tensors:
            tensors[key] = (tensors[key] * 100).to(dtype) if dtype != torch.complex64 else tensors[key].to(dtype)

    _edit_tensors(good, to_codes)
    msg = _error([good])
    name = str(dtype).removeprefix("torch.")
    assert msg.startswith(f"{good / WEIGHTS_NAME}: tensor base_model.model.") and f"dtype {name} is not floating" in msg


def test_float8_factors_load(good):
    _edit_tensors(good, lambda t: t.update({k: v.to(torch.float8_e4m3fn) for k, v in t.items()}))
    aset = load_adapters([good])
    assert aset.stored_dtypes["good"] == torch.float8_e4m3fn and aset.dtype == torch.float32


def test_empty_factors_are_refused(good):
    _edit_config(good, r=1)
    _edit_tensors(good, lambda t: t.update({k: v[:1, :0] if "lora_A" in k else v[:0, :1] for k, v in t.items()}))
    assert "are empty" in _error([good])


def test_missing_half_of_a_module(good):
    _edit_tensors(good, lambda t: t.pop(B_KEY))
    msg = _error([good])
    assert f"module {MODULE}: lora_B is missing" in msg


def test_convolution_like_tensor(good):
    _edit_tensors(good, lambda t: t.__setitem__(A_KEY, t[A_KEY][:, :, None]))
    assert f"module {MODULE}" in _error([good]) and "not matrices" in _error([good])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights(good, bad):
    def poison(t):
        t[B_KEY] = t[B_KEY].clone()
        t[B_KEY][0, 0] = bad

    _edit_tensors(good, poison)
    msg = _error([good])
    assert str(good / WEIGHTS_NAME) in msg and f"module {MODULE}: lora_B has 1 NaN/Inf values" in msg


def test_dora_magnitudes_without_use_dora_are_refused(tmp_path):
    from peft import LoraConfig

    directory = save_peft_adapter(tmp_path / "dora", tiny_llama(), LoraConfig(r=4, target_modules=LLAMA_TARGETS,
                                  use_dora=True))
    _edit_config(directory, use_dora=False)  # DoRA directories load (tests/test_adapter_types.py); stray magnitudes do not
    msg = _error([directory])
    assert str(directory / WEIGHTS_NAME) in msg and "a DoRA magnitude vector, but adapter_config.json does not set " \
        "use_dora=true" in msg


@pytest.mark.parametrize(
    "change, text",
    [({"lora_bias": True}, "lora_bias=True is refused"), ({"bias": "all"}, "bias='all' is refused"),
     ({"modules_to_save": ["lm_head"]}, "modules_to_save=['lm_head'] is refused")],
)
def test_other_non_lowrank_options_refused(good, change, text):
    _edit_config(good, **change)
    assert text in _error([good])


def test_unknown_tensor_refused(good):
    _edit_tensors(good, lambda t: t.__setitem__("base_model.model.lm_head.weight", torch.zeros(2, 2)))
    assert "tensor base_model.model.lm_head.weight: not a LoRA weight" in _error([good])


def test_pickle_checkpoints_are_refused_and_never_unpickled(good, tmp_path):
    marker = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (good / WEIGHTS_NAME).unlink()
    (good / "adapter_model.bin").write_bytes(pickle.dumps(Boom()))
    msg = _error([good])
    assert str(good / "adapter_model.bin") in msg and "pickle checkpoints are refused" in msg
    assert not marker.exists()


def test_duplicate_task_names(lora_dirs):
    msg = _error(lora_dirs[:2], tasks=["same", "same"])
    assert "duplicate task name 'same'" in msg and str(lora_dirs[1]) in msg


def test_task_count_mismatch(lora_dirs):
    assert "2 task names for 3 adapter directories" in _error(lora_dirs, tasks=["a", "b"])


def test_different_base_models(lora_dirs, tmp_path):
    other = Path(shutil.copytree(lora_dirs[1], tmp_path / "other"))
    _edit_config(other, base_model_name_or_path="meta-llama/Llama-3.2-1B")
    msg = _error([lora_dirs[0], other])
    assert str(other) in msg and "'meta-llama/Llama-3.2-1B'" in msg and str(lora_dirs[0]) in msg


def test_different_target_modules(lora_dirs, tmp_path):
    from peft import LoraConfig

    other = save_peft_adapter(tmp_path / "qv", tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    msg = _error([lora_dirs[0], other])
    assert "target modules differ" in msg and "missing" in msg and "k_proj" in msg


def test_same_modules_different_shapes(lora_dirs, tmp_path):
    from peft import LoraConfig

    wide = save_peft_adapter(tmp_path / "wide", tiny_llama(hidden=64), LoraConfig(r=4, target_modules=LLAMA_TARGETS))
    msg = _error([lora_dirs[0], wide])
    assert str(wide) in msg and "disagrees with" in msg and "module model.layers.0.self_attn." in msg


def test_mixing_lora_and_vera(lora_dirs, tmp_path):
    from peft import VeraConfig

    vera = save_peft_adapter(tmp_path / "vera", tiny_llama(), VeraConfig(r=8, target_modules=LLAMA_TARGETS))
    assert "a vera adapter cannot join a set of lora adapters" in _error([lora_dirs[0], vera])


def test_vera_different_prng_keys(tmp_path):
    from peft import VeraConfig

    base = tiny_llama()
    a = save_peft_adapter(tmp_path / "a", base, VeraConfig(r=8, target_modules=LLAMA_TARGETS, projection_prng_key=0))
    b = save_peft_adapter(tmp_path / "b", base, VeraConfig(r=8, target_modules=LLAMA_TARGETS, projection_prng_key=1))
    assert "projection_prng_key=1 differs from 0" in _error([a, b])


@pytest.fixture(scope="module")
def vera_dir(tmp_path_factory):
    from peft import VeraConfig

    root = tmp_path_factory.mktemp("vera")
    return save_peft_adapter(root / "vera", tiny_llama(), VeraConfig(r=8, target_modules=LLAMA_TARGETS,
                                                                     projection_prng_key=3))


BAD_VERA_FIELDS = [
    ("r", "0", "r must be an integer >= 1, got 0"),
    ("r", "8.0", "r must be an integer >= 1, got 8.0"),
    ("r", "true", "r must be an integer >= 1, got true"),
    ("r", "Infinity", "r must be an integer >= 1, got Infinity"),
    ("projection_prng_key", "-1", "projection_prng_key must be an integer in [0, 2**64), got -1"),
    ("projection_prng_key", str(2**64), f"projection_prng_key must be an integer in [0, 2**64), got {2**64}"),
    ("projection_prng_key", "3.0", "projection_prng_key must be an integer in [0, 2**64), got 3.0"),
    ("projection_prng_key", "NaN", "projection_prng_key must be an integer in [0, 2**64), got NaN"),
    ("projection_prng_key", "false", "projection_prng_key must be an integer in [0, 2**64), got false"),
    ("projection_prng_key", "null", "projection_prng_key must be an integer in [0, 2**64), got null"),
    ("save_projection", '"yes"', 'save_projection must be true or false, got "yes"'),
]


@pytest.mark.parametrize("field,value,message", BAD_VERA_FIELDS, ids=[f"{f}={v}" for f, v, _ in BAD_VERA_FIELDS])
def test_bad_vera_fields_name_the_file_and_the_field(vera_dir, tmp_path, field, value, message):
    bad = Path(shutil.copytree(vera_dir, tmp_path / "bad"))
    _raw_config(bad, field, value)
    assert _error([bad]) == f"{bad / CONFIG_NAME}: {message}"


def test_vera_largest_prng_key_loads(vera_dir, tmp_path):
    d = Path(shutil.copytree(vera_dir, tmp_path / "d"))
    _raw_config(d, "projection_prng_key", str(2**64 - 1))
    assert load_adapters([d]).kind == "vera"


def test_vera_without_projections_needs_shapes(tmp_path):
    from peft import VeraConfig

    d = save_peft_adapter(tmp_path / "bare", tiny_llama(),
                          VeraConfig(r=8, target_modules=LLAMA_TARGETS, save_projection=False))
    assert "pass base_model= or module_shapes=" in _error([d])


def test_from_factors_validation():
    good = (torch.randn(2, 5), torch.randn(3, 2), 1.0)
    with pytest.raises(AdapterError, match="module m: A .* are not"):
        AdapterSet.from_factors({"t": {"m": (torch.randn(2, 5), torch.randn(3, 4), 1.0)}})
    with pytest.raises(AdapterError, match="task u: module m: shape 3x6 disagrees"):
        AdapterSet.from_factors({"t": {"m": good}, "u": {"m": (torch.randn(2, 6), torch.randn(3, 2), 1.0)}})
    with pytest.raises(AdapterError, match="task u: modules differ"):
        AdapterSet.from_factors({"t": {"m": good}, "u": {"n": good}})
    with pytest.raises(AdapterError, match="NaN/Inf"):
        AdapterSet.from_factors({"t": {"m": (torch.full((2, 5), float("nan")), torch.randn(3, 2), 1.0)}})
    for scaling in (float("nan"), float("inf"), True, "2", None):
        with pytest.raises(AdapterError, match="task t: module m: scaling .* is not a finite number"):
            AdapterSet.from_factors({"t": {"m": (torch.randn(2, 5), torch.randn(3, 2), scaling)}})
    with pytest.raises(AdapterError, match="task t: module m: A has dtype int8; factors must be floating point"):
        AdapterSet.from_factors({"t": {"m": (torch.ones(2, 5, dtype=torch.int8), torch.randn(3, 2), 1.0)}})
    assert AdapterSet.from_factors({"t": {"m": (torch.randn(2, 5), torch.randn(3, 2), torch.tensor(0.5))}}).scaling("t", "m") == 0.5


def test_save_refuses_to_overwrite_and_keeps_existing(lora_dirs, tmp_path):
    aset = load_adapters(lora_dirs)
    out = aset.save_peft("grammar-en", tmp_path / "out")
    before = (out / WEIGHTS_NAME).read_bytes()
    with pytest.raises(OutputExistsError, match="already exists; pass overwrite=True"):
        aset.save_peft("reply-en", out)
    assert (out / WEIGHTS_NAME).read_bytes() == before
    aset.save_peft("reply-en", out, overwrite=True)
    assert (out / WEIGHTS_NAME).read_bytes() != before
    assert load_adapters([out]).factors("out", MODULE)[0].shape == (4, 32)


def test_failed_write_leaves_nothing_behind(lora_dirs, tmp_path, monkeypatch):
    import safetensors.torch

    aset = load_adapters(lora_dirs)
    out = aset.save_peft("grammar-en", tmp_path / "out")
    before = sorted(p.name for p in tmp_path.iterdir())
    original = (out / WEIGHTS_NAME).read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        aset.save_peft("reply-en", out, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        aset.save_peft("reply-en", tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp dirs, no partial output
    assert (out / WEIGHTS_NAME).read_bytes() == original


def test_outputs_have_ordinary_permissions(lora_dirs, tmp_path):
    import os
    import stat

    from hydralib.atomic import atomic_file

    aset = load_adapters(lora_dirs[:1])
    out = aset.save_peft(aset.tasks[0], tmp_path / "perm")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask
    with atomic_file(tmp_path / "f.json") as tmp:
        tmp.write_text("{}")
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o666 & ~mask
