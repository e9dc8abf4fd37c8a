"""``mii_core.pipeline``: a non-persistent engine in this process."""
from __future__ import annotations

import itertools
import os
import weakref
from typing import Any, Optional, Sequence as Seq, Union

from tqdm.auto import tqdm

from mii_core.config import ModelConfig, validate_options
from mii_core.distributed.process_group import before_process_group_teardown
from mii_core.distributed.step_sync import RankZeroSampler, check_same_requests
from mii_core.engine.builder import build_engine
from mii_core.engine.generation_loop import GenerationLoop
from mii_core.loading.checkpoint import generation_eos_ids
from mii_core.requests import (LengthLimit, build_sequence, check_max_length, generation_options, new_tokens_for,
                               normalize_prompts, tokenize_prompts)
from mii_core.response import Response, TokenOutput
from mii_core.sampling.sampler import Sampler
from mii_core.sampling.stopping import StopChecker

PROGRESS_MIN_PROMPTS = 16  # below this a progress bar is noise


class Pipeline:
    def __init__(self, config: ModelConfig) -> None:
        from transformers import AutoTokenizer

        if config.replica_num > 1:
            raise ValueError("replica_num > 1 means several model replicas, which mii_core.serve runs; a pipeline "
                             "is one replica: leave replica_num at 1")
        self.config = config
        built = build_engine(config)
        self.engine, self.spec, self.ctx = built.engine, built.policy.spec, built.ctx
        tokenizer_path = built.model_path if config.tokenizer == config.model_name_or_path else config.tokenizer
        self.tokenizer = built.policy.load_tokenizer(tokenizer_path)  # None: the architecture has no own loader
        if self.tokenizer is None:  # never run a checkpoint's code, nor ask on stdin whether to
            self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path), trust_remote_code=False)
        eos_ids = (generation_eos_ids(built.model_path) or list(self.spec.eos_token_ids)
                   or [self.tokenizer.eos_token_id])
        eos_ids = [e for e in eos_ids if e is not None]
        self.stopper = StopChecker(self.tokenizer, eos_ids)
        sampler = Sampler(eos_ids, self.spec.vocab_size)
        if self.ctx.world_size > 1:  # rank 0 samples, every rank gets the tokens
            sampler = RankZeroSampler(sampler, self.ctx)
        self.loop = GenerationLoop(self.engine, sampler, self.stopper)
        self.length_limits = self._length_limits()
        check_max_length(config.max_length, self.length_limits)
        self._uids = itertools.count()
        self._destroyed = False
        if self.ctx.world_size > 1:
            before_process_group_teardown(weakref.WeakMethod(self.destroy))

    def __call__(self, prompts: Union[str, Seq[str]], **generate_kwargs: Any) -> list[Response]:
        self._check_alive()
        prompts = normalize_prompts(prompts)
        options = generation_options(generate_kwargs)
        refuse_streaming(options)
        prompt_ids = tokenize_prompts(self.tokenizer, prompts)
        seqs = self._sequences(prompt_ids, options)
        self._run(seqs)
        if not self._returns_output():
            return []
        return [self._response(prompt, seq, options.return_full_text) for prompt, seq in zip(prompts, seqs)]

    def generate_tokens(self, token_lists: Seq[Seq[int]], max_new_tokens: Union[int, Seq[int], None] = None,
                        **generate_kwargs: Any) -> list[TokenOutput]:
        """Token ids in, token ids out: no tokenizer on the way (benchmarks, servers)."""
        self._check_alive()
        if not token_lists or any(len(t) == 0 for t in token_lists):
            raise ValueError("token_lists must hold at least one non-empty list of token ids")
        per_request = max_new_tokens if isinstance(max_new_tokens, (list, tuple)) else [max_new_tokens] * len(token_lists)
        seqs = []
        for tokens, new_tokens in zip(token_lists, per_request, strict=True):
            options = generation_options({**generate_kwargs, "max_new_tokens": new_tokens})
            refuse_streaming(options)
            seqs.extend(self._sequences([list(tokens)], options))
        self._run(seqs)
        if not self._returns_output():
            return []
        return [TokenOutput(seq.generated_ids, seq.finish_reason) for seq in seqs]

    def destroy(self) -> None:
        """Frees the engine and its device memory; the pipeline cannot be used afterwards."""
        import gc

        import torch

        self._destroyed = True
        self.loop = self.engine = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _sequences(self, prompt_ids: list[list[int]], options) -> list:
        vocab = self.spec.vocab_size
        for ids in prompt_ids:
            if any(not 0 <= t < vocab for t in ids):
                raise ValueError(f"token ids must lie in [0, {vocab})")
        new_tokens = [new_tokens_for(len(ids), options, self.config.max_length, self.length_limits)
                      for ids in prompt_ids]
        return [build_sequence(next(self._uids), ids, n, options, self.engine.device)
                for ids, n in zip(prompt_ids, new_tokens)]

    def _length_limits(self) -> list[LengthLimit]:
        """What no sequence may pass: the model's positions, the engine's max_context, the KV cache."""
        engine = self.engine
        return [
            LengthLimit(self.spec.max_position_embeddings, "the model's max_position_embeddings"),
            LengthLimit(self.config.inference_engine_config.state_manager.max_context,
                        "inference_engine_config.state_manager.max_context"),
            LengthLimit(engine.capacity_tokens, f"the KV cache ({engine.kv_cache.num_blocks} blocks of "
                        f"{engine.block_size} tokens; inference_engine_config.state_manager.memory_config)"),
        ]

    def _returns_output(self) -> bool:
        """MII's rule: rank 0 returns the responses, other ranks only with all_rank_output=True (every rank
        got the same sampled tokens, so each builds the same responses itself)."""
        return self.ctx.rank == 0 or self.config.all_rank_output

    def _run(self, seqs: list) -> None:
        if self.ctx.world_size > 1:
            check_same_requests(self.ctx, repr([(s.uid, s.prompt_ids, s.max_new_tokens, s.options) for s in seqs]),
                                self.engine.device)
        show = len(seqs) >= PROGRESS_MIN_PROMPTS and self.ctx.rank == 0
        with tqdm(total=len(seqs), desc="Generating", unit="req", disable=None if show else True, leave=False) as bar:  # None: off when not a TTY
            self.loop.run(seqs, on_finish=lambda _seq: bar.update(1))

    def _response(self, prompt: str, seq, return_full_text: bool) -> Response:
        text = self.stopper.final_text(seq)
        return Response(generated_text=prompt + text if return_full_text else text,
                        prompt_length=len(seq.prompt_ids), generated_length=len(seq.generated_ids),
                        finish_reason=seq.finish_reason)

    def _check_alive(self) -> None:
        if self._destroyed:
            raise RuntimeError("this pipeline was destroyed (pipe.destroy()); create a new one with mii_core.pipeline()")


def _as_text(path: Any) -> Any:
    return os.fspath(path) if isinstance(path, os.PathLike) else path


def refuse_streaming(options) -> None:
    """The one place a pipeline call refuses ``stream=True`` (until the pipeline streams)."""
    if options.stream:
        raise ValueError("stream=True: streaming in mii_core.pipeline is not available yet; leave stream unset "
                         "(or False) to get each whole response when it finishes")


def pipeline(model_name_or_path: Optional[str] = None, model_config: Optional[dict] = None,
             all_rank_output: bool = False, **kwargs: Any) -> Pipeline:
    """Builds an in-process engine for ``model_name_or_path``; ``kwargs`` are model options."""
    if model_config is not None and not isinstance(model_config, dict):
        raise TypeError(f"model_config must be a dict of model options, got {type(model_config).__name__}")
    options = dict(model_config or {})
    if model_name_or_path is not None:
        in_config = options.get("model_name_or_path")
        if in_config is not None and _as_text(in_config) != _as_text(model_name_or_path):
            raise ValueError(f"the model path is given twice and the two disagree: {model_name_or_path!r} "
                             f"(positional) and model_config['model_name_or_path']={in_config!r}; give one")
        options["model_name_or_path"] = model_name_or_path
    options.update(kwargs, all_rank_output=all_rank_output)
    return Pipeline(validate_options(ModelConfig, options, "model options"))
