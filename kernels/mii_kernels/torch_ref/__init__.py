"""PyTorch reference implementation of every op in ``mii_core.model.ops``: correct on any device."""
