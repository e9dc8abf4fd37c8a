"""Triton kernels for the ops of ``mii_core.model.ops``, registered for CUDA at priority 10.

One file per op; each module's docstring states what it accepts beyond the op contract (strides,
padding slots) and how it rounds, so that it matches ``mii_kernels.torch_ref`` (its test oracle).
No op synchronises with the host: decode steps can be captured in CUDA graphs. On a machine without
CUDA the kernels run under ``TRITON_INTERPRET=1`` (the tests do this), but the registry keeps the
PyTorch reference for the CPU.
"""
