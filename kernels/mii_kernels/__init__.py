"""Kernel implementations for mii-core, one subpackage per backend."""
