"""HF transformers peers on the same checkpoint: padded static generate, batch-1 generate, continuous batching.

Every peer is forced to produce at least the requested number of tokens (min_new_tokens, or EOS disabled),
and only each request's requested output tokens count as output.
"""

import importlib.util
import time

import torch


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def load(path, tiny):
    from transformers import AutoModelForCausalLM
    dtype = torch.float32 if tiny else torch.bfloat16
    cuda, accelerate = torch.cuda.is_available(), importlib.util.find_spec("accelerate") is not None
    placement = {"device_map": "cuda"} if cuda and accelerate else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **placement)
    if cuda and not accelerate:  # device_map needs accelerate; this way loads through host memory first
        model = model.to("cuda")
    return model.eval()


@torch.inference_mode()
def _generate(model, prompts, n_new, pad_id):
    """One left-padded generate call producing exactly n_new tokens per row; returns the new-token count."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                         max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                         pad_token_id=pad_id, temperature=None, top_p=None, top_k=None)
    new = out.shape[1] - width
    assert new == n_new, f"generate produced {new} new tokens, asked for {n_new}"
    return new * len(prompts)


def warmup(model, prompt, pad_id):
    _generate(model, [prompt], 4, pad_id)
    sync()


def static_batches(model, wl, pad_id, batch=64, deadline=None):
    """Padded static generate in request order, batches of `batch`; each batch runs to its longest request.
    No batch is started that, at the last batch's pace, would end past `deadline` (a perf_counter time):
    the figure then covers the requests done."""
    sync()
    t0 = time.perf_counter()
    generated, done, last = 0, 0, 0.0
    for i in range(0, len(wl.prompts), batch):
        if deadline is not None and done and time.perf_counter() + last > deadline:
            break
        t = time.perf_counter()
        generated += _generate(model, wl.prompts[i:i + batch], max(wl.max_new_tokens[i:i + batch]), pad_id)
        done, last = done + len(wl.prompts[i:i + batch]), time.perf_counter() - t
    sync()
    secs = time.perf_counter() - t0
    planned, wl = len(wl.prompts), wl.head(done)
    return {"seconds": secs, "requests": len(wl.prompts), "requests_planned": planned,
            "output_tokens": wl.output_tokens,
            "generated_tokens_incl_padding": generated, "output_tokens_per_s": wl.output_tokens / secs,
            "prompt_tokens": wl.prompt_tokens, "prompt_tokens_per_s": wl.prompt_tokens / secs, "batch_size": batch}


def timed_generate(model, prompt, n_new, pad_id):
    sync()
    t0 = time.perf_counter()
    _generate(model, [prompt], n_new, pad_id)
    sync()
    return time.perf_counter() - t0


def continuous_batching(model, wl, pad_id, deadline=None):
    """transformers' continuous batching (paged attention): per-request max_new_tokens with EOS disabled
    through the manager. Past `deadline` the manager is stopped and only finished requests count."""
    from transformers import GenerationConfig
    from transformers.generation.continuous_batching.utils import WorkloadHints
    gc = GenerationConfig(do_sample=False, max_new_tokens=max(wl.max_new_tokens), pad_token_id=pad_id,
                          eos_token_id=-1)
    hints = WorkloadHints(max_prompt_length=max(len(p) for p in wl.prompts),
                          max_generated_length=max(wl.max_new_tokens), num_requests=len(wl.prompts))
    t_enter = time.perf_counter()
    with model.continuous_batching_context_manager(generation_config=gc, block=True, timeout=30,
                                                   workload_hints=hints) as mgr:
        warm_s = time.perf_counter() - t_enter  # CUDA-graph capture, like our engine's warm-up: not timed
        attn = getattr(model.config, "_attn_implementation", None)
        sync()
        t0 = time.perf_counter()
        ids = [mgr.add_request(p, max_new_tokens=m, eos_token_id=-1)
               for p, m in zip(wl.prompts, wl.max_new_tokens)]
        done, cut = {}, False
        while len(done) < len(ids):
            if deadline is not None and time.perf_counter() > deadline:
                cut = True
                break
            r = mgr.get_result(timeout=1)
            if r is not None and r.is_finished():
                done[r.request_id] = r
            elif r is None and not mgr.is_running():
                raise RuntimeError(f"generation thread stopped after {len(done)}/{len(ids)} requests")
        sync()
        secs = time.perf_counter() - t0
        if cut:
            mgr.stop(block=True, timeout=30, hard_stop=True)
    errors = [r.error for r in done.values() if r.error is not None]
    pairs = [(done[i], m) for i, m in zip(ids, wl.max_new_tokens) if i in done]
    got = sum(min(len(r.generated_tokens), m) for r, m in pairs)
    short = sum(len(r.generated_tokens) < m for r, m in pairs)
    return {"seconds": secs, "requests": len(pairs), "requests_planned": len(ids), "cut_by_time_budget": cut,
            "output_tokens": got, "output_tokens_per_s": got / secs, "requests_short_of_requested": short,
            "errors": errors[:3], "warmup_s": warm_s,
            "method": "continuous_batching_context_manager.add_request",
            "attn_implementation": attn}


def generate_batch(model, wl, pad_id):
    """Plain model.generate_batch: one max_new_tokens for all, so every request gets the longest output."""
    from transformers import GenerationConfig
    gc = GenerationConfig(do_sample=False, max_new_tokens=max(wl.max_new_tokens), pad_token_id=pad_id,
                          eos_token_id=-1)
    sync()
    t0 = time.perf_counter()
    res = model.generate_batch(inputs=wl.prompts, generation_config=gc)
    sync()
    secs = time.perf_counter() - t0
    outs = list(res.values())
    got = sum(min(len(r.generated_tokens), m) for r, m in zip(outs, wl.max_new_tokens))
    return {"seconds": secs, "requests": len(outs), "output_tokens": got, "output_tokens_per_s": got / secs,
            "generated_tokens_incl_overrun": sum(len(r.generated_tokens) for r in outs),
            "method": "generate_batch (warm-up inside the timing)"}
