import torch


def linear(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    # cuBLAS (CUDA) and PyTorch's CPU kernels accumulate 16-bit inputs in float32 and round once
    return torch.nn.functional.linear(x, weight, bias)
