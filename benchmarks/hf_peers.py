"""HF transformers peers on the same checkpoint: padded static generate, batch-1 generate (eager, and with
the static cache, which transformers compiles), continuous batching.

Every peer is forced to produce at least the requested number of tokens (min_new_tokens, or EOS disabled),
and only each request's requested output tokens count as output. A peer cut by its time cap counts what it
produced until then.
"""

import importlib.util
import time

import torch

from phases import sync


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
def _generate(model, prompts, n_new, pad_id, max_time=None, **extra):
    """One left-padded generate call producing n_new tokens per row (fewer only if `max_time` seconds ran
    out first); returns the number of new columns."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    out = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                         max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, max_time=max_time,
                         pad_token_id=pad_id, temperature=None, top_p=None, top_k=None, **extra)
    new = out.shape[1] - width
    assert new == n_new or max_time is not None, f"generate produced {new} new tokens, asked for {n_new}"
    return new


def warmup(model, prompt, pad_id):
    _generate(model, [prompt], 4, pad_id)
    sync()


def static_batches(model, wl, pad_id, batch=64, deadline=None):
    """Padded static generate in request order, batches of `batch`; each batch runs to its longest request.
    Past `deadline` (a time.time() value) the running batch stops (generate's max_time) and no other starts;
    a cut batch counts each request's tokens up to where it stopped."""
    sync()
    t0 = time.perf_counter()
    generated = output = done = started = 0
    cut = False
    for i in range(0, len(wl.prompts), batch):
        left = None if deadline is None else deadline - time.time()
        if left is not None and left <= 0:
            cut = True
            break
        prompts, want = wl.prompts[i:i + batch], wl.max_new_tokens[i:i + batch]
        new = _generate(model, prompts, max(want), pad_id, max_time=left)
        started += len(prompts)
        generated += new * len(prompts)
        output += sum(min(new, w) for w in want)
        done += sum(new >= w for w in want)
        if new < max(want):
            cut = True
            break
    if not started:
        raise RuntimeError("no time left to start a batch")
    sync()
    secs = time.perf_counter() - t0
    head = wl.head(started)
    return {"seconds": secs, "requests": started, "requests_planned": len(wl.prompts),
            "requests_completed": done, "cut_by_time_budget": cut, "output_tokens": output,
            "generated_tokens_incl_padding": generated, "output_tokens_per_s": output / secs,
            "prompt_tokens": head.prompt_tokens, "prompt_tokens_per_s": head.prompt_tokens / secs,
            "batch_size": batch}


def timed_generate(model, prompt, n_new, pad_id, **extra):
    sync()
    t0 = time.perf_counter()
    _generate(model, [prompt], n_new, pad_id, **extra)
    sync()
    return time.perf_counter() - t0


def static_cache_caller(model, prompt, n_new, pad_id):
    """HF's fastest batch-1 path: generate with a StaticCache, which transformers compiles on CUDA
    (mode reduce-overhead). One cache of fixed length is reused (reset before each call) so that every call
    has the same shapes and compiles once. Returns (call, first_call_s): the first call compiles."""
    from transformers import StaticCache
    cache = StaticCache(config=model.config, max_cache_len=len(prompt) + n_new)

    def call(n):
        with torch.inference_mode():  # the cache's tensors are made inside generate's inference mode
            cache.reset()
        return timed_generate(model, prompt, n, pad_id, past_key_values=cache)

    return call, call(n_new)


def continuous_batching(model, wl, pad_id, deadline=None, small=False):
    """transformers' continuous batching (paged attention): per-request max_new_tokens with EOS disabled
    through the manager. Past `deadline` (a time.time() value) the manager is stopped; finished requests
    count, and the tokens unfinished ones had made (best effort, see _in_flight_tokens)."""
    from transformers import GenerationConfig
    from transformers.generation.continuous_batching.utils import WorkloadHints
    gc = GenerationConfig(do_sample=False, max_new_tokens=max(wl.max_new_tokens), pad_token_id=pad_id,
                          eos_token_id=-1)
    hints = WorkloadHints(max_prompt_length=max(len(p) for p in wl.prompts),
                          max_generated_length=max(wl.max_new_tokens), num_requests=len(wl.prompts))
    sizes = {}
    if small:  # --tiny on a CPU: a few blocks, not a share of the host's memory
        from transformers import ContinuousBatchingConfig
        sizes["continuous_batching_config"] = ContinuousBatchingConfig(num_blocks=32, max_batch_tokens=512)
    t_enter = time.perf_counter()
    with model.continuous_batching_context_manager(generation_config=gc, block=True, timeout=30,
                                                   workload_hints=hints, **sizes) as mgr:
        warm_s = time.perf_counter() - t_enter  # CUDA-graph capture, like our engine's warm-up: not timed
        attn = getattr(model.config, "_attn_implementation", None)
        sync()
        t0 = time.perf_counter()
        ids = [mgr.add_request(p, max_new_tokens=m, eos_token_id=-1)
               for p, m in zip(wl.prompts, wl.max_new_tokens)]
        done, cut = {}, False
        while len(done) < len(ids):
            if deadline is not None and time.time() > deadline:
                cut = True
                break
            r = mgr.get_result(timeout=1)
            if r is not None and r.is_finished():
                done[r.request_id] = r
            elif r is None and not mgr.is_running():
                raise RuntimeError(f"generation thread stopped after {len(done)}/{len(ids)} requests")
        want = dict(zip(ids, wl.max_new_tokens))
        partial = _in_flight_tokens(mgr, want, done) if cut else 0  # read before the clock stops
        sync()
        secs = time.perf_counter() - t0
        if cut:
            mgr.stop(block=True, timeout=10, hard_stop=True)
    errors = [r.error for r in done.values() if r.error is not None]
    pairs = [(done[i], m) for i, m in zip(ids, wl.max_new_tokens) if i in done]
    got = sum(min(len(r.generated_tokens), m) for r, m in pairs) + (partial or 0)
    if got == 0:
        raise RuntimeError(f"stopped at its time cap before any output was counted (warm-up took {warm_s:.0f}s)")
    short = sum(len(r.generated_tokens) < m for r, m in pairs)
    return {"seconds": secs, "requests": len(ids), "requests_completed": len(pairs), "requests_planned": len(ids),
            "cut_by_time_budget": cut, "in_flight_tokens_counted": partial,
            "output_tokens": got, "output_tokens_per_s": got / secs, "requests_short_of_requested": short,
            "errors": errors[:3], "warmup_s": warm_s,
            "method": "continuous_batching_context_manager.add_request",
            "attn_implementation": attn}


def _in_flight_tokens(mgr, want, done):
    """Tokens the unfinished requests have made so far, read from the manager's scheduler (internal state of
    transformers 5.x, hence best effort: None when it is not where expected, and then only finished
    requests count, which understates the peer)."""
    try:
        states = list(mgr.batch_processor.scheduler.active_requests.values())
        return sum(min(len(s.generated_tokens), want[s.request_id]) for s in states
                   if s.request_id in want and s.request_id not in done)
    except Exception:  # noqa: BLE001
        return None


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
