"""One file for N adapters kept in fewer bytes: stored factors, their codecs, and how tasks read them.

A :class:`CompressedAdapters` holds, per module, a few float *factors* in one of
three layouts, each factor stored with a codec (:mod:`.codecs`):

* ``"per_task"``: ``lora_A`` ``(E, r, d_in)`` and ``lora_B`` ``(E, d_out, r)``, one
  slice per stored entry (the scaling is folded into lora_B); task t reads entry
  ``mapping[t]`` (an own adapter, or one merged adapter for every task).
* ``"shared"``: HydraOpt. Side A: ``shared`` = A' ``(r', d_in)``, ``heads`` = B'_k
  ``(K, d_out, r')``; side B: ``shared`` = B' ``(d_out, r')``, ``heads`` = A'_k
  ``(K, r', d_in)``. Task t reads head ``mapping[t]``.
* ``"jd"``: Compress then Serve. ``U`` ``(d_out, c)``, ``V`` ``(d_in, c)`` and
  ``sigma`` ``(N, c, c)`` (or ``(N, c)``, diagonal); task t's update is
  ``U sigma_t V^T``.

Every task's update is then ``lora_b @ lora_a`` (scaling 1). A set of DoRA
adapters also holds, per module, a factor ``magnitude`` ``(M, d_out)`` in fp16
(:func:`with_magnitudes`): one row per task (``M = N``, row ``tasks.index(t)``),
or one row that every task reads (``M = 1``, a merge); its tasks then run peft's
DoRA weight ``m * (W0 + B A) / ||W0 + B A||_row`` with the stored factors as the
direction update (:meth:`CompressedAdapters.to_adapter_set` gives a DoRA set). :meth:`save` writes
one safetensors file (tensors + one JSON metadata string); :meth:`nbytes` is that
file's size. :func:`load_compressed` reads it back (safetensors only, never a pickle).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from ..errors import AdapterError
from .codecs import decode, encode, encoded_bytes, parse_codec

FORMAT = "hydralib-compressed"
VERSION = 1
TENSORS_NAME = "compressed.safetensors"

# the axis each factor is quantized along (the long one: a row of lora_a, a column of lora_b, a column of U, V)
AXES = {"lora_A": -1, "lora_B": -2, "shared_A": -1, "heads_A": -2, "shared_B": -2, "heads_B": -1,
        "U": 0, "V": 0, "sigma": -1, "magnitude": -1, "magnitude_A": -1, "magnitude_B": -1}
MAGNITUDE = "magnitude"


def _axis_key(layout: str, name: str, side: str) -> str:
    return f"{name}_{side}" if layout == "shared" else name


@dataclass
class CompressedAdapters:
    """N adapters in one of the layouts of the module docstring, with a codec per factor.

    ``factors[module][name]``: float tensors as decoded (what serving uses);
    ``codecs[name]``: codec of each factor name (same for every module);
    ``mapping``: task -> entry (per_task) or head (shared); ``entries``: names of the slices.
    ``shapes[module] = (d_out, d_in)``.
    """

    method: str
    layout: str
    tasks: list[str]
    entries: list[str]
    mapping: dict[str, str]
    factors: dict[str, dict[str, torch.Tensor]]
    codecs: dict[str, str]
    shapes: dict[str, tuple[int, int]]
    side: str = "A"
    base_model: str | None = None
    info: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, method: str, layout: str, tasks, entries, mapping, factors, codecs, shapes, side="A",
              base_model=None, info=None) -> "CompressedAdapters":
        """A set whose ``factors`` are replaced by what their codecs decode to (what the file will hold)."""
        out = cls(method, layout, list(tasks), list(entries), dict(mapping), {}, dict(codecs),
                  {m: tuple(s) for m, s in shapes.items()}, side, base_model, dict(info or {}))
        for module, named in factors.items():
            out.factors[module] = {}
            for name, x in named.items():
                axis = AXES[_axis_key(layout, name, side)]
                codec = out.codecs.get(name, "fp16")
                try:
                    stored = encode(x, codec, axis)
                except ValueError as exc:
                    raise ValueError(f"module {module}: {name}: {exc}") from None
                out.factors[module][name] = decode(stored, codec, tuple(x.shape), axis)
        return out

    # ------------------------------------------------------------------ serving

    def task_factors(self, task: str, module: str) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(A (r, d_in), B (d_out, r), 1.0)`` of ``task`` at ``module``: its update is ``B @ A``."""
        f = self.factors[module]
        if self.layout == "per_task":
            i = self.entries.index(self.mapping[task])
            return f["lora_A"][i], f["lora_B"][i], 1.0
        if self.layout == "shared":
            k = self.entries.index(self.mapping[task])
            if self.side == "A":
                return f["shared"], f["heads"][k], 1.0
            return f["heads"][k], f["shared"], 1.0
        if self.layout == "jd":
            sigma = f["sigma"][self.tasks.index(task)]
            sigma = torch.diag(sigma) if sigma.ndim == 1 else sigma
            return sigma @ f["V"].T, f["U"], 1.0
        raise ValueError(f"unknown layout {self.layout!r}")

    @property
    def is_dora(self) -> bool:
        """Whether the set holds DoRA magnitude vectors (:func:`with_magnitudes`)."""
        return any(MAGNITUDE in named for named in self.factors.values())

    def task_magnitude(self, task: str, module: str) -> torch.Tensor | None:
        """The DoRA magnitude ``m (d_out,)`` of ``task`` at ``module``; None for a plain LoRA set."""
        m = self.factors[module].get(MAGNITUDE)
        if m is None:
            return None
        return m[0] if m.shape[0] == 1 else m[self.tasks.index(task)]

    def to_adapter_set(self):
        """An :class:`~hydralib.adapters.AdapterSet` with one adapter per task (the decoded factors, scaling 1):
        LoRA, or DoRA (the factors as the direction update, with the magnitudes) when the set holds magnitudes."""
        from ..adapters import AdapterSet

        factors = {t: {m: tuple(x.contiguous() if torch.is_tensor(x) else x for x in self.task_factors(t, m))
                       for m in self.factors} for t in self.tasks}
        plain = AdapterSet.from_factors(factors, base_model=self.base_model,
                                        fan_in_fan_out=self.info.get("fan_in_fan_out") is True)
        if not self.is_dora:
            return plain
        magnitudes = {t: {m: self.task_magnitude(t, m).contiguous() for m in self.factors} for t in self.tasks}
        return AdapterSet("lora", plain.tasks, {m: plain.module_info(m) for m in plain.modules}, lora=factors,
                          base_model=self.base_model, metadata=plain.metadata, magnitudes=magnitudes,
                          adapter_type="dora")

    # ------------------------------------------------------------------ files

    def _meta(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "method": self.method, "layout": self.layout,
                "side": self.side, "tasks": self.tasks, "entries": self.entries, "mapping": self.mapping,
                "codecs": self.codecs, "base_model": self.base_model,
                "modules": {m: {"d_out": s[0], "d_in": s[1],
                                "factors": {n: list(x.shape) for n, x in self.factors[m].items()}}
                            for m, s in self.shapes.items()},
                "info": self.info}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors the file holds: ``"<module>.<factor>.<part>"`` (parts from :func:`~.codecs.encode`)."""
        out = {}
        for module, named in self.factors.items():
            for name, x in named.items():
                axis = AXES[_axis_key(self.layout, name, self.side)]
                for part, t in encode(x, self.codecs.get(name, "fp16"), axis).items():
                    out[f"{module}.{name}.{part}"] = t.contiguous()
        return out

    def payload_bytes(self) -> int:
        """Bytes of the stored tensors by the codecs' formula (:func:`~.codecs.encoded_bytes`), without the header."""
        return sum(encoded_bytes(self.codecs.get(n, "fp16"), tuple(x.shape), AXES[_axis_key(self.layout, n, self.side)])
                   for named in self.factors.values() for n, x in named.items())

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``path`` (a directory holding ``compressed.safetensors``) atomically; returns the file's path."""
        from safetensors.torch import save

        from ..atomic import atomic_dir

        blob = save(self.tensors(), metadata={FORMAT: json.dumps(self._meta(), sort_keys=True)})
        with atomic_dir(path, overwrite=overwrite) as tmp:
            (tmp / TENSORS_NAME).write_bytes(blob)
        return Path(path) / TENSORS_NAME

    def nbytes(self, scratch: str | Path | None = None) -> int:
        """Size in bytes of the file :meth:`save` writes (written to ``scratch`` or a temporary directory)."""
        import tempfile

        with tempfile.TemporaryDirectory(dir=scratch) as tmp:
            return self.save(Path(tmp) / "set").stat().st_size


def load_compressed(path: str | Path) -> CompressedAdapters:
    """Read a set written by :meth:`CompressedAdapters.save` (a directory or its ``compressed.safetensors``)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    file = path / TENSORS_NAME if path.is_dir() else path
    if not file.is_file():
        raise AdapterError(f"{file}: no such file (expected a directory written by `hydralib compress`)")
    try:
        with safe_open(str(file), framework="pt") as f:
            meta_text = (f.metadata() or {}).get(FORMAT)
            if meta_text is None:
                raise AdapterError(f"{file}: not a {FORMAT} file (no '{FORMAT}' metadata)")
            meta = json.loads(meta_text)
            stored = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise AdapterError(f"{file}: cannot be read ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise AdapterError(f"{file}: version {version!r}, this hydralib reads {VERSION}")
    missing = [k for k in ("method", "layout", "side", "tasks", "entries", "mapping", "codecs", "modules") if k not in meta]
    if missing or meta["layout"] not in ("per_task", "shared", "jd"):
        raise AdapterError(f"{file}: metadata lacks {missing[:3]} or has an unknown layout")
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for module, m in meta["modules"].items():
        factors[module] = {}
        for name, shape in m["factors"].items():
            codec = meta["codecs"].get(name, "fp16")
            axis = AXES[_axis_key(meta["layout"], name, meta["side"])]
            prefix = f"{module}.{name}."
            parts = {k[len(prefix):]: v for k, v in stored.items() if k.startswith(prefix)}
            try:
                factors[module][name] = decode(parts, codec, tuple(shape), axis)
            except (KeyError, RuntimeError, ValueError, TypeError) as e:
                raise AdapterError(f"{file}: module {module}: factor {name} cannot be decoded ({e})") from None
    shapes = {m: (v["d_out"], v["d_in"]) for m, v in meta["modules"].items()}
    return CompressedAdapters(meta["method"], meta["layout"], meta["tasks"], meta["entries"], meta["mapping"],
                              factors, meta["codecs"], shapes, meta["side"], meta.get("base_model"), meta.get("info", {}))


def with_magnitudes(cset: CompressedAdapters, magnitudes: Mapping[str, Mapping[str, torch.Tensor]]) -> CompressedAdapters:
    """``cset`` (whose factors store DoRA direction updates) with the magnitudes ``{task: {module: m (d_out,)}}``
    added in fp16: one row per task, or a single row when every task has the very same vector (a merge)."""
    from dataclasses import replace

    out = replace(cset, factors={m: dict(named) for m, named in cset.factors.items()},
                  codecs={**cset.codecs, MAGNITUDE: "fp16"})
    for module in out.factors:
        vectors = [magnitudes[t][module] for t in cset.tasks]
        shared = all(v is vectors[0] for v in vectors)
        stacked = torch.stack([v.float() for v in (vectors[:1] if shared else vectors)])
        try:
            stored = encode(stacked, "fp16")
        except ValueError as exc:
            raise ValueError(f"module {module}: {MAGNITUDE}: {exc}") from None
        out.factors[module][MAGNITUDE] = decode(stored, "fp16", tuple(stacked.shape))
    return out


def adapter_file_bytes(directories) -> int:
    """Bytes of the adapters' own weight files (``adapter_model.safetensors``; the zoo stores them in fp16): the
    denominator of relative storage."""
    from ..peft_io import WEIGHTS_NAME

    return sum((Path(d) / WEIGHTS_NAME).stat().st_size for d in directories)


def stack_per_task(aset, tasks, factors_of) -> tuple[dict, dict]:
    """``(factors, shapes)`` of the per_task layout: ``factors_of(task, module) -> (A, B, s)``, stacked over tasks
    (ranks padded with zeros to the largest at each module, scaling folded into lora_B)."""
    factors, shapes = {}, {}
    for module in aset.modules:
        triples = [factors_of(t, module) for t in tasks]
        r = max(int(A.shape[0]) for A, _, _ in triples)
        d_out, d_in = aset.shape(module)
        As = torch.zeros(len(tasks), r, d_in)
        Bs = torch.zeros(len(tasks), d_out, r)
        for i, (A, B, s) in enumerate(triples):
            As[i, : A.shape[0]] = A.float()
            Bs[i, :, : B.shape[1]] = float(s) * B.float()
        factors[module] = {"lora_A": As, "lora_B": Bs}
        shapes[module] = (d_out, d_in)
    return factors, shapes


def check_mapping(mapping: Mapping[str, str], entries) -> None:
    missing = sorted(set(mapping.values()) - set(entries))
    if missing:
        raise ValueError(f"mapping names entries that are not stored: {missing[:3]}")


def total_numbers(cset: CompressedAdapters) -> int:
    """Numbers of the decoded factors (before their codecs)."""
    return sum(math.prod(x.shape) for named in cset.factors.values() for x in named.values())
