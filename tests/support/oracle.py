"""Hugging Face transformers as the reference ("oracle") for the engine's outputs.

Every prompt runs alone and unpadded, so padding and batching never enter the reference.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# Greedy steps whose best and second-best logits are closer than this could flip between two
# correct float32 implementations; fixtures (seeds, prompts) are chosen so none occur.
MIN_GREEDY_MARGIN = 1e-3


@dataclass(frozen=True)
class Generation:
    prompt_ids: tuple[int, ...]
    new_ids: tuple[int, ...]
    text: str  # new tokens decoded with skip_special_tokens=True
    finish_reason: str  # "stop" if generation ended on EOS, else "length"
    min_margin: float  # smallest top-1 minus top-2 logit over the generated steps

    @property
    def prompt_length(self) -> int:
        return len(self.prompt_ids)

    @property
    def generated_length(self) -> int:
        return len(self.new_ids)


class HFOracle:
    def __init__(self, path):
        self.path = str(path)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32).eval()
        self.eos_id = self.tokenizer.eos_token_id

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt)["input_ids"]

    @functools.lru_cache(maxsize=None)
    def greedy(self, prompt: str, max_new_tokens: int, *, ignore_eos=False, min_new_tokens=0) -> Generation:
        """HF greedy decoding.

        ignore_eos: EOS neither stops nor is suppressed (eos_token_id=None); callers that want
        both "emit and continue" and "suppress" engine semantics to agree check that EOS is absent.
        min_new_tokens: HF semantics, EOS is masked until that many tokens exist.
        """
        return self.greedy_ids(tuple(self.encode(prompt)), max_new_tokens, ignore_eos=ignore_eos,
                               min_new_tokens=min_new_tokens)

    def greedy_ids(self, prompt_ids: tuple[int, ...], max_new_tokens: int, *, ignore_eos=False,
                   min_new_tokens=0) -> Generation:
        """HF greedy decoding from token ids (no tokenizer on the way in); as :meth:`greedy`. The
        near-tie guard runs on every call, the decoding once per arguments."""
        gen = self._generate(tuple(prompt_ids), max_new_tokens, ignore_eos, min_new_tokens)
        self._check_unambiguous(gen, ignore_eos)
        return gen

    @functools.lru_cache(maxsize=None)
    def _generate(self, prompt_ids: tuple[int, ...], max_new_tokens: int, ignore_eos: bool,
                  min_new_tokens: int) -> Generation:
        prompt_ids = list(prompt_ids)
        eos = {"eos_token_id": None} if ignore_eos else {}
        with torch.no_grad():
            out = self.model.generate(
                torch.tensor([prompt_ids]),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                output_logits=True,
                return_dict_in_generate=True,
                **eos,
            )
        new_ids = tuple(out.sequences[0, len(prompt_ids) :].tolist())
        ended_on_eos = not ignore_eos and new_ids[-1] == self.eos_id
        gen = Generation(
            prompt_ids=tuple(prompt_ids),
            new_ids=new_ids,
            text=self.tokenizer.decode(new_ids, skip_special_tokens=True),
            finish_reason="stop" if ended_on_eos else "length",
            min_margin=greedy_margin(out.logits, min_new_tokens, self.eos_id),
        )
        return gen

    def _check_unambiguous(self, gen: Generation, ignore_eos: bool) -> None:
        """Fail loudly, as a fixture problem rather than an engine one, on an ambiguous reference."""
        assert gen.min_margin > MIN_GREEDY_MARGIN, (
            f"fixture problem: greedy near-tie (margin {gen.min_margin:.1e}) for {self.path}; "
            "choose another seed or prompt"
        )
        assert not (ignore_eos and self.eos_id in gen.new_ids), (
            f"fixture problem: greedy emits EOS under ignore_eos for {self.path}; engines may either "
            "emit it and go on or mask it, so choose another seed or prompt"
        )

    @torch.no_grad()
    def last_logits(self, token_ids: list[int]) -> torch.Tensor:
        """Logits [vocab] of the last position after one full forward over `token_ids`."""
        return self.model(torch.tensor([token_ids])).logits[0, -1]


def greedy_margin(step_logits, min_new_tokens: int, eos_id: int) -> float:
    """Smallest top-1/top-2 gap over the steps, with EOS masked where HF masked it."""
    logits = torch.stack(step_logits)[:, 0].clone()
    logits[:min_new_tokens, eos_id] = float("-inf")
    top2 = logits.topk(2, dim=-1).values
    return (top2[:, 0] - top2[:, 1]).min().item()


@torch.no_grad()
def hf_token_logprobs(model, prompt_ids, new_ids, k: int):
    """HF's own float32 log-softmax of its logits at each generated position: (chosen logprobs [n],
    top-k values [n, k], top-k ids [n, k]) for ``new_ids`` following ``prompt_ids`` (the raw logits, as
    vLLM's default logprobs)."""
    ids = torch.tensor([list(prompt_ids) + list(new_ids)])
    logits = model(ids).logits[0, len(prompt_ids) - 1:-1].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    chosen = log_probs.gather(1, torch.tensor(list(new_ids))[:, None])[:, 0]
    top = log_probs.topk(k, dim=-1)
    return chosen, top.values, top.indices
