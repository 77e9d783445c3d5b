"""Teacher-forced exact match equals greedy decoding; adapters apply to the weights exactly as peft does."""

from __future__ import annotations

import pytest
import torch

from hydralib import load_adapters
from hydralib.runtime import applied
from hydralib.suite.evaluation import evaluate, exact_match, exact_match_ids, transfer_matrix
from hydralib.suite.models import build_tiny_model
from hydralib.suite.tasks import encode_example, make_task


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = build_tiny_model(seed=3)
    return model.eval(), tokenizer


def _greedy(model, prompt_ids, n):
    out = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                         max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def test_teacher_forcing_equals_greedy_decoding(tiny):
    """Gold answers = the model's own greedy continuation: teacher forcing must call them all right,
    and any answer that differs from greedy decoding in one token must be wrong."""
    model, tokenizer = tiny
    examples = make_task("smart_reply-en", seed=0, n_train=0, n_validation=0, n_test=6).test
    pairs, wrong = [], []
    for k, example in enumerate(examples):
        prompt_ids, _ = encode_example(example, tokenizer)
        greedy = _greedy(model, prompt_ids, 4 + k)
        pairs.append((prompt_ids, greedy))
        flipped = list(greedy)
        flipped[k % len(flipped)] = (flipped[k % len(flipped)] + 1) % len(tokenizer)
        wrong.append((prompt_ids, flipped))
    pad = tokenizer.pad_token_id
    assert exact_match_ids(model, pairs, pad, batch_size=4).all()
    assert not exact_match_ids(model, wrong, pad, batch_size=4).any()


def test_batching_and_padding_do_not_change_results(tiny):
    model, tokenizer = tiny
    examples = make_task("question_answering-de", seed=1, n_train=0, n_validation=0, n_test=5).test
    pairs = [encode_example(e, tokenizer) for e in examples]
    prompt_ids, _ = pairs[0]
    pairs[0] = (prompt_ids, _greedy(model, prompt_ids, 6))  # one that is right, among ones that are wrong
    one_by_one = torch.cat([exact_match_ids(model, [p], tokenizer.pad_token_id) for p in pairs])
    batched = exact_match_ids(model, pairs, tokenizer.pad_token_id, batch_size=5)
    assert torch.equal(one_by_one, batched) and batched[0]


def _random_set(model, tasks, scale=0.2, seed=0):
    from hydralib import AdapterSet

    g = torch.Generator().manual_seed(seed)
    modules = {n: m.weight.shape for n, m in model.named_modules() if n.endswith(("q_proj", "v_proj"))}
    return AdapterSet.from_factors({
        t: {n: (scale * torch.randn(4, d_in, generator=g), scale * torch.randn(d_out, 4, generator=g), 2.0)
            for n, (d_out, d_in) in modules.items()}
        for t in tasks
    })


def test_applied_equals_peft_and_restores_weights(tmp_path):
    from peft import PeftModel

    model, tokenizer = build_tiny_model(seed=4)
    aset = _random_set(model, ["a"], scale=0.5)
    aset.save_peft("a", tmp_path / "a")
    example = make_task("smart_reply-fr", n_train=0, n_validation=0, n_test=1).test[0]
    ids = torch.tensor([encode_example(example, tokenizer)[0]])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(ids).logits
        with applied(model, aset, "a"):
            ours = model(ids).logits
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # restored exactly
        theirs = PeftModel.from_pretrained(model, tmp_path / "a")(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ours, reference, atol=1e-3)


def test_adapter_of_another_model_is_refused_by_name_and_weights_survive(tmp_path):
    from hydralib import AdapterSet
    from hydralib.errors import AdapterError

    model, _ = build_tiny_model(seed=4)
    modules = {n: m.weight.shape for n, m in model.named_modules() if n.endswith("q_proj")}
    wrong = AdapterSet.from_factors({"a": {n: (torch.randn(4, d_in + 1), torch.randn(d_out, 4), 2.0)
                                           for n, (d_out, d_in) in modules.items()}})
    wrong.save_peft("a", tmp_path / "other-model")
    loaded = load_adapters([tmp_path / "other-model"], tasks=["a"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AdapterError, match=r"other-model.*hydralib\.runtime.*does not fit"):
        with applied(model, loaded, "a"):
            pass
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_evaluate_mapping_and_transfer_matrix():
    model, tokenizer = build_tiny_model(seed=5)
    aset = _random_set(model, ["head-0", "head-1"], seed=1)
    examples = {t: make_task(t, n_train=0, n_validation=0, n_test=4).test
                for t in ("smart_reply-en", "question_answering-en")}
    mapping = {"smart_reply-en": "head-1", "question_answering-en": "head-0"}
    scores = evaluate(model, tokenizer, examples, adapters=aset, mapping=mapping, progress=False)
    assert {t: v["adapter"] for t, v in scores.items()} == mapping
    matrix = transfer_matrix(model, tokenizer, examples, aset, progress=False)
    assert matrix.shape == (2, 2)
    for j, task in enumerate(examples):
        i = aset.tasks.index(mapping[task])
        assert matrix[i, j].item() == pytest.approx(scores[task]["exact_match"])
    base = evaluate(model, tokenizer, examples, progress=False)
    assert all(v["adapter"] is None for v in base.values())


def test_graded_scores_agree_with_exact_match_and_count_answer_tokens():
    from hydralib.suite.evaluation import answer_scores_ids, exact_match_ids
    from conftest import tiny_llama

    model = tiny_llama(seed=5)
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randint(3, 60, (int(n),), generator=g).tolist(), torch.randint(3, 60, (int(k),), generator=g).tolist())
             for n, k in zip(torch.randint(2, 9, (23,), generator=g), torch.randint(1, 5, (23,), generator=g))]
    exact, graded = answer_scores_ids(model, pairs, pad_id=0, batch_size=5)
    assert torch.equal(exact, exact_match_ids(model, pairs, pad_id=0))
    assert bool(((graded == 1) == exact).all()) and bool(((graded >= 0) & (graded <= 1)).all())
    # make one answer exactly what the model predicts: graded 1 and exact
    prompt = pairs[0][0]
    with torch.no_grad():
        nxt = int(model(torch.tensor([prompt])).logits[0, -1].argmax())
    e, gr = answer_scores_ids(model, [(prompt, [nxt])], pad_id=0)
    assert bool(e[0]) and float(gr[0]) == 1.0
