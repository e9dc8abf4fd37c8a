"""MII Legacy on mii-core against HF in the same run (issue 20): local deployments (router, replica process,
gRPC, as ``mii_core.legacy.deploy`` starts them) beside HF transformers' ``pipeline`` and diffusers.

- BERT-base-shaped fill-mask and text-classification (random weights, a WordPiece vocabulary of BERT's
  size built here; nothing is downloaded), ``enable_cuda_graph`` on a GPU: throughput at 64 concurrent
  clients vs HF's ``pipeline(..., batch_size=64)`` over the same texts, and p50 latency at 1 client vs one
  HF call.
- Stable-Diffusion-1.5-shaped text-to-image (random weights; 512x512, 50 steps, batch 1): p50 latency with
  ``enable_cuda_graph`` vs diffusers' ``StableDiffusionPipeline`` in fp16.

Prints a table and writes ``bench_legacy.json`` (and ``bench_legacy.md``) to ``--out``.

On the GPU (torch 2.11 and transformers 5.17 there; no diffusers, pydantic, grpcio, msgpack): carry ``.whl``
holding, besides what benchmarks/RESULTS.md lists (pydantic and its requirements, grpcio, protobuf,
msgpack), diffusers and its pure-Python requirements that the machine may lack::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \\
        diffusers==0.42.1 importlib-metadata==10.2.0 zipp==4.1.2 pillow==13.0.0 requests==2.34.2

(requests' own requirements, urllib3, idna, certifi and charset-normalizer, too if ``python3 -c "import requests"``
fails there), then one device call, ``carry: [".whl"]``::

    . benchmarks/gpu_setup.sh || exit 1; python3 benchmarks/bench_legacy.py --out $OUT 2>&1 | tee $OUT/bench_legacy.log

On a CPU, a smoke run at toy shapes (figures meaningless): ``.venv/bin/python benchmarks/bench_legacy.py --tiny
--out /tmp/bench_legacy``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch
import transformers

CLIENTS = 64
WORDS = ("paris france capital city model fox dog movie weather sunny london book author network attention fast "
         "cheap great terrible quick brown lazy river mountain music").split()


# ---- random checkpoints, built here ----

def wordpiece_vocab(folder: Path, size: int) -> Path:
    """BERT's special tokens, WORDS and filler tokens up to ``size`` entries (BERT-base: 30522)."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list(".,!?'")
    tokens = special + WORDS + [t for t in letters if t not in WORDS] + ["##" + t for t in letters]
    tokens += [f"tok{i}" for i in range(max(0, size - len(tokens)))]
    path = folder / "vocab.txt"
    path.write_text("\n".join(tokens[:size]) + "\n", encoding="utf-8")
    return path


def build_bert(folder: Path, task: str, tiny: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "config.json").exists():
        return folder
    vocab_size = 400 if tiny else 30522
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(wordpiece_vocab(folder, vocab_size)),
                                               model_max_length=512)
    shape = (dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37) if tiny else
             dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072))
    config = transformers.BertConfig(vocab_size=vocab_size, max_position_embeddings=512, **shape)
    if task == "text-classification":
        config.id2label = {0: "NEGATIVE", 1: "POSITIVE"}
        config.label2id = {"NEGATIVE": 0, "POSITIVE": 1}
    head = {"fill-mask": transformers.BertForMaskedLM,
            "text-classification": transformers.BertForSequenceClassification}
    torch.manual_seed(0)
    head[task](config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def clip_tokenizer() -> Any:
    """CLIP's byte-level BPE over single characters (no merges): enough to tokenize prompts offline."""
    from tokenizers.pre_tokenizers import ByteLevel

    symbols = sorted(ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def sd_parts(tiny: bool) -> dict[str, Any]:
    """UNet, VAE and text encoder of SD-1.5's shapes (or toy ones), random weights."""
    import diffusers

    cross = 32 if tiny else 768
    blocks = (32, 64) if tiny else (320, 640, 1280, 1280)
    down = ("CrossAttnDownBlock2D",) * (len(blocks) - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(blocks) - 1)
    unet = diffusers.UNet2DConditionModel(
        sample_size=4 if tiny else 64, block_out_channels=blocks, layers_per_block=1 if tiny else 2,
        down_block_types=down, up_block_types=up, cross_attention_dim=cross, attention_head_dim=2 if tiny else 8,
        norm_num_groups=32)
    vae_blocks = (32, 64) if tiny else (128, 256, 512, 512)
    vae = diffusers.AutoencoderKL(block_out_channels=vae_blocks, latent_channels=4,
                                  down_block_types=("DownEncoderBlock2D",) * len(vae_blocks),
                                  up_block_types=("UpDecoderBlock2D",) * len(vae_blocks),
                                  layers_per_block=1 if tiny else 2, sample_size=32 if tiny else 512)
    text = transformers.CLIPTextConfig(
        vocab_size=49408, max_position_embeddings=77, hidden_size=cross, intermediate_size=37 if tiny else 3072,
        num_attention_heads=4 if tiny else 12, num_hidden_layers=2 if tiny else 12)
    return {"unet": unet, "vae": vae, "text_encoder": transformers.CLIPTextModel(text)}


def build_sd(folder: Path, tiny: bool) -> Path:
    import diffusers

    if (folder / "model_index.json").exists():
        return folder
    torch.manual_seed(0)
    scheduler = diffusers.PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        skip_prk_steps=True)  # SD-1.5's
    pipe = diffusers.StableDiffusionPipeline(**sd_parts(tiny), tokenizer=clip_tokenizer(), scheduler=scheduler,
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.to(torch.float32 if tiny else torch.float16).save_pretrained(folder)
    return folder


# ---- measuring ----

def texts(task: str, count: int) -> list[str]:
    """Sentences of 8-40 words (one [MASK] each for fill-mask), varied so batches hold several lengths."""
    out = []
    for i in range(count):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(8 + (i * 5) % 33)]
        if task == "fill-mask":
            words[len(words) // 2] = "[MASK]"
        out.append(" ".join(words) + ".")
    return out


def p50_ms(call: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def concurrent_qps(handle: Any, items: list[str]) -> float:
    """Queries per second with CLIENTS clients, each sending its next query when its last one is answered."""
    with ThreadPoolExecutor(CLIENTS) as pool:
        # warm-up: the same load once, so that the CUDA graphs of the batch shapes it makes (captured on
        # first use) are there before the clock starts
        list(pool.map(lambda text: handle.query({"query": text}), items))
        start = time.perf_counter()
        list(pool.map(lambda text: handle.query({"query": text}), items))
    return len(items) / (time.perf_counter() - start)


def hf_text(task: str, folder: Path, items: list[str], device: str, dtype: torch.dtype, runs: int) -> dict[str, float]:
    pipe = transformers.pipeline(task, model=str(folder), tokenizer=str(folder), device=device, dtype=dtype)
    pipe(items[:CLIENTS], batch_size=CLIENTS)  # warm-up
    start = time.perf_counter()
    pipe(items, batch_size=CLIENTS)
    qps = len(items) / (time.perf_counter() - start)
    latency = p50_ms(lambda: pipe(items[1]), runs)
    return {"qps_64_clients": qps, "p50_ms_1_client": latency}


def ours_text(task: str, folder: Path, items: list[str], mii_config: dict, runs: int) -> dict[str, float]:
    import mii_core.legacy as mii

    name = f"bench-{task}"
    handle = mii.deploy(task=task, model=str(folder), deployment_name=name, mii_config=mii_config)
    try:
        qps = concurrent_qps(handle, items)
        latency = p50_ms(lambda: handle.query({"query": items[1]}), runs)
    finally:
        mii.terminate(name)
    return {"qps_64_clients": qps, "p50_ms_1_client": latency}


def diffusers_ms(folder: Path, args: argparse.Namespace, call: dict) -> float:
    """diffusers' own pipeline, p50 of its runs after one warm-up (its weights are freed on return)."""
    import diffusers

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(folder), dtype=args.dtype).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator(args.device)
    pipe("a panda in space", generator=generator.manual_seed(0), **call)
    return p50_ms(lambda: pipe("a panda in space", generator=generator.manual_seed(0), **call), args.sd_runs)


def sd_latency(folder: Path, args: argparse.Namespace, mii_config: dict) -> dict[str, float]:
    import mii_core.legacy as mii

    call = {"height": args.sd_size, "width": args.sd_size, "num_inference_steps": args.sd_steps}
    hf_ms = diffusers_ms(folder, args, call)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # diffusers' weights leave the GPU before the deployment loads its own
    handle = mii.deploy(task="text-to-image", model=str(folder), deployment_name="bench-sd",
                        mii_config={**mii_config, "enable_cuda_graph": args.device.startswith("cuda")})
    try:
        handle.query({"prompt": "a panda in space"}, seed=0, **call)  # warm-up (and graph capture)
        ours_ms = p50_ms(lambda: handle.query({"prompt": "a panda in space"}, seed=0, **call), args.sd_runs)
    finally:
        mii.terminate("bench-sd")
    return {"hf_p50_ms": hf_ms, "ours_p50_ms": ours_ms, "ratio": ours_ms / hf_ms}


# ---- the run ----

def run_sections(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    dtype_name = {torch.float16: "fp16", torch.float32: "fp32"}[args.dtype]
    # gRPC worker threads: one per client at least, so that all 64 clients' queries reach the batcher together
    mii_config = {"dtype": dtype_name, "device": args.device, "port_number": args.port, "max_batch_size": CLIENTS,
                  "batch_wait_ms": args.batch_wait_ms, "startup_timeout": 300.0, "restful_processes": 2 * CLIENTS}
    results: dict[str, Any] = {"errors": {}}
    for task in ("fill-mask", "text-classification"):
        try:
            folder = build_bert(work / f"bert-{task}", task, args.tiny)
            items = texts(task, args.queries)
            hf = hf_text(task, folder, items, args.device, args.dtype, args.latency_runs)
            # MII's enable_cuda_graph: the encoder replayed from a graph per (batch bucket, length bucket)
            ours = ours_text(task, folder, items, {**mii_config, "enable_cuda_graph": args.device.startswith("cuda")},
                             args.latency_runs)
            results[task] = {"hf": hf, "ours": ours,
                             "throughput_ratio": ours["qps_64_clients"] / hf["qps_64_clients"],
                             "latency_ratio": ours["p50_ms_1_client"] / hf["p50_ms_1_client"]}
        except Exception:
            results["errors"][task] = traceback.format_exc()
    try:
        results["text-to-image"] = sd_latency(build_sd(work / "sd", args.tiny), args, mii_config)
    except Exception:
        results["errors"]["text-to-image"] = traceback.format_exc()
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| task | figure | HF | mii-core | ours / HF | target |", "|---|---|---|---|---|---|"]
    for task in ("fill-mask", "text-classification"):
        if task in results:
            r = results[task]
            lines.append(f"| {task} | queries/s, 64 clients | {r['hf']['qps_64_clients']:.1f} | "
                         f"{r['ours']['qps_64_clients']:.1f} | {r['throughput_ratio']:.2f}x | >= 2x |")
            lines.append(f"| {task} | p50 ms, 1 client | {r['hf']['p50_ms_1_client']:.2f} | "
                         f"{r['ours']['p50_ms_1_client']:.2f} | {r['latency_ratio']:.2f}x | <= 1x |")
    if "text-to-image" in results:
        r = results["text-to-image"]
        lines.append(f"| text-to-image | p50 ms, batch 1 | {r['hf_p50_ms']:.1f} | {r['ours_p50_ms']:.1f} | "
                     f"{r['ratio']:.2f}x | <= 0.8x |")
    lines += [f"\nerror in {task}:\n```\n{text}```" for task, text in results["errors"].items()]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for bench_legacy.json and .md")
    parser.add_argument("--tiny", action="store_true", help="toy shapes on the CPU: a smoke test")
    parser.add_argument("--work", type=Path, default=None, help="where checkpoints are built (default: a temp dir)")
    parser.add_argument("--port", type=int, default=50450, help="the deployments' gRPC port (the next 2 too)")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.tiny
    args.device, args.dtype = ("cuda", torch.float16) if gpu else ("cpu", torch.float32)
    args.queries, args.latency_runs = (2048, 50) if not args.tiny else (128, 5)
    args.sd_size, args.sd_steps, args.sd_runs = (512, 50, 3) if not args.tiny else (32, 2, 2)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MII_CACHE_PATH", tempfile.mkdtemp(prefix="mii_cache_"))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_legacy_"))
    started = time.time()
    results = run_sections(args, work)
    results["meta"] = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                       "dtype": str(args.dtype), "tiny": args.tiny, "seconds": time.time() - started,
                       "torch": torch.__version__, "transformers": transformers.__version__,
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_legacy.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    text = table(results)
    (args.out / "bench_legacy.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
