"""Measure the A/B asymmetry of LoRA adapters: spectra, cross-task similarity, structure.

Everything works on the factors of an adapter set (A_i ``(r, d_in)``,
B_i ``(d_out, r)``, s_i; ``dW_i = s_i B_i A_i``) in factored form, module by
module, and returns tidy numpy results keyed by module, which
:func:`~hydralib.analysis.core.aggregate` averages by layer depth or projection
type.

* :mod:`~hydralib.analysis.spectra`: singular values of A_i, B_i, dW_i and of
  the stacked factors; energy curves, effective rank, shared directions.
* :mod:`~hydralib.analysis.similarity`: task x task cosine, subspace overlap,
  principal angles and CKA, with chance levels.
* :mod:`~hydralib.analysis.structure`: application vs language groups,
  clustering, the initialisation control and :func:`summarise_asymmetry`.
Adapter sets with known structure for examples and tests: :mod:`hydralib.synthetic`.

Example
-------
>>> from hydralib.analysis import adapter_similarity, summarise_asymmetry
>>> from hydralib.synthetic import attention_modules, task_grid, synthetic_adapters
>>> _, meta = task_grid(["qa", "reply"], ["en", "fr"], seeds=(0, 1))
>>> aset = synthetic_adapters(attention_modules(2, 32, 16), meta, rank=4)
>>> sim = adapter_similarity(aset)
>>> sim.offdiagonal_means("overlap_a", by="projection")["q_proj"] > 0
True
>>> summary = summarise_asymmetry(aset, similarity=sim)
>>> sorted(summary["verdict"])
['cka', 'cosine', 'overlap']
"""

from .core import (
    FactorStack,
    ModuleKey,
    aggregate,
    as_adapter_set,
    combine_adapter_sets,
    offdiagonal_mean,
    parse_module_name,
    to_jsonable,
)
from .similarity import (
    SimilarityResult,
    adapter_similarity,
    chance_corrected,
    cosine_matrix,
    delta_cka,
    delta_cosine,
    delta_inner,
    factor_cosine,
    module_similarity,
    principal_angles,
    principal_angles_matrix,
    subspace_overlap,
)
from .spectra import (
    ModuleSpectra,
    SpectraResult,
    adapter_spectra,
    captured_energy,
    delta_singular_values,
    effective_rank,
    energy_curve,
    factor_singular_values,
    module_spectra,
    shared_directions,
    stacked_singular_values,
)
from .structure import (
    TaskClustering,
    adapter_init_distance,
    adapter_seed_control,
    analyse_adapters,
    adjusted_rand_index,
    cluster_agreement,
    cluster_tasks,
    group_similarity,
    init_distance,
    pair_categories,
    peft_initial_lora_a,
    seed_control,
    summarise_asymmetry,
)

__all__ = [
    "FactorStack", "ModuleKey", "aggregate", "as_adapter_set", "combine_adapter_sets", "offdiagonal_mean",
    "parse_module_name", "to_jsonable",
    "SimilarityResult", "adapter_similarity", "chance_corrected", "cosine_matrix", "delta_cka", "delta_cosine",
    "delta_inner", "factor_cosine", "module_similarity", "principal_angles", "principal_angles_matrix",
    "subspace_overlap",
    "ModuleSpectra", "SpectraResult", "adapter_spectra", "captured_energy", "delta_singular_values",
    "effective_rank", "energy_curve", "factor_singular_values", "module_spectra", "shared_directions",
    "stacked_singular_values",
    "TaskClustering", "adapter_init_distance", "adapter_seed_control", "analyse_adapters", "adjusted_rand_index", "cluster_agreement", "cluster_tasks",
    "group_similarity", "init_distance", "pair_categories", "peft_initial_lora_a", "seed_control",
    "summarise_asymmetry",
]
