"""A stand-in for mii_core (smoke runs only, `--stub-engine`): answers generate_tokens with HF greedy decoding,
so that every other part of the benchmark runs for real where mii_core does not import."""

import sys
import types
from dataclasses import dataclass


@dataclass
class _StubResult:
    token_ids: list


class _StubPipeline:
    def __init__(self, path, **kwargs):
        import torch
        from transformers import AutoModelForCausalLM
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.destroyed = False

    def generate_tokens(self, prompts, max_new_tokens, ignore_eos=False, do_sample=True, **kwargs):
        import torch
        if self.destroyed:
            raise RuntimeError("pipeline was destroyed")
        want = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
        out = []
        with torch.inference_mode():
            for p, n in zip(prompts, want):
                ids = torch.tensor([p])
                gen = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                                          min_new_tokens=n if ignore_eos else 0, do_sample=do_sample,
                                          pad_token_id=0)
                out.append(_StubResult(gen[0, len(p):].tolist()))
        return out

    def destroy(self):
        self.destroyed = True
        self.model = None


def install():
    """Puts the stub in sys.modules as `mii_core`."""
    stub = types.ModuleType("mii_core")
    stub.pipeline = _StubPipeline
    stub.__version__ = "smoke-test stub"
    sys.modules["mii_core"] = stub
