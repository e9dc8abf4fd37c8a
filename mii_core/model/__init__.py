"""Shared model building blocks: layers, rotary, the generic decoder, op contracts, the policy base."""
