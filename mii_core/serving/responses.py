"""``Response``s built from what a request's stream gives (the pipeline's and a replica's, alike)."""
from __future__ import annotations

from typing import Any

from mii_core.response import Response
from mii_core.serving.logprob_entries import logprob_entries, prompt_logprob_entries
from mii_core.serving.stream import SequenceOutput, StreamChunk


def final_response(tokenizer: Any, text: str, out: SequenceOutput) -> Response:
    """A sequence's whole answer: ``text`` (with or without its prompt), its token ids and logprobs."""
    return Response(text, out.prompt_length, len(out.token_ids), out.finish_reason,
                    logprobs=logprob_entries(tokenizer, out.logprobs), token_ids=list(out.token_ids),
                    prompt_logprobs=prompt_logprob_entries(tokenizer, out.prompt_logprobs),
                    prompt_token_ids=out.prompt_ids)


def piece_response(tokenizer: Any, text: str, prompt_ids: list[int], chunk: StreamChunk) -> Response:
    """One streamed piece: its ``text``, and the logprobs of the tokens it adds where they were asked (the
    prompt's, with its token ids, on the piece that carries them)."""
    scored = chunk.prompt_logprobs is not None
    return Response(text, len(prompt_ids), chunk.generated_length, chunk.finish_reason,
                    logprobs=logprob_entries(tokenizer, chunk.logprobs),
                    prompt_logprobs=prompt_logprob_entries(tokenizer, chunk.prompt_logprobs),
                    prompt_token_ids=list(prompt_ids) if scored else None)
