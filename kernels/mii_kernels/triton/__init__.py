"""Triton kernels for CUDA devices; each op's PyTorch reference lives in ``mii_kernels.torch_ref``."""
