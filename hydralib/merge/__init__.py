"""Merging LoRA adapters: dW-space baselines and HydraOpt, computed on the factors.

* :mod:`.lowrank` - factored linear algebra (row-space basis, Gram forms,
  truncated SVD of a sum of LoRAs) and dense references for tests;
* :mod:`.baselines` - task arithmetic, TIES, DARE, DARE-TIES, magnitude
  pruning on dW via ``peft.utils.merge_utils``, seeded, stored by truncated SVD;
* :mod:`.hydraopt` - shared A' (or B') with K heads, a package: groupings
  (:mod:`~.hydraopt.groups`), weightings, the exact (:mod:`~.hydraopt.exact`)
  and Adam (:mod:`~.hydraopt.adam`) solvers, results, bundles and the PEFT
  export (:mod:`~.hydraopt.result`);
* :mod:`.vera` - VeRA: TA/TIES/DARE on the trainable vectors, a dW reference,
  the vector-average gap, and the HydraOpt analogue (shared lambda_d or
  lambda_b, ALS and Adam solvers);
* :mod:`.vera_solvers` - VeRA HydraOpt at one module: Gram-form objective,
  floor, and the ALS / Adam solvers (:data:`VERA_SOLVERS`);
* :mod:`.dora` - DoRA: HydraOpt and the baselines on the direction updates,
  with per-task (kept / refit / least-squares) or averaged magnitudes,
  judged on the adapted weights (needs ``base_model=``);
* :mod:`.bundle` - save / load / export to PEFT (the old import path of
  :mod:`.hydraopt.result`).

Synthetic adapters for examples and tests are in :mod:`hydralib.synthetic`.

Methods are data: :data:`MERGE_METHODS` (baselines) and :data:`SOLVERS`
(HydraOpt) map a name to the function and its paper.

Example
-------
>>> from hydralib.merge import hydraopt, merge_adapters
>>> from hydralib.synthetic import random_lora_factors
>>> factors = random_lora_factors(4, {"layers.0.q_proj": (16, 12)}, rank=2, seed=0, shared_a=0.8)
>>> hydra = hydraopt(factors, heads=2, rank=2, progress=False)
>>> ties = merge_adapters(factors, "ties", density=0.5, lam=0.5, rank=2, progress=False)
>>> hydra.total_loss <= hydra.total_energy, ties.rank
(True, 2)
"""

from .baselines import MERGE_METHODS, MergedLoRA, MergeMethod, merge_adapters, merge_deltas, seeded_rng
from .hydraopt import (
    SOLVERS,
    WEIGHTINGS,
    Grouping,
    HydraOptResult,
    ModuleResult,
    ModuleSolution,
    bundle_storage,
    export_peft,
    group_by_clustering,
    group_by_metadata,
    group_by_task,
    group_explicit,
    hydraopt,
    load_bundle,
    objective,
    resolve_groups,
    save_bundle,
    solve_adam,
    solve_exact,
    task_similarity,
    task_weights,
    transpose_factors,
)
from .dora import MAGNITUDE_FITS, DoraHydraResult, MergedDoRA, hydraopt_dora, merge_dora
from .lowrank import (
    LowRankSVD,
    StackedGram,
    delta_inner_products,
    lowrank_svd,
    row_space_basis,
    stacked_gram,
    truncated_svd_dense,
)
from .vera import (
    VERA_SOLVERS,
    MergedVeRA,
    VectorAverageGap,
    VeraHydraResult,
    VeraModuleResult,
    merge_vera_dense,
    merge_vera_vectors,
    vector_average_gap,
    vera_hydraopt,
)

__all__ = [
    "MERGE_METHODS", "MergedLoRA", "MergeMethod", "merge_adapters", "merge_deltas", "seeded_rng",
    "bundle_storage", "export_peft", "load_bundle", "save_bundle",
    "SOLVERS", "WEIGHTINGS", "Grouping", "HydraOptResult", "ModuleResult", "ModuleSolution",
    "group_by_clustering", "group_by_metadata", "group_by_task", "group_explicit", "hydraopt", "objective",
    "resolve_groups", "solve_adam", "solve_exact", "task_similarity", "task_weights", "transpose_factors",
    "LowRankSVD", "StackedGram", "delta_inner_products", "lowrank_svd", "row_space_basis", "stacked_gram",
    "truncated_svd_dense",
    "MAGNITUDE_FITS", "DoraHydraResult", "MergedDoRA", "hydraopt_dora", "merge_dora",
    "VERA_SOLVERS", "MergedVeRA", "VectorAverageGap", "VeraHydraResult", "VeraModuleResult", "merge_vera_dense",
    "merge_vera_vectors", "vector_average_gap", "vera_hydraopt",
]
