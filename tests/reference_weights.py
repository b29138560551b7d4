"""Weights for the tiny random reference checkpoints (tests/mt_reference.py, tests/s2t2_reference.py)."""

from __future__ import annotations

import torch


@torch.no_grad()
def randomise_weights(model: torch.nn.Module, g: torch.Generator) -> None:
    """HF's init (std 0.02) gives near-uniform logits; wider weights make argmax and beam choices decisive, so
    parity failures show up as different tokens rather than as ties broken by rounding. Sinusoidal position
    tables (embed_positions) are left as they are: they are recomputed, never trained."""
    for name, p in model.named_parameters():
        if "embed_positions" in name:
            continue
        if "layer_norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif name.endswith("bias"):
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        else:
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            p.copy_(torch.randn(p.shape, generator=g) / max(1.0, fan_in) ** 0.5)
