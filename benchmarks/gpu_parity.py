"""CUDA correctness check beside the benchmark: our engine against HF transformers on the GPU.

Builds the tiny random Llama variants of the test suite, then compares greedy tokens (float32,
chunked + preempting engine too) and last-token logits. Prints one line per check and exits 1 on
any mismatch.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
from tiny_llama import build_tiny_llama  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

import mii_core  # noqa: E402

PROMPTS = ["The quick brown fox", "Every morning the baker opens his shop and sells fresh bread to the",
           "She wrote", "Scientists study the stars to learn how the universe began and how it might end. The"]
NEW_TOKENS = 24
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run of this script
TIGHT = {"state_manager": {"max_ragged_batch_size": 16, "kv_block_size": 8,
                           "memory_config": {"mode": "allocate", "size": 12}}}


def hf_greedy(model, tokenizer, prompt: str) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(DEVICE)
    out = model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def check_variant(variant: str, root: Path) -> bool:
    path = build_tiny_llama(root / variant, variant=variant)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(DEVICE).eval()
    expected = [hf_greedy(model, tokenizer, p) for p in PROMPTS]
    ok = True
    for label, engine_config in (("default", None), ("chunked+preempting", TIGHT)):
        pipe = mii_core.pipeline(str(path), dtype="float32", inference_engine_config=engine_config)
        got = pipe.generate_tokens([tokenizer(p).input_ids for p in PROMPTS], max_new_tokens=NEW_TOKENS,
                                   do_sample=False, min_new_tokens=NEW_TOKENS)  # HF rule
        same = [g.token_ids == e for g, e in zip(got, expected)]
        print(f"[parity] {variant:7s} {label:19s} device={pipe.engine.device} tokens equal: {same}"
              f" preemptions={pipe.loop.scheduler.num_preemptions}", flush=True)
        ok &= all(same)
        if label == "default":
            ids = [tokenizer(p).input_ids for p in PROMPTS]
            logits = pipe.engine.put(list(range(len(ids))), ids)
            ref = torch.stack([model(torch.tensor([i], device=DEVICE)).logits[0, -1] for i in ids]).float()
            diff = (logits - ref).abs().max().item()
            print(f"[parity] {variant:7s} last-token logits max |diff| = {diff:.2e}", flush=True)
            ok &= diff < 1e-3  # TF32 may be on in either side's matmuls on the GPU
        pipe.destroy()
    return ok


def main() -> int:
    torch.backends.cuda.matmul.allow_tf32 = False
    with tempfile.TemporaryDirectory() as tmp:
        results = [check_variant(v, Path(tmp)) for v in ("gqa", "mha", "llama3", "tied")]
    print(f"[parity] all equal: {all(results)}", flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
