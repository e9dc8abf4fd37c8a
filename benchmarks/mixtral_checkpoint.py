"""The whole Mixtral-8x7B shape (32 layers, about 93 GB in bf16) as a random checkpoint in the hub's layout
(per-expert w1/w2/w3), for the multi-GPU benchmark (issue 11, run 4).

Too big to build through transformers (a 93 GB model in memory, then a copy to save), so it is made
tensor by tensor on the GPU and written shard by shard (checkpoint._save_weights), then reused while its
marker matches. The disk is checked first: on a 2-GPU machine (128 GB disk) the Llama-3-8B checkpoint
(16 GB) may have to go to make room; only a folder this benchmark built (it holds the marker) is removed.
"""

import json
import os
import shutil
import time

import torch

import checkpoint

MIXTRAL_8X7B = dict(checkpoint.MIXTRAL_4L, num_hidden_layers=32, rope_theta=1e6, sliding_window=None)
DISK_SPARE_BYTES = 4 * 1024**3  # left free beyond the checkpoint: logs, Triton's cache, the results


def tensor_shapes(shape):
    """Hub names and dims in file order: attention as Llama's, then the router and each expert's w1/w3/w2."""
    h, inter, e = shape["hidden_size"], shape["intermediate_size"], shape["num_local_experts"]
    out = []
    for name, dims in checkpoint.tensor_shapes(shape):
        if ".mlp." in name:
            if name.endswith("gate_proj.weight"):  # one router and the experts in place of the dense MLP
                layer = name.split(".mlp.")[0] + ".block_sparse_moe."
                out.append((layer + "gate.weight", (e, h)))
                for k in range(e):
                    x = f"{layer}experts.{k}."
                    out += [(x + "w1.weight", (inter, h)), (x + "w3.weight", (inter, h)), (x + "w2.weight", (h, inter))]
            continue
        out.append((name, dims))
    return out


def weight_bytes(shape, dtype):
    elem = torch.empty((), dtype=dtype).element_size()
    return sum(elem * torch.Size(dims).numel() for _, dims in tensor_shapes(shape))


def make_room(path, needed, removable, log):
    """Frees disk for `needed` bytes at `path` by removing `removable` benchmark checkpoints if it must."""
    parent = os.path.dirname(os.path.abspath(path))
    for victim in [None, *removable]:
        if victim is not None and os.path.exists(os.path.join(victim, checkpoint.DONE_MARKER)):
            log(f"checkpoint: removing {victim} to make room for {needed / 1e9:.0f} GB")
            shutil.rmtree(victim, ignore_errors=True)
        free = shutil.disk_usage(parent).free
        if free >= needed + DISK_SPARE_BYTES:
            return free
    raise RuntimeError(f"{needed / 1e9:.0f} GB for {path} but {free / 1e9:.0f} GB free on {parent}; "
                       "free the disk or pass another --moe-ckpt")


def build(path, tiny=False, seed=0, log=print, removable=()):
    """Builds (or reuses) the full Mixtral-shaped checkpoint (tiny: checkpoint.TINY_MIXTRAL); a summary dict."""
    from transformers import MixtralConfig
    shape = checkpoint.TINY_MIXTRAL if tiny else MIXTRAL_8X7B
    dtype = torch.float32 if tiny else torch.bfloat16
    device = "cpu" if tiny or not torch.cuda.is_available() else "cuda"
    total = weight_bytes(shape, dtype)
    summary = dict(path=path, shape=shape, dtype=str(dtype), weight_bytes=total, reused=True)
    stamp = json.dumps({"shape": shape, "dtype": str(dtype), "seed": seed, "std": checkpoint.WEIGHT_STD,
                        "kind": "mixtral-full"}, sort_keys=True)
    marker = os.path.join(path, checkpoint.DONE_MARKER)
    if os.path.exists(marker) and open(marker).read() == stamp:
        log(f"checkpoint: reusing {path}")
        return summary
    shutil.rmtree(path, ignore_errors=True)  # a half-written build: start clean
    os.makedirs(path)
    make_room(path, total, [r for r in removable if os.path.abspath(r) != os.path.abspath(path)], log)
    t0 = time.perf_counter()
    MixtralConfig(**shape, dtype=str(dtype).removeprefix("torch.")).save_pretrained(path)
    checkpoint._save_tokenizer(path, shape)
    written = checkpoint._save_weights(path, shape, dtype, device, seed, tensor_shapes(shape))
    assert written == total, (written, total)
    if device == "cuda":
        torch.cuda.empty_cache()
    with open(marker, "w") as f:
        f.write(stamp)
    summary.update(reused=False, build_s=time.perf_counter() - t0)
    log(f"checkpoint: built {path} ({written / 1e9:.1f} GB on {device}) in {summary['build_s']:.1f}s")
    return summary
