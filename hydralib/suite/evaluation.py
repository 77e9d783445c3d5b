"""Exact-match evaluation by one teacher-forced forward pass per batch.

An answer is exactly right when, feeding the prompt and the gold answer, the
model's argmax at every answer position is the next gold token, up to and
including the end-of-sequence token. This equals greedy decoding's exact
match (greedy decoding reproduces the gold answer token by token exactly when
every argmax given the gold prefix is the gold token), at the cost of one
forward pass instead of one per generated token. ``tests/test_suite_evaluation.py``
checks the equivalence against ``model.generate``.

Any adapter set, merged or not, is evaluated through :func:`evaluate` with a
task -> adapter mapping (per-task heads), by applying the adapter's updates to
the weights (:func:`hydralib.runtime.applied`).

Example
-------
>>> scores = evaluate(model, tokenizer, {"smart_reply-fr": splits.test}, adapters=aset)  # doctest: +SKIP
>>> scores["smart_reply-fr"]["exact_match"]                                              # doctest: +SKIP
0.93
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from ..runtime import applied
from .tasks import Example, encode_example

if TYPE_CHECKING:
    from ..adapters import AdapterSet


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, device=None):
    """Right-padded batch from (prompt ids, answer ids) pairs.

    Returns ``input_ids`` (B, T), ``attention_mask`` (B, T), and
    ``target_mask`` (B, T): True at positions whose *next* token is an answer
    token, so ``logits[target_mask]`` are the predictions of the answer tokens,
    in order, and ``targets`` (the answer tokens flattened) matches them.
    """
    lengths = [len(p) + len(a) for p, a in pairs]
    T = max(lengths)
    input_ids = torch.full((len(pairs), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), T), dtype=torch.long)
    target_mask = torch.zeros((len(pairs), T), dtype=torch.bool)
    targets = []
    for row, (prompt, answer) in enumerate(pairs):
        ids = prompt + answer
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        target_mask[row, len(prompt) - 1 : len(ids) - 1] = True
        targets.extend(answer)
    out = (input_ids, attention_mask, target_mask, torch.tensor(targets, dtype=torch.long))
    return tuple(t.to(device) for t in out) if device is not None else out


def compute_context(device, compute_dtype: str | None = None):
    """Autocast context for ``compute_dtype`` (``"bfloat16"``, ``"float16"``), or no-op for None/``"float32"``.

    Matrix products then run in the lower precision while the weights stay
    fp32; on CPUs with AVX512-BF16 a bf16 training step is about 2x faster.
    """
    if compute_dtype in (None, "float32"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, compute_dtype))


def answer_logits(model, input_ids, attention_mask, target_mask) -> torch.Tensor:
    """Logits (n_answer_tokens, vocab) at the answer positions only (the LM head is applied there only)."""
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    if decoder is None or head is None:  # pragma: no cover - architectures without the split
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[target_mask]
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return head(hidden[target_mask])


@torch.no_grad()
def exact_match_ids(model, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 16,
                    progress: bool = False, compute_dtype: str | None = None) -> torch.Tensor:
    """Per-pair exact match (bool tensor) of token-id pairs (prompt ids, answer ids) by teacher forcing.

    ``compute_dtype``: see :func:`compute_context` (None: the weights' precision).
    """
    device = next(model.parameters()).device
    correct = []
    for start in tqdm(range(0, len(pairs), batch_size), disable=not progress, desc="exact match", leave=False):
        batch = pairs[start : start + batch_size]
        input_ids, attention_mask, target_mask, targets = collate(batch, pad_id, device)
        with compute_context(device, compute_dtype):
            logits = answer_logits(model, input_ids, attention_mask, target_mask)
        hits = logits.argmax(-1) == targets
        offset = 0
        for _, answer in batch:
            correct.append(bool(hits[offset : offset + len(answer)].all()))
            offset += len(answer)
    return torch.tensor(correct, dtype=torch.bool)


@torch.no_grad()
def answer_scores_ids(model, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 50,
                      compute_dtype: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair exact match (bool, ``(n,)``) and fraction of answer tokens right (float, ``(n,)``), teacher forced.

    The graded score counts the answer positions (end of sequence included) whose argmax is the gold
    token, so partial retention shows where exact match is all or nothing. Pairs are batched in order of
    length (less padding; results are returned in input order). Exact match equals :func:`exact_match_ids`'s.
    """
    device = next(model.parameters()).device
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    exact = torch.zeros(len(pairs), dtype=torch.bool)
    graded = torch.zeros(len(pairs), dtype=torch.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = [pairs[i] for i in idx]
        input_ids, attention_mask, target_mask, targets = collate(batch, pad_id, device)
        with compute_context(device, compute_dtype):
            logits = answer_logits(model, input_ids, attention_mask, target_mask)
        hits = (logits.argmax(-1) == targets).cpu()
        offset = 0
        for i, (_, answer) in zip(idx, batch):
            row = hits[offset : offset + len(answer)]
            exact[i], graded[i] = bool(row.all()), float(row.double().mean())
            offset += len(answer)
    return exact, graded


def exact_match(model, tokenizer, examples: Sequence[Example], batch_size: int = 16,
                progress: bool = False, compute_dtype: str | None = None) -> torch.Tensor:
    """Per-example exact match (bool tensor, one entry per example) by teacher forcing."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pairs = [encode_example(e, tokenizer) for e in examples]
    return exact_match_ids(model, pairs, pad_id, batch_size=batch_size, progress=progress,
                           compute_dtype=compute_dtype)


def evaluate(
    model,
    tokenizer,
    examples: Mapping[str, Sequence[Example]],
    adapters: "AdapterSet | None" = None,
    mapping: Mapping[str, str] | None = None,
    batch_size: int = 16,
    progress: bool = True,
    compute_dtype: str | None = None,
) -> dict[str, dict]:
    """Exact match of every task's examples, each with its adapter applied.

    ``adapters=None`` evaluates the base model. Otherwise task ``t`` is run with
    adapter ``mapping.get(t, t)`` of ``adapters`` (so a merged set with one
    adapter per head, and a mapping task -> head, goes through the same call).
    ``compute_dtype``: autocast precision (:func:`compute_context`), e.g. a preset's ``compute_dtype``.
    Returns ``{task: {"exact_match": float, "n": int, "adapter": str | None}}``.
    """
    mapping = dict(mapping or {})
    model.eval()
    results = {}
    for task in tqdm(list(examples), disable=not progress, desc="evaluate"):
        adapter = None if adapters is None else mapping.get(task, task)
        with applied(model, adapters, adapter):
            hits = exact_match(model, tokenizer, examples[task], batch_size=batch_size, compute_dtype=compute_dtype)
        results[task] = {"exact_match": float(hits.float().mean()) if len(hits) else float("nan"),
                         "n": int(len(hits)), "adapter": adapter}
    return results


def transfer_matrix(model, tokenizer, examples: Mapping[str, Sequence[Example]], adapters: "AdapterSet",
                    batch_size: int = 16, progress: bool = True, compute_dtype: str | None = None) -> torch.Tensor:
    """Exact match of every adapter (rows, ``adapters.tasks``) on every task (columns, ``examples`` order)."""
    tasks = list(examples)
    matrix = torch.zeros(len(adapters.tasks), len(tasks))
    for i, adapter in enumerate(tqdm(adapters.tasks, disable=not progress, desc="transfer")):
        with applied(model, adapters, adapter):
            for j, task in enumerate(tasks):
                matrix[i, j] = exact_match(model, tokenizer, examples[task], batch_size=batch_size,
                                           compute_dtype=compute_dtype).float().mean()
    return matrix
