"""Turning logits into tokens (greedy, top-k, top-p, temperature, seeds) and deciding when to stop."""
from mii_core.sampling.filters import filter_logits
from mii_core.sampling.sampler import Sampler

__all__ = ["filter_logits", "Sampler"]
