"""Random-weight checkpoints in Hugging Face layout, built on the machine that benchmarks them.

Nothing can be downloaded on the GPU machine, so the Llama-3-8B shape is materialised tensor by tensor
with torch.randn on the GPU (seconds, not minutes) and written as sharded safetensors plus an index,
a config.json from LlamaConfig and a small local tokenizer. Our engine and the HF peers load the same folder.
The Mixtral-shaped model (fewer layers) and the family rows' models (families.py) are built by transformers
itself (random init), so their files are in the hub's layout whatever transformers keeps in memory.
"""

import json
import os
import time

import torch

LLAMA3_8B = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
    rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
    bos_token_id=128000, eos_token_id=128001,
)
TINY = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
    bos_token_id=510, eos_token_id=511,
)
# Mixtral-8x7B's shape with 4 of its 32 layers: 5.8e9 params, 11.6 GB in bf16; specials on top, as above
MIXTRAL_4L = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=4,
    num_attention_heads=32, num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2,
    max_position_embeddings=32768, rms_norm_eps=1e-5, tie_word_embeddings=False,
    bos_token_id=31998, eos_token_id=31999,
)
TINY_MIXTRAL = dict(TINY, num_local_experts=4, num_experts_per_tok=2)
del TINY_MIXTRAL["rope_theta"]
WEIGHT_STD = 0.02  # like a real model's initializer_range; keeps activations finite through 32 layers
SHARD_BYTES = 4 * 1024**3
DONE_MARKER = ".bench_complete"


def first_special_id(shape):
    """Ids from here up are special tokens (Llama-3 keeps them at the top of the vocabulary)."""
    return shape["bos_token_id"]


def tensor_shapes(shape):
    """HF parameter names and shapes in file order; norms are the 1-D entries."""
    h, inter, v = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    head_dim = h // shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * head_dim
    out = [("model.embed_tokens.weight", (v, h))]
    for i in range(shape["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, h)),
                (p + "mlp.gate_proj.weight", (inter, h)), (p + "mlp.up_proj.weight", (inter, h)),
                (p + "mlp.down_proj.weight", (h, inter)),
                (p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return out


def count_params(shape):
    total = embed = 0
    for name, dims in tensor_shapes(shape):
        n = 1
        for d in dims:
            n *= d
        total += n
        embed += n if name == "model.embed_tokens.weight" else 0
    return total, embed


ARCHITECTURES = ["LlamaForCausalLM"]  # as a hub checkpoint names it; `transformers serve` loads the model by it


def _save_config(path, shape, dtype):
    from transformers import LlamaConfig
    LlamaConfig(**shape, architectures=ARCHITECTURES, dtype=str(dtype).removeprefix("torch.")).save_pretrained(path)


def _save_tokenizer(path, shape):
    """A WordLevel tokenizer covering every id: 't<i>' for ordinary ids, Llama-3-style specials on top."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    v, first = shape["vocab_size"], first_special_id(shape)
    vocab = {f"t{i}": i for i in range(first)}
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    specials += [f"<|reserved_special_token_{k}|>" for k in range(v - first - 2)]
    vocab.update({tok: first + k for k, tok in enumerate(specials)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=specials[0], eos_token=specials[1],
                                   unk_token="t0", pad_token=specials[1])
    fast.save_pretrained(path)


def _save_weights(path, shape, dtype, device, seed, tensors=None):
    """Random weights for `tensors` ([(name, dims)], default the Llama layout of `shape`), made on `device`
    shard by shard and written as sharded safetensors with an index; returns the bytes written."""
    from safetensors.torch import save_file
    gen = torch.Generator(device=device).manual_seed(seed)
    weight_map, shard, shard_bytes, shards = {}, {}, 0, []

    def flush():
        nonlocal shard, shard_bytes
        if shard:
            name = f"model-{len(shards) + 1:05d}.safetensors"
            save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
            shards.append(name)
            weight_map.update({k: name for k in shard})
            shard, shard_bytes = {}, 0

    total_bytes = 0
    for name, dims in tensors or tensor_shapes(shape):
        if len(dims) == 1:
            t = torch.ones(dims, dtype=dtype, device=device)
        else:
            t = torch.randn(dims, generator=gen, dtype=dtype, device=device).mul_(WEIGHT_STD)
        nbytes = t.numel() * t.element_size()
        if shard_bytes + nbytes > SHARD_BYTES:
            flush()
        shard[name] = t.to("cpu")
        shard_bytes += nbytes
        total_bytes += nbytes
    flush()
    # HF names shards model-0000i-of-0000n; rename now that n is known.
    n = len(shards)
    renames = {s: s.replace(".safetensors", f"-of-{n:05d}.safetensors") for s in shards}
    for old, new in renames.items():
        os.replace(os.path.join(path, old), os.path.join(path, new))
    index = {"metadata": {"total_size": total_bytes},
             "weight_map": {k: renames[v] for k, v in weight_map.items()}}
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return total_bytes


def build_checkpoint(path, tiny=False, seed=0, log=print):
    """Builds (or reuses) the random checkpoint at `path`; returns a summary dict."""
    shape = TINY if tiny else LLAMA3_8B
    dtype = torch.float32 if tiny else torch.bfloat16
    device = "cpu" if tiny or not torch.cuda.is_available() else "cuda"
    params, embed = count_params(shape)
    elem = torch.empty((), dtype=dtype).element_size()
    summary = dict(path=path, shape=shape, dtype=str(dtype), params_total=params,
                   params_matmul=params - embed, weight_bytes=params * elem, reused=True)
    stamp = json.dumps({"shape": shape, "dtype": str(dtype), "seed": seed, "std": WEIGHT_STD,
                        "architectures": ARCHITECTURES}, sort_keys=True)
    if _reusable(path, stamp, log):
        return summary
    t0 = time.perf_counter()
    _save_config(path, shape, dtype)
    _save_tokenizer(path, shape)
    written = _save_weights(path, shape, dtype, device, seed)
    if device == "cuda":
        torch.cuda.empty_cache()  # engines size their KV cache from free memory: hand the cached blocks back
    assert written == summary["weight_bytes"], (written, summary["weight_bytes"])
    with open(os.path.join(path, DONE_MARKER), "w") as f:
        f.write(stamp)
    summary["reused"] = False
    summary["build_s"] = time.perf_counter() - t0
    log(f"checkpoint: built {path} ({written / 1e9:.2f} GB on {device}) in {summary['build_s']:.1f}s")
    return summary


def _reusable(path, stamp, log):
    marker = os.path.join(path, DONE_MARKER)
    if os.path.exists(marker) and open(marker).read() == stamp:
        log(f"checkpoint: reusing {path}")
        return True
    os.makedirs(path, exist_ok=True)
    for f in os.listdir(path):  # a half-written earlier build must not leave stale shards behind
        if f.endswith(".safetensors") or f == DONE_MARKER:
            os.remove(os.path.join(path, f))
    return False


def build_mixtral(path, tiny=False, seed=0, log=print):
    """Builds (or reuses) a random Mixtral-shaped checkpoint (MIXTRAL_4L, or TINY_MIXTRAL in float32)."""
    from transformers import MixtralConfig, MixtralForCausalLM
    return build_with_transformers(path, MixtralConfig, MixtralForCausalLM, TINY_MIXTRAL if tiny else MIXTRAL_4L,
                                   "mixtral", tiny, seed, log)


def build_with_transformers(path, config_cls, model_cls, shape, kind, tiny=False, seed=0, log=print, removable=()):
    """Builds (or reuses) a random checkpoint of `shape` made by transformers itself (`model_cls`, random
    init, bf16 on the GPU; float32 on the CPU when tiny), so its files are in the hub's layout whatever
    transformers keeps in memory; a summary dict with the saved config.json. Where the disk lacks room for
    it, the benchmark checkpoints in `removable` go first (mixtral_checkpoint.make_room)."""
    dtype = torch.float32 if tiny else torch.bfloat16
    device = "cpu" if tiny or not torch.cuda.is_available() else "cuda"
    stamp = json.dumps({"shape": shape, "dtype": str(dtype), "seed": seed, "kind": kind}, sort_keys=True)
    summary = dict(path=path, shape=shape, dtype=str(dtype), reused=True)
    if not _reusable(path, stamp, log):
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        with torch.device(device):
            model = model_cls._from_config(config_cls(**shape), dtype=dtype)
        if removable:
            from mixtral_checkpoint import make_room
            tensors = {t.data_ptr(): t.nbytes for t in model.state_dict().values()}  # a tied head once
            make_room(path, sum(tensors.values()), removable, log)
        model.save_pretrained(path)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
        _save_tokenizer(path, shape)
        with open(os.path.join(path, DONE_MARKER), "w") as f:
            f.write(stamp)
        summary.update(reused=False, build_s=time.perf_counter() - t0)
        log(f"checkpoint: built {path} ({kind} shape, {device}) in {summary['build_s']:.1f}s")
    with open(os.path.join(path, "config.json")) as f:
        summary["config"] = json.load(f)
    return summary


def build_family(family, path, tiny=False, seed=0, log=print, removable=()):
    """Builds (or reuses) the random checkpoint of a families.Family (its shape, or its tiny one); the
    benchmark checkpoints in `removable` are removed first if the disk lacks room (the GPU machine has 64 GB:
    the Llama, Mixtral and both family checkpoints together come to 62 GB)."""
    import transformers
    config_cls, model_cls = (getattr(transformers, name) for name in family.hf_classes)
    return build_with_transformers(path, config_cls, model_cls, family.tiny_shape if tiny else family.shape,
                                   family.name, tiny, seed, log, removable)
