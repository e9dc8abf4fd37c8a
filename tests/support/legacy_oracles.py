"""What the encoder tasks' answers are compared with: HF pipelines' answers (``assert_same``), the best
question-answering span worked out by brute force from HF's own logits, and mean pooling computed here."""
from __future__ import annotations

import pytest
import torch


def assert_same(ours, theirs, path="response", rel=1e-4, abs=1e-5):
    """Equal structure and values; floats within ``rel`` / ``abs`` (float32 tolerance by default)."""
    if hasattr(theirs, "item"):  # numpy scalars (HF's token scores)
        theirs = theirs.item()
    if isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=rel, abs=abs), path
    elif isinstance(theirs, dict):
        assert sorted(ours) == sorted(theirs), path
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{path}.{key}", rel, abs)
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{path}[{i}]", rel, abs)
    else:
        assert ours == theirs, path


def best_span_by_hand(model, tokenizer, question, context, max_answer_len=15):
    """Every (start, end) pair scored from HF's own logits; the pipeline's rules (module docstring of
    mii_tasks_text.question_answering), written as loops."""
    enc = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**{k: v.to(model.device) for k, v in enc.items() if k in tokenizer.model_input_names})
    in_context = [s == 1 for s in enc.sequence_ids()]
    probs = []
    for logits in (out.start_logits[0].float().cpu(), out.end_logits[0].float().cpu()):
        kept = torch.tensor([i == 0 or c for i, c in enumerate(in_context)])
        p = torch.where(kept, logits, torch.tensor(-10000.0)).softmax(-1)
        p[0] = 0.0
        probs.append(p)
    best = max(((probs[0][s] * probs[1][e]).item(), s, e) for s in range(len(in_context))
               for e in range(s, min(s + max_answer_len, len(in_context))) if in_context[s] and in_context[e])
    score, s, e = best
    offsets = enc["offset_mapping"][0]
    first, last = int(offsets[s][0]), int(offsets[e][1])
    return {"score": score, "start": first, "end": last, "answer": context[first:last]}


def mean_pooling_by_hand(model, tokenizer, text):
    """sentence-transformers' mean pooling of HF's last hidden states, over the text alone (no padding)."""
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**{k: v.to(model.device) for k, v in enc.items()
                          if k in tokenizer.model_input_names}).last_hidden_state
    return hidden[0].float().cpu().sum(0) / enc["attention_mask"].sum()
