"""What every encoder-decoder family does the same way around the explicit DecoderState."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from ..kv_cache import DecoderState


class CrossAttention(Protocol):
    """What the shared code uses of one decoder layer's cross-attention module."""

    def kv(self, x: Tensor) -> tuple[Tensor, Tensor]: ...


class CachedDecoding:
    """new_state / set_audio / step / step_with_alignment for a family's nn.Module.

    The family provides `dtype`, `_cross_attentions()` (one module per decoder layer whose `kv(encoder_out)`
    gives that layer's cross keys/values, (B, H, S, Dh) each) and `_decode(tokens, state, want_alignment)`."""

    @property
    def dtype(self) -> torch.dtype:
        raise NotImplementedError

    @property
    def n_text_ctx(self) -> int:  # decoder positions
        raise NotImplementedError

    def _step_masks(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor | None, Tensor | None]:
        """Check the step fits the decoder's context; its self-attention (causal, left padding) and
        cross-attention (real audio frames) boolean masks, None where nothing needs masking."""
        assert state.cross_k is not None, "set_audio() before decoding"
        n_new = tokens.shape[1]
        if state.offset + n_new > self.n_text_ctx:
            raise ValueError(f"decoder context of {self.n_text_ctx} tokens exceeded")
        self_mask = state.self_key_mask(n_new, tokens.device)
        valid = state.cross_valid
        return self_mask, None if valid is None else valid[:, None, None, :].to(tokens.device)

    def _cross_attentions(self) -> Sequence[CrossAttention]:
        raise NotImplementedError

    def _decode(self, tokens: Tensor, state: DecoderState, want_alignment: bool) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def new_state(self, encoder_out: Tensor, valid: Tensor | None = None) -> DecoderState:
        """A fresh decoder state whose cross-attention keys/values come from `encoder_out`."""
        state = DecoderState(n_layers=len(self._cross_attentions()))
        self.set_audio(state, encoder_out, valid)
        return state

    def set_audio(self, state: DecoderState, encoder_out: Tensor, valid: Tensor | None = None) -> None:
        """Recompute only the cross-attention keys/values for a new encoder output; the token cache stays."""
        encoder_out = encoder_out.to(self.dtype)
        pairs = [attn.kv(encoder_out) for attn in self._cross_attentions()]
        state.set_cross([k for k, _ in pairs], [v for _, v in pairs], valid)

    def step(self, tokens: Tensor, state: DecoderState) -> Tensor:
        """Run `tokens` (B, T) after the cached prefix, extend the cache; logits (B, T, vocab)."""
        return self._decode(tokens, state, want_alignment=False)[0]

    def step_with_alignment(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, Tensor]:
        """Like step(), also returning the family's alignment cross-attention, (B, heads, T, S)."""
        logits, attn = self._decode(tokens, state, want_alignment=True)
        assert attn is not None
        return logits, attn
