"""Hostile adapter directories (hypothesis): mutated ``adapter_config.json`` fields and safetensors headers.

Every case must end in success or in a :class:`~hydralib.errors.HydraError` whose message is one line and names
the mutated adapter's directory, never in another exception. Each case goes through the loader
(:func:`hydralib.load_adapters`) and through ``hydralib info``, ``hydralib merge --export-peft`` and ``hydralib
compress --export-peft`` (in this process): exit 0 with every output complete, or exit 1 with one stderr line and
no output at all (nor a temporary sibling). ``analyze`` reads adapters through the same loader; it is in the
fixed matrix of ``tests/test_cli_bad_input.py``.

``pytest -s tests/test_properties_hostile.py`` prints how many cases ran and every distinct error message (the
directory shown as ``<dir>``; a second list with the numbers shown as ``#``).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import struct
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hydralib import AdapterSet, load_adapters
from hydralib.errors import HydraError
from hydralib.peft_io import CONFIG_NAME, WEIGHTS_NAME

# derandomized: the same 120 cases on every run (CI must not depend on the draw); found cases are @examples
SETTINGS = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MODULES = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]

# what the cases produced, printed at the end of the module (pytest -s)
SEEN: dict[str, Counter] = defaultdict(Counter)
MESSAGES: dict[str, Counter] = defaultdict(Counter)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two valid LoRA adapters (r=2, alpha=4) over two modules: the one to mutate and a good partner."""
    root = tmp_path_factory.mktemp("hostile")
    g = torch.Generator().manual_seed(0)
    factors = {t: {m: (torch.randn(2, 6, generator=g), torch.randn(5, 2, generator=g), 2.0) for m in MODULES}
               for t in ("good", "other")}
    aset = AdapterSet.from_factors(factors, base_model="toy/base")
    paths = [aset.save_peft(t, root / t) for t in aset.tasks]
    yield paths
    for kind in ("config", "header"):
        if SEEN[kind]:
            _report(kind)


def _report(kind: str) -> None:
    seen, messages = SEEN[kind], MESSAGES[kind]
    print(f"\n{kind} mutations: {seen['ok'] + seen['error']} cases: {seen['ok']} loaded, {seen['error']} refused; "
          f"{len(messages)} distinct messages; {seen['compress refused: overflow']} loaded but too large for a "
          "float16 compress")
    for message, n in sorted(messages.items()):
        print(f"  {n:4d}  {message}")
    shapes = Counter()
    for message, n in messages.items():
        shapes[re.sub(r"-?\d+(\.\d+)?(e[+-]?\d+)?", "#", message)] += n
    print(f"{kind}: {len(shapes)} distinct messages with numbers shown as #")
    for message, n in sorted(shapes.items()):
        print(f"  {n:4d}  {message}")


# ----------------------------------------------------------------------------- values and mutations

numbers = st.one_of(
    st.integers(-2**70, 2**70),
    st.sampled_from([0, 1, 2, 3, -1, -2, 10**9, 2**63, 2**64, 10**400, -10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 2.0, 4.0, 0.5, -0.0, 1e308, 1e-320]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8),
                    st.sampled_from(["2", "4", "NaN", "q_proj", "(", "[", ".*", "LORA", "VERA", "none"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)
patterns = st.dictionaries(st.sampled_from(["q_proj", "v_proj", "self_attn.q_proj", ".*", "", "(", "q_proj|v_proj"]),
                           values, max_size=2)
FIELDS = ["r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora", "fan_in_fan_out", "use_dora",
          "lora_bias", "bias", "modules_to_save", "peft_type", "base_model_name_or_path", "target_modules",
          "init_lora_weights", "layers_to_transform", "projection_prng_key", "save_projection", "task_type"]


NUMERIC = ["r", "lora_alpha", "rank_pattern", "alpha_pattern"]


@st.composite
def config_mutations(draw):
    """A list of (operation, field, value): set a field, delete it, or nest its value one level deeper.

    Half the mutations hit the numeric fields, mostly with numbers (NaN, Inf, negative, huge, bool, float r)."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        numeric = draw(st.booleans())
        field = draw(st.sampled_from(NUMERIC) if numeric else
                     st.one_of(st.sampled_from(FIELDS), st.text(min_size=1, max_size=6)))
        op = draw(st.sampled_from(["set"] * 5 + ["delete", "nest-object", "nest-array"]))
        if field in ("rank_pattern", "alpha_pattern"):
            value = draw(st.one_of(patterns, st.dictionaries(st.sampled_from(["q_proj", "v_proj", ".*"]), numbers,
                                                             min_size=1, max_size=2), values))
        elif numeric:
            value = draw(st.one_of(numbers, scalars, values))
        else:
            value = draw(values)
        out.append((op, field, value))
    return out


def apply_config(directory: Path, mutations) -> None:
    config = json.loads((directory / CONFIG_NAME).read_text())
    for op, field, value in mutations:
        if op == "set":
            config[field] = value
        elif op == "delete":
            config.pop(field, None)
        elif op == "nest-object":
            config[field] = {"value": config.get(field, value)}
        else:
            config[field] = [config.get(field, value)]
    (directory / CONFIG_NAME).write_text(json.dumps(config, allow_nan=True))  # NaN / Infinity as Python writes them


DTYPES = ["F16", "BF16", "F32", "F64", "I8", "U8", "I16", "I32", "I64", "U64", "BOOL", "F8_E4M3", "F8_E5M2", "C64",
          "F4", "XYZ", "", 3, None]
ITEMSIZE = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1, "I16": 2, "I32": 4, "I64": 8, "U64": 8,
            "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8}
small_ints = st.one_of(st.integers(-3, 40), st.sampled_from([0, 2**31, 2**63 - 1, 2**64, 10**30]))


@st.composite
def header_mutations(draw):
    """Mutations of the safetensors header (and its 8-byte length), applied in order."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["dtype", "retype", "retype", "retype", "shape", "offsets", "drop", "rename",
                                     "extra", "metadata", "length", "data", "data", "entry"]))
        tensor = draw(st.integers(0, 3))
        if kind == "dtype":
            out.append((kind, tensor, draw(st.sampled_from(DTYPES))))
        elif kind == "retype":  # another dtype with the shape adjusted so the byte count still matches
            out.append((kind, tensor, draw(st.sampled_from([d for d in ITEMSIZE]))))
        elif kind == "shape":
            out.append((kind, tensor, draw(st.one_of(st.lists(small_ints, max_size=4), values))))
        elif kind == "offsets":
            out.append((kind, tensor, draw(st.one_of(st.lists(small_ints.map(lambda x: x * 4), min_size=2,
                                                              max_size=2),
                                                     st.lists(small_ints, max_size=3), values))))
        elif kind == "rename":
            out.append((kind, tensor, draw(st.sampled_from(["lora_A", "lora_B", "lora_C", "vera_lambda_b",
                                                            "lora_magnitude_vector", "lora_embedding_A"]))))
        elif kind == "length":
            out.append((kind, tensor, draw(st.sampled_from([-8, -1, 1, 7, 10**6, 2**63]))))
        elif kind == "data":
            out.append((kind, tensor, draw(st.sampled_from(["truncate", "extend", "nan", "huge"]))))
        else:
            out.append((kind, tensor, draw(values)))
    return out


def read_raw(path: Path) -> tuple[dict, bytes]:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def apply_header(directory: Path, mutations) -> None:
    """Rewrite ``adapter_model.safetensors`` as raw bytes: 8-byte little-endian header length, header, data."""
    path = directory / WEIGHTS_NAME
    header, data = read_raw(path)
    length_delta = 0
    for kind, index, value in mutations:
        keys = sorted(k for k in header if k != "__metadata__")
        key = keys[index % len(keys)] if keys else None
        entry = header.get(key) if key else None
        if kind == "dtype" and isinstance(entry, dict):
            entry["dtype"] = value
        elif kind == "retype" and isinstance(entry, dict) and entry.get("dtype") in ITEMSIZE \
                and isinstance(entry.get("shape"), list) and entry["shape"]:
            old, new = ITEMSIZE[entry["dtype"]], ITEMSIZE[value]
            last = entry["shape"][-1]
            if isinstance(last, int) and (last * old) % new == 0:
                entry["shape"][-1] = last * old // new
                entry["dtype"] = value
        elif kind == "shape" and isinstance(entry, dict):
            entry["shape"] = value
        elif kind == "offsets" and isinstance(entry, dict):
            entry["data_offsets"] = value
        elif kind == "drop" and key:
            del header[key]
        elif kind == "rename" and key:
            header[re.sub(r"lora_[AB]", value, key)] = header.pop(key)
        elif kind == "extra":
            header[f"base_model.model.extra.{index}.lora_A.weight"] = value
        elif kind == "metadata":
            header["__metadata__"] = value
        elif kind == "entry" and key:
            header[key] = value
        elif kind == "length":
            length_delta = value
        elif kind == "data":
            if value == "truncate":
                data = data[: len(data) // 2]
            elif value == "extend":
                data = data + b"\x00" * 64
            elif isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list) \
                    and len(entry["data_offsets"]) == 2 and entry.get("dtype") == "F32":
                begin = entry["data_offsets"][0]
                if isinstance(begin, int) and 0 <= begin <= len(data) - 4:
                    word = struct.pack("<f", float("nan") if value == "nan" else 3e38)
                    data = data[:begin] + word + data[begin + 4:]
    text = json.dumps(header, allow_nan=True).encode()
    length = max(0, min(2**64 - 1, len(text) + length_delta))
    path.write_bytes(struct.pack("<Q", length) + text + data)


# ----------------------------------------------------------------------------- the check


def _one_line(message: str, bad: Path) -> None:
    assert message and "\n" not in message.rstrip("\n"), message
    assert str(bad) in message, message
    assert "Traceback" not in message


def check_case(kind: str, good: Path, other: Path, mutate) -> None:
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        bad = Path(shutil.copytree(good, root / "bad"))
        mutate(bad)
        # the loader: success or a HydraError of one line naming the directory
        try:
            load_adapters([bad, other])
        except HydraError as exc:
            _one_line(str(exc), bad)
            SEEN[kind]["error"] += 1
            MESSAGES[kind][str(exc).replace(str(bad), "<dir>").replace(str(other), "<other>")] += 1
            loaded = False
        else:
            SEEN[kind]["ok"] += 1
            loaded = True
        # the command line: info, and merge and compress with their exports, never a partial output
        work = root / "work"
        work.mkdir()
        for command in ("info", "merge", "compress"):
            code, err = _cli(command, bad, other, work)
            if loaded and command == "compress" and code == 1 and "overflow float16" in err:
                # a valid but huge update (lora_alpha 23938) whose truncated factors float16 cannot hold:
                # refused by the codec, naming the module, before anything is written
                assert err.count("\n") == 1 and "module model.layers.0" in err, err
                assert sorted(p.name for p in work.iterdir()) == ["bundle", "merged-peft"]
                SEEN[kind]["compress refused: overflow"] += 1
            elif loaded:
                assert code == 0, err
                _check_outputs(command, work)
            else:
                assert code == 1, err
                assert err.count("\n") == 1 and err.startswith(f"hydralib {command}: error: "), err
                _one_line(err, bad)
                assert list(work.iterdir()) == []


def _cli(command: str, bad: Path, other: Path, work: Path) -> tuple[int, str]:
    from hydralib.cli import main

    argv = {"info": ["info"],
            "merge": ["merge", "--out", str(work / "bundle"), "--export-peft", str(work / "merged-peft")],
            "compress": ["compress", "--method", "truncate", "--rank", "1", "--out", str(work / "compressed"),
                         "--export-peft", str(work / "compressed-peft")]}[command]
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main([argv[0], str(bad), str(other), *argv[1:]])
    return code, err.getvalue()


def _check_outputs(command: str, work: Path) -> None:
    """The outputs of a successful ``command`` are complete (and nothing else is there)."""
    if command == "info":
        assert list(work.iterdir()) == []
        return
    if command == "merge":
        from hydralib.merge import load_bundle

        assert sorted(load_bundle(work / "bundle").tasks) == ["bad", "other"]
    else:
        from hydralib.compress import load_compressed

        load_compressed(work / "compressed")
    export = work / f"{'merged' if command == 'merge' else 'compressed'}-peft"
    assert sorted(p.name for p in export.iterdir()) == ["bad", "other"]
    load_adapters([export / "bad", export / "other"])
    want = {"merge": ["bundle", "merged-peft"], "compress": ["bundle", "compressed", "compressed-peft", "merged-peft"]}
    assert sorted(p.name for p in work.iterdir()) == want[command]


@SETTINGS
@given(mutations=config_mutations())
@example(mutations=[("set", "lora_alpha", 23938)])  # found by a random run: fp16 cannot hold the truncated B
def test_hostile_configs_fail_cleanly_or_load(pair, mutations):
    good, other = pair
    check_case("config", good, other, lambda d: apply_config(d, mutations))


@SETTINGS
@given(mutations=header_mutations())
def test_hostile_safetensors_headers_fail_cleanly_or_load(pair, mutations):
    good, other = pair
    check_case("header", good, other, lambda d: apply_header(d, mutations))


def test_the_unmutated_pair_merges(pair):
    good, other = pair
    check_case("unmutated", good, other, lambda d: None)
    assert SEEN["unmutated"] == {"ok": 1}
