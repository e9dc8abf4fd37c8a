"""HF transformers' top-1/top-2 logit margin along a greedy output (tp_parity): where TP=2 and TP=1 part ways
in bf16, a small margin there says the two paths met a near-tie, not a bug.

One forward of prompt + TP=1's output gives HF's logits at every generated position; position k's margin
is top1 - top2 of the logits that chose output token k. The TP=1 and TP=2 outputs share the context up
to their first difference, so the margin at that index is HF's view of the same choice.
"""

import torch


def first_difference(a, b):
    """Index of the first differing token of two outputs (None when equal over their common length)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def margins(path, prompts, ref_outputs, other_outputs, tiny):
    """Per prompt: HF's argmax agreement with `ref_outputs`, its smallest margin before the first difference
    from `other_outputs`, and the margin at that difference."""
    from transformers import AutoModelForCausalLM
    device = "cpu" if tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if tiny else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()  # (device_map needs accelerate)
    rows = []
    for prompt, ref, other in zip(prompts, ref_outputs, other_outputs):
        ids = torch.tensor([list(prompt) + list(ref)], device=device)
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1:-1].float()  # the logits that chose each ref token
        top2 = logits.topk(2, dim=-1)
        margin = (top2.values[:, 0] - top2.values[:, 1]).tolist()
        hf_choice = top2.indices[:, 0].tolist()
        split = first_difference(ref, other)
        upto = len(ref) if split is None else split
        rows.append({"first_difference": split, "margin_at_difference": None if split is None else margin[split],
                     "min_margin_before": min(margin[:upto]) if upto else None,
                     "hf_agrees_with_tp1_before": sum(h == r for h, r in zip(hf_choice[:upto], ref[:upto])),
                     "compared": upto})
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"prompts": rows, "dtype": str(dtype), "device": device}
