"""feature-extraction as sentence embeddings: the last hidden states averaged over the query's tokens
(special tokens included, padding excluded), as sentence-transformers' mean pooling does."""
from __future__ import annotations

from typing import Any, Mapping

from mii_core.legacy.task import Prepared, QueryError
from mii_tasks_text.encoder import EncoderTask


class SentenceEmbeddings(EncoderTask):
    """``{"query": str}`` → one embedding (a list of floats); ``normalize=True`` scales it to unit length.
    ``query`` may also be token ids (a list of ints, OpenAI's ``/v1/embeddings`` input), taken as the whole
    sequence: no special tokens are added. ``return_token_count=True`` answers
    ``{"embedding": [...], "prompt_tokens": n}`` (what ``/v1/embeddings`` reports as usage)."""

    auto_class = "AutoModel"
    option_names = ("normalize", "return_token_count")

    def prepare(self, query: Mapping[str, Any], options: Mapping[str, Any]) -> Prepared:
        ids = query["query"]
        if not isinstance(ids, list):
            return super().prepare(query, options)
        if not ids or not all(type(t) is int and 0 <= t < self.tokenizer.vocab_size for t in ids):
            raise QueryError(f"the {self.task} query's token ids must be a non-empty list of ints below the "
                             f"vocabulary size {self.tokenizer.vocab_size}, got {ids!r}"[:300])
        if len(ids) > self.max_length:
            raise QueryError(f"the {self.task} query has {len(ids)} tokens; this model takes at most {self.max_length}")
        return Prepared(len(ids), {"input_ids": list(ids), "attention_mask": [1] * len(ids)}, options)

    def respond(self, prepared: Prepared, outputs: Any, row: int) -> Any:
        # rows are padded on the right, so the query's own tokens are its first `length` rows
        embedding = outputs.last_hidden_state[row, :prepared.length].mean(dim=0)
        if prepared.options.get("normalize", False):
            embedding = embedding / embedding.norm().clamp_min(1e-12)
        if prepared.options.get("return_token_count", False):
            return {"embedding": embedding.tolist(), "prompt_tokens": prepared.length}
        return embedding.tolist()
