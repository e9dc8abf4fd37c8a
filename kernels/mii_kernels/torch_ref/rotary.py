import torch


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int) -> torch.Tensor:
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    half = rotary_dim // 2
    rotated_half = torch.cat((-rot[..., half:], rot[..., :half]), dim=-1)
    out = rot * cos + rotated_half * sin
    return torch.cat((out, rest), dim=-1) if rest.numel() else out


def rotary_embedding(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     rotary_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    cos, sin = cos[:, None, :], sin[:, None, :]  # broadcast over heads
    return _rotate(q, cos, sin, rotary_dim), _rotate(k, cos, sin, rotary_dim)
