"""feature-extraction as sentence embeddings: the last hidden states averaged over the query's tokens
(special tokens included, padding excluded), as sentence-transformers' mean pooling does."""
from __future__ import annotations

from typing import Any

from mii_core.legacy.task import Prepared
from mii_tasks_text.encoder import EncoderTask


class SentenceEmbeddings(EncoderTask):
    """``{"query": str}`` → one embedding (a list of floats); ``normalize=True`` scales it to unit length."""

    auto_class = "AutoModel"
    option_names = ("normalize",)

    def respond(self, prepared: Prepared, outputs: Any, row: int) -> Any:
        # rows are padded on the right, so the query's own tokens are its first `length` rows
        embedding = outputs.last_hidden_state[row, :prepared.length].float().mean(dim=0).cpu()
        if prepared.options.get("normalize", False):
            embedding = embedding / embedding.norm().clamp_min(1e-12)
        return embedding.tolist()
