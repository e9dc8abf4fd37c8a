"""text-generation under ``mii_core.legacy`` for a model type no architecture plugin serves: HF transformers'
``generate`` (``AutoModelForCausalLM``), with the FastGen deployment's query shape and answers (the
generated texts, one per prompt), so a model type answers alike when a plugin later moves it to the fast
path. One query's prompts run as one left-padded batch; concurrent queries take turns (one model)."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from mii_core.config.generation import GenerationConfig
from mii_core.legacy.config import LegacyConfig
from mii_core.legacy.generation_query import TextAnswers, query_prompts
from mii_core.legacy.result import LegacyResult
from mii_core.legacy.task import QueryError
from mii_core.requests import generation_options

log = logging.getLogger(__name__)
# GenerationConfig options the engine has and this fallback does not (their defaults are fine)
UNSUPPORTED = ("stream", "ignore_eos", "stop", "logprobs")


class HFGenerateDeployment(TextAnswers):
    """``query({"query": str | [str, ...]}, **generation options)`` → the generated texts, one per prompt."""

    task = "text-generation"

    def __init__(self, name: str, model_dir: Path, model_type: str, config: LegacyConfig) -> None:
        import transformers  # here: importing mii_core.legacy must stay light

        self.name, self.model_type = name, model_type
        self.default_options = dict(config.pipeline_kwargs)
        self.device = config.torch_device()
        try:
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=config.torch_dtype(), trust_remote_code=config.trust_remote_code)
        except ValueError as exc:  # transformers' "Unrecognized configuration class ..." for non-causal models
            raise ValueError(f"text-generation for model_type '{model_type}': no architecture plugin serves it, "
                             f"and transformers' AutoModelForCausalLM cannot load it ({exc})") from None
        self.model.to(self.device).eval()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            model_dir, trust_remote_code=config.trust_remote_code, padding_side="left")
        if self.tokenizer.pad_token is None:  # GPT-style tokenizers have none; padding is masked out anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._lock = threading.Lock()
        if config.enable_cuda_graph:
            log.warning("enable_cuda_graph ignored for text-generation of model_type '%s': HF generate (no "
                        "architecture plugin serves it) captures no CUDA graphs", model_type)
        self.options({})  # bad pipeline_kwargs fail at deploy, not at the first query

    def options(self, options: Mapping[str, Any]) -> GenerationConfig:
        """The query's options over the deployment's defaults, checked as the FastGen pipeline checks them."""
        checked = generation_options({**self.default_options, **options})
        defaults = GenerationConfig()
        refused = [name for name in UNSUPPORTED if getattr(checked, name) != getattr(defaults, name)]
        if refused:
            raise QueryError(f"text-generation option(s) {refused} are not supported for model_type "
                             f"'{self.model_type}' (served by HF generate: no architecture plugin serves it)")
        return checked

    def query(self, query: Mapping[str, Any], **options: Any) -> LegacyResult:
        start = time.perf_counter()
        prompts = query_prompts(query)
        config = self.options(options)
        with self._lock:
            texts = self._generate(prompts, config)
        return LegacyResult(texts, time.perf_counter() - start)

    def _generate(self, prompts: list[str], config: GenerationConfig) -> list[str]:
        import torch

        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        if config.seed is not None:
            torch.manual_seed(config.seed)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **_hf_generate_kwargs(config),
                                         pad_token_id=self.tokenizer.pad_token_id)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [p + t for p, t in zip(prompts, texts)] if config.return_full_text else texts

    def terminate(self) -> None:
        self.model = None  # the weights are freed with the last reference


def _hf_generate_kwargs(config: GenerationConfig) -> dict[str, Any]:
    """GenerationConfig (MII's names and defaults) → ``generate`` keyword arguments."""
    kwargs: dict[str, Any] = {"do_sample": config.do_sample, "min_new_tokens": config.min_new_tokens}
    if config.max_new_tokens is not None:
        kwargs["max_new_tokens"] = config.max_new_tokens
    elif config.max_length is not None:
        kwargs["max_length"] = config.max_length
    if config.do_sample:  # top_k None means no top-k cut (HF's own default would be 50)
        kwargs.update(top_p=config.top_p, top_k=config.top_k or 0, temperature=config.temperature or 1.0)
    return kwargs
