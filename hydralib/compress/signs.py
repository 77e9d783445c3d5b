"""ComPEFT (Yadav et al. 2023, arXiv:2311.13171): each factor kept as its top-k signs and one scale.

Per task and module, each of lora_a ``(r, d_in)`` and lora_b ``(d_out, r)``
(scaling folded into lora_b) keeps its ``ceil(density * numel)`` entries of
largest magnitude as signs, with one fp16 scale per tensor (the mean magnitude
of the kept entries, the least-squares scale; the paper tunes ``alpha * std``
on validation instead). Positions are a bitmask. Storage per tensor:
``numel / 8 + k / 8 + 2`` bytes. Works on the factors.
"""

from __future__ import annotations


def compeft(aset, density: float = 0.1, tasks=None):
    """Every adapter of ``aset`` sparsified to signs at ``density`` (a per_task :class:`~.container.CompressedAdapters`)."""
    from .quantization import quantize

    if not 0 < density <= 1:
        raise ValueError(f"compeft: density must be in (0, 1], got {density}")
    text = f"{density:.6f}".rstrip("0").rstrip(".") if density < 1 else "1"
    if float(text) != density:
        raise ValueError(f"compeft: density {density} has more than 6 decimals")
    out = quantize(aset, f"compeft:{text}", tasks)
    out.method = f"compeft-{text}"
    return out
