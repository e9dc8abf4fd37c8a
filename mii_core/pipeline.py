"""``mii_core.pipeline``: a non-persistent engine in this process."""
from __future__ import annotations

import itertools
import os
import weakref
from collections import deque
from typing import Any, Callable, Iterator, Optional, Sequence as Seq, Union

from tqdm.auto import tqdm

from mii_core.config import ModelConfig, validate_options
from mii_core.distributed.process_group import before_process_group_teardown
from mii_core.distributed.step_sync import check_same_requests
from mii_core.engine.builder import build_engine
from mii_core.engine.generation_loop import GenerationLoop
from mii_core.loading.checkpoint import generation_eos_ids
from mii_core.requests import (LengthLimit, build_sequence, check_max_length, check_option_token_ids,
                               generation_options, new_tokens_for, normalize_prompts, prompt_char_ceiling,
                               sequence_ceiling, tokenize_prompts, truncate_prompt)
from mii_core.response import Response, TokenOutput
from mii_core.sampling.bad_words import bad_words_token_ids
from mii_core.sampling.grammar import LazyGrammarCompiler
from mii_core.sampling.rank_zero import RankZeroSampler
from mii_core.sampling.sampler import Sampler
from mii_core.sampling.stopping import StopChecker
from mii_core.serving.lockstep import LockstepLoop, follow
from mii_core.serving.responses import final_response, piece_response
from mii_core.serving.service import EngineService
from mii_core.serving.stream import Detokenizer, RequestStream, SequenceOutput

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
        if config.chat_template is not None:  # the model option replaces (or supplies) the tokenizer's
            self.tokenizer.chat_template = config.chat_template
        eos_ids = (generation_eos_ids(built.model_path) or list(self.spec.eos_token_ids)
                   or [self.tokenizer.eos_token_id])
        eos_ids = [e for e in eos_ids if e is not None]
        self.stopper = StopChecker(self.tokenizer, eos_ids)
        self._grammars = LazyGrammarCompiler(self.tokenizer, self.spec.vocab_size, eos_ids)
        sampler = Sampler(eos_ids, self.spec.vocab_size)
        if self.ctx.world_size > 1:  # rank 0 samples, every rank gets the tokens
            sampler = RankZeroSampler(sampler, self.ctx)
        self.loop = GenerationLoop(self.engine, sampler, self.stopper, overlap=self._async_scheduling(),
                                   isolate_failures=self.ctx.world_size == 1)
        self.length_limits = self._length_limits()
        check_max_length(config.max_length, self.length_limits)
        self.max_prompt_chars = prompt_char_ceiling(self.tokenizer, sequence_ceiling(self.length_limits))
        # One loop thread owns the engine, so any number of threads may call this pipeline at once. Under
        # tensor parallelism every rank runs the same steps in lockstep from the caller's thread instead.
        self.service = EngineService(self.loop) if self.ctx.world_size == 1 else None
        self.detokenizer = Detokenizer(self.tokenizer, self.stopper)
        self._uids = itertools.count()
        self._destroyed = False
        if self.ctx.world_size > 1:
            before_process_group_teardown(weakref.WeakMethod(self.destroy))

    def _async_scheduling(self) -> bool:
        wanted = self.config.inference_engine_config.async_scheduling
        if wanted and self.ctx.world_size > 1:
            raise ValueError("inference_engine_config.async_scheduling needs one rank: under tensor parallelism "
                             "rank 0 shares each step's tokens with the others; leave it unset")
        return wanted if wanted is not None else (self.engine.device.type == "cuda" and self.ctx.world_size == 1)

    def __call__(self, prompts: Union[str, Seq[str]], **generate_kwargs: Any) -> Union[list[Response], Iterator[Response]]:
        """Generates for each prompt. ``stream=True`` returns an iterator of incremental Responses:
        each prompt's pieces in turn (all prompts are generated together), the last piece of each
        with its finish_reason, the others with "none"; a prompt's pieces add up to its text."""
        self._check_alive()
        prompts = normalize_prompts(prompts)
        options = generation_options(generate_kwargs)
        if self.service is None:
            return self._call_in_lockstep(prompts, options)
        request = self.submit(prompts, options, stream_tokens=options.stream)
        if options.stream:
            return self._stream(prompts, request, options.return_full_text)
        outputs = self._wait(request)
        return [self._response(prompt, out, options.return_full_text) for prompt, out in zip(prompts, outputs)]

    def submit(self, prompts: Optional[list[str]], options, prompt_ids: Optional[list[list[int]]] = None,
               stream_tokens: bool = True) -> RequestStream:
        """Queues one request (checked here, all-or-nothing) on the engine service; for servers.
        ``options``: one GenerationConfig for all prompts, or a list with one per prompt."""
        self._check_alive()
        if prompt_ids is None:
            prompt_ids = tokenize_prompts(self.tokenizer, prompts, self.max_prompt_chars)
        per_prompt = options if isinstance(options, list) else [options] * len(prompt_ids)
        seqs = [seq for ids, opts in zip(prompt_ids, per_prompt, strict=True) for seq in self._sequences([ids], opts)]
        return self.service.submit(RequestStream(seqs, self.detokenizer, stream_tokens))

    def _call_in_lockstep(self, prompts: list[str], options) -> list[Response]:
        if options.stream:
            raise ValueError("stream=True is not available under tensor parallelism yet; leave stream unset")
        seqs = self._sequences(tokenize_prompts(self.tokenizer, prompts, self.max_prompt_chars), options)
        self._run(seqs)
        if not self._returns_output():
            return []
        outputs = [SequenceOutput(list(seq.generated_ids), self.detokenizer.final_text(seq), seq.finish_reason,
                                  len(seq.prompt_ids), list(seq.logprobs) if options.logprobs is not None else None,
                                  list(seq.prompt_ids),
                                  list(seq.prompt_logprobs) if options.prompt_logprobs is not None else None)
                   for seq in seqs]
        return [self._response(prompt, out, options.return_full_text) for prompt, out in zip(prompts, outputs)]

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
            seqs.extend(self._sequences([list(tokens)], options))
        if self.service is None:
            self._run(seqs)
            if not self._returns_output():
                return []
            return [TokenOutput(seq.generated_ids, seq.finish_reason,
                                list(seq.logprobs) if seq.options.logprobs is not None else None) for seq in seqs]
        outputs = self._wait(self.service.submit(RequestStream(seqs, self.detokenizer, stream_tokens=False)))
        return [TokenOutput(out.token_ids, out.finish_reason, out.logprobs) for out in outputs]

    # ---- serving this pipeline (a deployment's replica) ----
    def lead_followers(self, explain_stop: Callable[[Exception], str]) -> None:
        """Tensor parallel, rank 0 of a server: requests go through an engine service whose loop drives the
        other ranks' steps (they run :meth:`follow_leader`). ``explain_stop`` words why it stopped (a rank lost)."""
        if self.ctx.world_size == 1 or self.ctx.rank != 0:
            raise ValueError(f"lead_followers is for rank 0 of several ranks; this is rank {self.ctx.rank} of "
                             f"{self.ctx.world_size}")
        self.service = EngineService(LockstepLoop(self.loop, self.ctx), lockstep=True, explain_stop=explain_stop)

    def follow_leader(self) -> None:
        """Tensor parallel, ranks > 0 of a server: replays rank 0's steps until it stops them; raises when a
        rank is lost."""
        device = self.engine.device
        follow(self.loop, self.ctx, lambda uid, ids, n, options: build_sequence(uid, ids, n, options, device))

    def snapshot(self) -> dict[str, Any]:
        """The engine service's counters and occupancy (for a server's health answer)."""
        return self.service.snapshot()

    def service_failure(self) -> Optional[Exception]:
        """The error that stopped the engine service (under tensor parallelism: a rank lost); None while it serves."""
        return self.service.fatal_error if self.service.stopped.is_set() else None

    def stop_service(self) -> None:
        """Stops the engine service (requests still in it fail; a leader stops its followers too)."""
        self.service.close()

    def destroy(self) -> None:
        """Frees the engine and its device memory; the pipeline cannot be used afterwards."""
        import gc

        import torch

        self._destroyed = True
        if self.service is not None:
            self.service.close()
        self.service = self.loop = self.engine = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _sequences(self, prompt_ids: list[list[int]], options) -> list:
        vocab = self.spec.vocab_size
        for i, ids in enumerate(prompt_ids):
            if any(not 0 <= t < vocab for t in ids):
                raise ValueError(f"prompt {i}: token ids must lie in [0, {vocab}) (the model's vocabulary)")
        check_option_token_ids(options, vocab)
        prompt_ids = [truncate_prompt(ids, options, sequence_ceiling(self.length_limits)) for ids in prompt_ids]
        new_tokens = [new_tokens_for(len(ids), options, self.config.max_length, self.length_limits)
                      for ids in prompt_ids]
        bad_words = [w for w in bad_words_token_ids(self.tokenizer, options.bad_words) if all(t < vocab for t in w)]
        seqs = [build_sequence(next(self._uids), ids, n, options, self.engine.device, bad_words)
                for ids, n in zip(prompt_ids, new_tokens)]
        for seq in seqs:  # compiled here, on the caller's thread, never on the engine's loop
            seq.grammar = self._grammars.state_for(options)
        return seqs

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

    def _wait(self, request: RequestStream) -> list[SequenceOutput]:
        show = len(request.seqs) >= PROGRESS_MIN_PROMPTS
        with tqdm(total=len(request.seqs), desc="Generating", unit="req", disable=None if show else True, leave=False) as bar:  # None: off when not a TTY
            try:
                return request.result(on_finish=lambda _index: bar.update(1))
            except BaseException:
                request.cancel()  # e.g. Ctrl-C while waiting: free the engine for the next call
                raise

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

    def _stream(self, prompts: list[str], request: RequestStream, return_full_text: bool) -> Iterator[Response]:
        """Each prompt's pieces in prompt order; pieces of later prompts wait in a buffer meanwhile."""
        pending: list[deque[Response]] = [deque() for _ in prompts]
        prefixed = [not return_full_text] * len(prompts)
        current = 0
        try:
            for chunk in request.chunks():
                if chunk.text == "" and chunk.finish_reason == "none" and not chunk.logprobs \
                        and chunk.prompt_logprobs is None:
                    continue
                text = chunk.text
                if not prefixed[chunk.index]:
                    text, prefixed[chunk.index] = prompts[chunk.index] + text, True
                pending[chunk.index].append(piece_response(self.tokenizer, text, request.seqs[chunk.index].prompt_ids,
                                                           chunk))
                while current < len(prompts) and pending[current]:
                    piece = pending[current].popleft()
                    yield piece
                    if piece.finish_reason != "none":
                        current += 1
        finally:
            if not request.done:
                request.cancel()  # the caller stopped reading: free the sequences

    def _response(self, prompt: str, out: SequenceOutput, return_full_text: bool) -> Response:
        return final_response(self.tokenizer, prompt + out.text if return_full_text else out.text, out)

    def _check_alive(self) -> None:
        if self._destroyed:
            raise RuntimeError("this pipeline was destroyed (pipe.destroy()); create a new one with mii_core.pipeline()")


def _as_text(path: Any) -> Any:
    return os.fspath(path) if isinstance(path, os.PathLike) else path


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
