"""fill-mask: the most likely tokens at each mask, as HF's ``pipeline("fill-mask")`` reports them."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from mii_core.legacy.task import Prepared, QueryError
from mii_tasks_text.encoder import EncoderTask


class FillMask(EncoderTask):
    auto_class = "AutoModelForMaskedLM"
    option_names = ("top_k",)

    def prepare(self, query: Mapping[str, Any], options: Mapping[str, Any]) -> Prepared:
        prepared = super().prepare(query, options)
        if self.tokenizer.mask_token_id not in prepared.data["input_ids"]:
            raise QueryError(f"the fill-mask query has no mask token {self.tokenizer.mask_token!r}: "
                             f"{query['query']!r}")
        return prepared

    def host_outputs(self, outputs: Any, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Each batch row's logits at its masks ([masks, vocabulary], float32, on the host): only the masks'
        rows leave the device (a row of logits per token is vocabulary-sized), in one transfer."""
        is_mask = batch["input_ids"] == self.tokenizer.mask_token_id
        at_masks = outputs.logits[is_mask].float().cpu()  # row by row, each row's masks in order
        return list(at_masks.split(is_mask.sum(dim=1).tolist()))

    def respond(self, prepared: Prepared, outputs: Any, row: int) -> Any:
        input_ids = torch.tensor(prepared.data["input_ids"])
        masked = torch.nonzero(input_ids == self.tokenizer.mask_token_id).squeeze(-1)
        probs = outputs[row].softmax(dim=-1)
        values, predictions = probs.topk(int(prepared.options.get("top_k", 5)))
        single_mask = len(masked) == 1
        result = [[self._proposal(input_ids, int(position), float(v), int(p), single_mask)
                   for v, p in zip(vs.tolist(), ps.tolist())]
                  for position, vs, ps in zip(masked, values, predictions)]
        return result[0] if single_mask else result

    def _proposal(self, input_ids: torch.Tensor, position: int, score: float, token: int, single_mask: bool) -> dict:
        tokens = input_ids.clone()
        tokens[position] = token
        tokens = tokens[tokens != self.tokenizer.pad_token_id]  # a predicted pad is dropped, as HF does
        # with several masks the other masks stay visible, so special tokens are kept (as HF does)
        sequence = self.tokenizer.decode(tokens.tolist(), skip_special_tokens=single_mask)
        return {"score": score, "token": token, "token_str": self.tokenizer.decode([token]), "sequence": sequence}
