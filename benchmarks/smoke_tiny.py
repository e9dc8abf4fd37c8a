"""CPU smoke test of bench_llama.py on the tiny config.

    python benchmarks/smoke_tiny.py [--stub] [extra bench_llama args]

Uses the real mii_core when `mii_core.pipeline` imports (run from the repo root with
PYTHONPATH=.:kernels:architectures/llama), else, or with --stub, a stand-in engine installed here only:
it answers generate_tokens with HF greedy decoding, so every other part of the script runs for real.
"""

import os
import sys
import types
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


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


def _install_stub():
    stub = types.ModuleType("mii_core")
    stub.pipeline = _StubPipeline
    stub.__version__ = "smoke-test stub"
    sys.modules["mii_core"] = stub


def main():
    argv = sys.argv[1:]
    use_stub = "--stub" in argv
    argv = [a for a in argv if a != "--stub"]
    if not use_stub:
        try:
            import mii_core
            mii_core.pipeline  # noqa: B018
            print("smoke: using the real mii_core", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"smoke: mii_core.pipeline not importable ({type(e).__name__}: {e}); using the stub",
                  flush=True)
            use_stub = True
    if use_stub:
        sys.modules.pop("mii_core", None)
        _install_stub()
    import bench_llama
    defaults = ["--tiny", "--workloads", "w1,w2,w3", "--w1-requests", "8", "--out", "/tmp/bench-tiny.json"]
    return bench_llama.main(defaults + argv)


if __name__ == "__main__":
    sys.exit(main())
