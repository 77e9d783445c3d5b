"""The methods the benchmark times, registered by name (the method list is data).

Each :class:`BenchMethod` says what it computes, in which space it works, and
what it produces:

========================  =========  ==============================================================
name                      space      what
========================  =========  ==============================================================
``hydraopt-exact``        factors    HydraOpt, closed form (Eckart-Young), K = N heads, rank r' = r
``hydraopt-exact-k1``     factors    the same with one head: one merged adapter of rank r
``hydraopt-adam``         factors    HydraOpt by Adam until within 1 % of the exact loss (paper's way)
``ta-factored``           factors    our task arithmetic (mean dW), truncated SVD on the factors
``ta-dense``              dW         our task arithmetic on dense dW + full SVD (the dense baseline)
``ties-dense``            dW         our TIES (peft ``merge_utils.ties``) on dense dW + SVD
``peft-svd``              dW         peft ``add_weighted_adapter(combination_type="svd")``
``peft-ties_svd``         dW         peft ``add_weighted_adapter(combination_type="ties_svd")``
``peft-dare_ties_svd``    dW         peft ``add_weighted_adapter(combination_type="dare_ties_svd")``
``peft-cat``              factors    peft ``add_weighted_adapter(combination_type="cat")`` (rank N r)
========================  =========  ==============================================================

Weights: linear merges (task arithmetic, ``svd``, ``cat``) use w_i = 1/N, so
they produce the mean update; TIES-style merges use w_i = 1 (their disjoint
mean already averages), ``density`` (default 0.5) entries kept. These are not
tuned: the benchmark measures time and memory, and reports each output's
reconstruction loss ``sum_i ||dW_i - update_i||_F^2`` (the HydraOpt objective,
computed on the factors) only to show what each method buys.

Example
-------
>>> sorted(METHODS)[:3]
['hydraopt-adam', 'hydraopt-exact', 'hydraopt-exact-k1']
>>> METHODS["peft-svd"].needs, METHODS["hydraopt-exact"].space
('peft', 'factors')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["BenchContext", "BenchMethod", "METHODS", "DEFAULT_METHODS", "one_adapter_loss", "check_methods"]


@dataclass
class BenchContext:
    """What a method needs: the adapters (and, for peft's paths, the peft model) and the settings."""

    aset: Any
    rank: int
    device: str = "cpu"
    density: float = 0.5
    seed: int = 0
    target_ratio: float = 0.01
    adam_max_steps: int = 3000
    peft_model: Any = None
    counter: int = 0
    cache: dict = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return list(self.aset.tasks)


@dataclass(frozen=True)
class BenchMethod:
    """One timed method.

    ``run(ctx)`` does the work and returns its output (the timer wraps it);
    ``timed(output)`` may return the seconds to report instead of the wall time
    (Adam: its steps only, not the exact solve that sets its target);
    ``evaluate(ctx, output)`` (not timed) returns JSON-ready numbers (loss,
    storage, steps); ``cleanup(ctx, output)`` frees what a repeat left behind.
    """

    name: str
    family: str
    space: str
    output: str
    needs: str  # "adapters" or "peft"
    description: str
    run: Callable[[BenchContext], Any]
    evaluate: Callable[[BenchContext, Any], dict]
    timed: Callable[[Any], float | None] = lambda output: None
    cleanup: Callable[[BenchContext, Any], None] = lambda ctx, output: None


# ----------------------------------------------------------------------------- quality (not timed)


def one_adapter_loss(aset, merged: dict[str, tuple[torch.Tensor, torch.Tensor, float]], device: str = "cpu") -> dict:
    """``sum_i ||dW_i - dW_merged||_F^2`` over modules when every task runs one merged adapter; on the factors.

    ``merged`` maps module -> ``(lora_a (r_m, d_in), lora_b (d_out, r_m), scaling)``.
    Computed in float64 on ``device``. Returns ``loss``, ``energy``
    (``sum_i ||dW_i||^2``) and ``loss_rel = loss / energy``.
    """
    from ..merge.hydraopt import objective
    from ..merge.lowrank import delta_norms_sq

    n = len(aset.tasks)
    loss, energy = 0.0, 0.0
    for module in aset.modules:
        As, Bs, ss = zip(*(aset.factors(t, module) for t in aset.tasks))
        A_m, B_m, s_m = merged[module]
        A_m = A_m.detach().to(device, torch.float64)
        B_m = (float(s_m) * B_m.detach()).to(device, torch.float64)
        As64 = [A.to(device, torch.float64) for A in As]
        Bs64 = [B.to(device, torch.float64) for B in Bs]
        loss += objective(A_m, B_m[None], As64, Bs64, ss, torch.ones(n, dtype=torch.float64), [0] * n)
        energy += float(delta_norms_sq(As64, Bs64, ss).sum())
    return {"loss": loss, "energy": energy, "loss_rel": loss / energy if energy else None}


def _hydra_eval(ctx: BenchContext, result) -> dict:
    out = {"loss": result.total_loss, "floor": result.total_floor, "energy": result.total_energy,
           "loss_rel": result.total_loss / result.total_energy, "storage": result.storage, "heads": result.n_heads,
           "rank_out": result.rank, "module_loss": {m: r.loss for m, r in result.modules.items()},
           "module_floor": {m: r.floor for m, r in result.modules.items()}}
    if result.solver == "adam":
        steps = [int(r.steps or 0) for r in result.modules.values()]
        ratio = ctx.target_ratio
        within = [r.loss <= r.floor * (1 + ratio) * (1 + 1e-9) for r in result.modules.values()]
        out.update(steps_total=sum(steps), steps_max=max(steps), steps_mean=sum(steps) / len(steps),
                   module_steps={m: int(r.steps or 0) for m, r in result.modules.items()},
                   target_ratio=ratio, modules_within_target=sum(within), modules=len(within),
                   reached_target=all(within),
                   adam_seconds=sum(r.seconds for r in result.modules.values()),
                   init_loss=sum(r.history[0] for r in result.modules.values() if r.history))
    return out


def _merged_eval(ctx: BenchContext, merged: dict) -> dict:
    out = one_adapter_loss(ctx.aset, merged, ctx.device)
    out["storage"] = int(sum(A.numel() + B.numel() for A, B, _ in merged.values()))
    out["rank_out"] = max(int(A.shape[0]) for A, _, _ in merged.values())
    return out


# ----------------------------------------------------------------------------- our methods


def _hydraopt(heads, solver):
    def run(ctx: BenchContext):
        from ..merge import hydraopt

        options = {}
        if solver == "adam":
            options = {"target_ratio": ctx.target_ratio, "max_steps": ctx.adam_max_steps, "seed": ctx.seed}
        return hydraopt(ctx.aset, heads=heads, rank=ctx.rank, solver=solver, device=ctx.device, progress=False, **options)

    return run


def _ours(method, factored):
    def run(ctx: BenchContext):
        from ..merge import merge_adapters

        n = len(ctx.tasks)
        if method == "task_arithmetic":
            return merge_adapters(ctx.aset, method, lam=1.0 / n, rank=ctx.rank, factored=factored,
                                  device=ctx.device, progress=False)
        return merge_adapters(ctx.aset, method, density=ctx.density, lam=1.0, rank=ctx.rank, seed=ctx.seed,
                              factored=factored, device=ctx.device, progress=False)

    return run


def _ours_eval(ctx: BenchContext, merged) -> dict:
    return _merged_eval(ctx, {m: merged.factors(m) for m in merged.modules})


# ----------------------------------------------------------------------------- peft's paths


def _peft(combination_type):
    def run(ctx: BenchContext):
        from ..merge.baselines import seeded_rng

        model = ctx.peft_model
        ctx.counter += 1
        name = f"merged_{combination_type}_{ctx.counter}"
        n = len(ctx.tasks)
        linear = combination_type in ("svd", "cat")
        kwargs = {"combination_type": combination_type}
        if combination_type != "cat":
            kwargs["svd_rank"] = ctx.rank
        if not linear:
            kwargs["density"] = ctx.density
        weights = [1.0 / n] * n if linear else [1.0] * n
        with torch.no_grad(), seeded_rng(ctx.seed, ctx.device):  # DARE draws from the global RNG
            model.add_weighted_adapter(ctx.tasks, weights, name, **kwargs)
        return name

    return run


def _peft_eval(ctx: BenchContext, name: str) -> dict:
    from .peft_model import merged_factors

    return _merged_eval(ctx, merged_factors(ctx.peft_model, name))


def _peft_cleanup(ctx: BenchContext, name: str) -> None:
    ctx.peft_model.delete_adapter(name)


def _adam_seconds(result) -> float:
    return float(sum(r.seconds for r in result.modules.values()))


METHODS: dict[str, BenchMethod] = {}


def _register(method: BenchMethod) -> None:
    METHODS[method.name] = method


_register(BenchMethod(
    "hydraopt-exact", "hydraopt", "factors", "shared A' + N heads, rank r", "adapters",
    "HydraOpt closed form: top-r eigenvectors of the stacked deltas' Gram (Eckart-Young), by block Krylov steps on the factors, K = N",
    _hydraopt("task", "exact"), _hydra_eval))
_register(BenchMethod(
    "hydraopt-exact-k1", "hydraopt", "factors", "one adapter, rank r", "adapters",
    "HydraOpt closed form with one head: the best rank-r single adapter (what peft's svd merge computes)",
    _hydraopt(1, "exact"), _hydra_eval))
_register(BenchMethod(
    "hydraopt-adam", "hydraopt", "factors", "shared A' + N heads, rank r", "adapters",
    "HydraOpt by Adam (the paper's solver), stopped within 1% of the exact loss; time = Adam steps only",
    _hydraopt("task", "adam"), _hydra_eval, timed=_adam_seconds))
_register(BenchMethod(
    "ta-factored", "ours", "factors", "one adapter, rank r", "adapters",
    "task arithmetic (mean dW), rank-r truncated SVD computed on the factors",
    _ours("task_arithmetic", True), _ours_eval))
_register(BenchMethod(
    "ta-dense", "ours", "dW", "one adapter, rank r", "adapters",
    "task arithmetic on dense dW_i (peft merge_utils), then a full SVD: the dense baseline",
    _ours("task_arithmetic", False), _ours_eval))
_register(BenchMethod(
    "ties-dense", "ours", "dW", "one adapter, rank r", "adapters",
    "TIES on dense dW_i (peft merge_utils.ties, density 0.5), then a full SVD",
    _ours("ties", False), _ours_eval))
for _ct, _space, _out in (("svd", "dW", "one adapter, rank r"), ("ties_svd", "dW", "one adapter, rank r"),
                          ("dare_ties_svd", "dW", "one adapter, rank r"), ("cat", "factors", "one adapter, rank N r")):
    _register(BenchMethod(
        f"peft-{_ct}", "peft", _space, _out, "peft",
        f"peft add_weighted_adapter(combination_type={_ct!r}) on a peft model holding the N adapters",
        _peft(_ct), _peft_eval, cleanup=_peft_cleanup))

DEFAULT_METHODS = list(METHODS)


def check_methods(names) -> list[str]:
    """Validate method names (``"all"`` = every method, in registry order); return them in the order given, without duplicates."""
    names = list(names or ["all"])
    if "all" in names:
        return list(DEFAULT_METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        from ..errors import HydraError

        raise HydraError(f"unknown benchmark methods {unknown}; choose from {sorted(METHODS)} or 'all'")
    return list(dict.fromkeys(names))
