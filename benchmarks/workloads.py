"""Workload inputs (W1-W3 of shared/brief/performance.md, W4 of issue 8): random token ids, fixed seeds.

Ceilings are in ceilings.py, floors in floors.py.
"""

import random
from dataclasses import dataclass


@dataclass
class Workload:
    name: str
    prompts: list  # list[list[int]]
    max_new_tokens: list  # list[int], one per prompt
    shared_prefix_len: int = 0  # the first tokens of every prompt are the same (W4)

    @property
    def prompt_tokens(self):
        return sum(len(p) for p in self.prompts)

    @property
    def output_tokens(self):
        return sum(self.max_new_tokens)

    def head(self, k):
        return Workload(self.name, self.prompts[:k], self.max_new_tokens[:k], self.shared_prefix_len)

    def summary(self):
        return {"requests": len(self.prompts), "prompt_tokens": self.prompt_tokens,
                "output_tokens": self.output_tokens, "shared_prefix_len": self.shared_prefix_len,
                "prompt_lens": [len(p) for p in self.prompts], "output_lens": list(self.max_new_tokens)}


def _ids(rng, n, first_special):
    return [rng.randrange(first_special) for _ in range(n)]


def make_w1(n, first_special, tiny=False, seed=1234):
    """W1 offline throughput: prompt and output lengths uniform in [100, 1024] (tiny: [4, 24] / [2, 12])."""
    rng = random.Random(seed)
    p_lo, p_hi, o_lo, o_hi = (4, 24, 2, 12) if tiny else (100, 1024, 100, 1024)
    lens = [(rng.randint(p_lo, p_hi), rng.randint(o_lo, o_hi)) for _ in range(n)]
    return Workload("W1", [_ids(rng, p, first_special) for p, _ in lens], [o for _, o in lens])


def make_w2(first_special, tiny=False, seed=2345):
    """W2 decode latency: batch 1, prompt 128, 128 new tokens (tiny: 8 and 8)."""
    rng = random.Random(seed)
    n = 8 if tiny else 128
    return Workload("W2", [_ids(rng, n, first_special)], [n])


def make_w3(first_special, tiny=False, seed=3456):
    """W3 prefill: 64 prompts of 1024 tokens, 1 new token each (tiny: 4 of 16)."""
    rng = random.Random(seed)
    count, n = (4, 16) if tiny else (64, 1024)
    return Workload("W3", [_ids(rng, n, first_special) for _ in range(count)], [1] * count)


def make_w4(first_special, tiny=False, seed=4567):
    """W4 shared prefix: 256 requests of one 1,000-token prefix + 50 distinct tokens, 64 new tokens each
    (tiny: 8 requests of 160 + 8, 4 new; 160 fills one KV block of the tiny model, whose blocks hold 128)."""
    rng = random.Random(seed)
    count, prefix, own, new = (8, 160, 8, 4) if tiny else (256, 1000, 50, 64)
    shared = _ids(rng, prefix, first_special)
    return Workload("W4", [shared + _ids(rng, own, first_special) for _ in range(count)], [new] * count, prefix)


def make(name, first_special, tiny=False, w1_requests=256):
    """The named workload (W1-W4)."""
    if name == "W1":
        return make_w1(w1_requests, first_special, tiny)
    return {"W2": make_w2, "W3": make_w3, "W4": make_w4}[name](first_special, tiny)
