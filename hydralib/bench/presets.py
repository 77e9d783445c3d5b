"""Shapes of the synthetic adapter sets the benchmark merges.

A preset fixes the decoder the adapters would belong to (layers, hidden size,
key/value width), the LoRA rank and the number of tasks; the attention
projections q, k, v, o are adapted. ``q_proj`` and ``o_proj`` are
``d_model x d_model``, ``k_proj`` and ``v_proj`` are ``d_kv x d_model``. A
preset with an MLP width ``d_ff`` (``llama-3.1-8b``) adapts the MLP too:
``gate_proj`` and ``up_proj`` ``d_ff x d_model``, ``down_proj`` ``d_model x d_ff``.

Example
-------
>>> p = bench_preset("llama-3.2-1b")
>>> p.n_layers, p.d_model, p.d_kv, p.rank, p.n_tasks
(16, 2048, 512, 32, 40)
>>> len(p.modules()), p.modules()["model.layers.0.self_attn.k_proj"]
(64, (512, 2048))
>>> bench_preset("smollm2", n_tasks=5, rank=4).adapter_params
460800
>>> big = bench_preset("llama-3.1-8b")
>>> len(big.modules()), big.modules()["model.layers.31.mlp.down_proj"], big.rank, big.n_tasks
(224, (4096, 14336), 16, 40)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..synthetic import attention_modules

__all__ = ["BenchPreset", "BENCH_PRESETS", "bench_preset"]


@dataclass(frozen=True)
class BenchPreset:
    """Shapes of one benchmark adapter set: N tasks, LoRA rank r on q/k/v/o of an ``n_layers`` decoder."""

    name: str
    n_layers: int
    d_model: int
    d_kv: int
    rank: int
    n_tasks: int
    model: str = ""
    d_ff: int = 0  # > 0: gate_proj, up_proj, down_proj are adapted too

    def modules(self) -> dict[str, tuple[int, int]]:
        """``{module: (d_out, d_in)}`` in the naming of transformers' Llama (``model.layers.{i}.self_attn.q_proj``,
        ``model.layers.{i}.mlp.gate_proj``), layer by layer."""
        attention = attention_modules(self.n_layers, self.d_model, self.d_kv)
        if not self.d_ff:
            return attention
        out = {}
        for layer in range(self.n_layers):
            out.update({m: s for m, s in attention.items() if m.startswith(f"model.layers.{layer}.")})
            for name, shape in (("gate_proj", (self.d_ff, self.d_model)), ("up_proj", (self.d_ff, self.d_model)),
                                ("down_proj", (self.d_model, self.d_ff))):
                out[f"model.layers.{layer}.mlp.{name}"] = shape
        return out

    @property
    def adapter_params(self) -> int:
        """Numbers in one task's adapter: ``r (d_in + d_out)`` summed over modules."""
        return sum(self.rank * (d_out + d_in) for d_out, d_in in self.modules().values())

    def as_dict(self) -> dict:
        return {
            "name": self.name, "model": self.model, "n_layers": self.n_layers, "d_model": self.d_model,
            "d_kv": self.d_kv, "rank": self.rank, "n_tasks": self.n_tasks,
            "targets": ["q_proj", "k_proj", "v_proj", "o_proj"] + (["gate_proj", "up_proj", "down_proj"] if self.d_ff else []),
            **({"d_ff": self.d_ff} if self.d_ff else {}),
            "modules": len(self.modules()), "adapter_params": self.adapter_params,
        }


BENCH_PRESETS: dict[str, BenchPreset] = {
    "smollm2": BenchPreset("smollm2", n_layers=30, d_model=576, d_kv=192, rank=8, n_tasks=40,
                           model="SmolLM2-135M-Instruct shapes"),
    "llama-3.2-1b": BenchPreset("llama-3.2-1b", n_layers=16, d_model=2048, d_kv=512, rank=32, n_tasks=40,
                                model="Llama-3.2-1B-Instruct shapes (the paper's setting)"),
    "llama-3.1-8b": BenchPreset("llama-3.1-8b", n_layers=32, d_model=4096, d_kv=1024, rank=16, n_tasks=40,
                                model="Llama-3.1-8B shapes, attention and MLP adapted (out of core)", d_ff=14336),
}


def bench_preset(
    name: str,
    *,
    n_tasks: int | None = None,
    rank: int | None = None,
    d_model: int | None = None,
    d_kv: int | None = None,
    n_layers: int | None = None,
) -> BenchPreset:
    """The preset ``name`` with any of N, r, d_model, d_kv, layers overridden.

    Overriding ``d_model`` alone keeps the preset's ratio ``d_model / d_kv``.
    """
    if name not in BENCH_PRESETS:
        raise ValueError(f"unknown benchmark preset {name!r}; choose from {sorted(BENCH_PRESETS)}")
    p = BENCH_PRESETS[name]
    if d_model is not None and d_kv is None:
        d_kv = max(1, int(d_model) * p.d_kv // p.d_model)
    changes = {k: int(v) for k, v in dict(n_tasks=n_tasks, rank=rank, d_model=d_model, d_kv=d_kv, n_layers=n_layers).items()
               if v is not None}
    for key, value in changes.items():
        if value < 1:
            raise ValueError(f"benchmark preset {name}: {key} must be >= 1, got {value}")
    return replace(p, **changes)
