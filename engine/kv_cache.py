"""Per-stream decoder state: self-attention keys/values, cross-attention keys/values and the position offset.

The offset and the cache change together, only through these methods: the next token's position is always the
number of cached tokens (minus any left padding a batched row carries), never guessed from a tensor's shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class DecoderState:
    n_layers: int
    # self-attention cache per layer: (B, H, T, Dh) each; None before the first step
    self_k: list[Tensor | None] = field(default_factory=list)
    self_v: list[Tensor | None] = field(default_factory=list)
    # cross-attention keys/values per layer, (B or 1, H, S, Dh); computed once per encoder output
    cross_k: list[Tensor] | None = None
    cross_v: list[Tensor] | None = None
    # (B or 1, S) True where the encoder frame is real audio; None when every frame is real
    cross_valid: Tensor | None = None
    # number of cached tokens == position of the next token (for rows without left padding)
    offset: int = 0
    # (B,) count of left-padding slots per row, used when sessions of different lengths share a batch
    left_pad: Tensor | None = None

    def __post_init__(self) -> None:
        if not self.self_k:
            self.self_k = [None] * self.n_layers
            self.self_v = [None] * self.n_layers

    # -- reading -------------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        for k in self.self_k:
            if k is not None:
                return k.shape[0]
        if self.cross_k is not None:
            return self.cross_k[0].shape[0]
        return 1

    @property
    def device(self) -> torch.device:
        """Where the cache lives (the encoder output's device once one is installed)."""
        return self._device()

    @property
    def n_frames(self) -> int:
        """Encoder frames in the cross-attention cache (a batch's padding included)."""
        return self.cross_cache(0)[0].shape[2]

    def self_cache(self, layer: int) -> tuple[Tensor, Tensor]:
        """One layer's cached self-attention keys and values, (B, H, T, Dh) each; the cache must not be empty."""
        k, v = self.self_k[layer], self.self_v[layer]
        assert k is not None and v is not None, "empty self-attention cache"
        return k, v

    def cross_cache(self, layer: int) -> tuple[Tensor, Tensor]:
        """One layer's cross-attention keys and values, (B or 1, H, S, Dh) each; set_cross must have run."""
        assert self.cross_k is not None and self.cross_v is not None, "no encoder output installed (set_cross)"
        return self.cross_k[layer], self.cross_v[layer]

    def positions(self, n_new: int, device: torch.device | None = None) -> Tensor:
        """Positions of the next `n_new` tokens, (B or 1, n_new)."""
        pos = torch.arange(self.offset, self.offset + n_new, device=device).unsqueeze(0)
        if self.left_pad is not None:
            pos = pos - self.left_pad.to(pos.device).unsqueeze(1)
        return pos

    def self_key_mask(self, n_new: int, device: torch.device | None = None) -> Tensor | None:
        """Boolean attention mask (B or 1, 1, n_new, offset + n_new): causal, and hiding left padding.

        None when a plain causal mask is not needed (a single new token over an unpadded cache)."""
        total = self.offset + n_new
        if n_new == 1 and self.left_pad is None:
            return None
        q_pos = torch.arange(self.offset, total, device=device).unsqueeze(1)  # (n_new, 1)
        k_pos = torch.arange(total, device=device).unsqueeze(0)  # (1, total)
        mask = (k_pos <= q_pos).unsqueeze(0)  # (1, n_new, total)
        if self.left_pad is not None:
            mask = mask & (k_pos.unsqueeze(0) >= self.left_pad.to(mask.device).view(-1, 1, 1))
        return mask.unsqueeze(1)

    # -- extending: called by the decoder only -------------------------------------------------------------
    def extend_layer(self, layer: int, k_new: Tensor, v_new: Tensor) -> tuple[Tensor, Tensor]:
        """Append this step's keys/values for one layer and return the whole cache of that layer."""
        k_old, v_old = self.self_k[layer], self.self_v[layer]
        if k_old is None:
            k, v = k_new, v_new
        else:
            assert v_old is not None  # keys and values are cached together
            k, v = torch.cat([k_old, k_new], dim=2), torch.cat([v_old, v_new], dim=2)
        self.self_k[layer], self.self_v[layer] = k, v
        return k, v

    def advance(self, n_new: int) -> None:
        """Called once per step after every layer extended its cache: the one place the offset grows."""
        self.offset += n_new
        k0 = self.self_k[0]
        assert k0 is not None and k0.shape[2] == self.offset, "cache length and offset disagree"

    def set_cross(self, keys: list[Tensor], values: list[Tensor], valid: Tensor | None = None) -> None:
        """Install cross-attention keys/values computed from a (new) encoder output; the self cache is kept."""
        self.cross_k, self.cross_v, self.cross_valid = keys, values, valid

    # -- editing -------------------------------------------------------------------------------------------
    def rewind(self, n_tokens: int) -> None:
        """Forget the last `n_tokens` cached tokens: the cache and the offset shrink together."""
        if n_tokens < 0 or n_tokens > self.offset:
            raise ValueError(f"cannot rewind {n_tokens} tokens from a cache of {self.offset}")
        if n_tokens == 0:
            return
        keep = self.offset - n_tokens
        for i in range(self.n_layers):
            k, v = self.self_k[i], self.self_v[i]
            if k is not None:
                assert v is not None  # keys and values are cached together
                self.self_k[i] = k[:, :, :keep] if keep else None
                self.self_v[i] = v[:, :, :keep] if keep else None
        self.offset = keep

    def truncate(self, n_keep: int) -> None:
        """Keep only the first `n_keep` tokens."""
        self.rewind(self.offset - n_keep)

    def reorder(self, indices: Tensor) -> None:
        """Select/reorder batch rows (beam search): row i becomes old row indices[i]."""
        for i in range(self.n_layers):
            k, v = self.self_k[i], self.self_v[i]
            if k is not None:
                assert v is not None  # keys and values are cached together
                self.self_k[i] = k.index_select(0, indices)
                self.self_v[i] = v.index_select(0, indices)
        if self.cross_k is not None and self.cross_k[0].shape[0] > 1:
            assert self.cross_v is not None  # set together by set_cross
            self.cross_k = [k.index_select(0, indices) for k in self.cross_k]
            self.cross_v = [v.index_select(0, indices) for v in self.cross_v]
            if self.cross_valid is not None and self.cross_valid.shape[0] > 1:
                self.cross_valid = self.cross_valid.index_select(0, indices)
        if self.left_pad is not None:
            self.left_pad = self.left_pad.index_select(0, indices.to(self.left_pad.device))

    def repeat(self, n: int) -> None:
        """Turn a single-row state into `n` identical rows (the start of a beam search)."""
        assert self.batch_size == 1
        self.reorder(torch.zeros(n, dtype=torch.long, device=self._device()))

    def reset(self) -> None:
        """Drop every cached token (the cross-attention keys/values stay: they belong to the audio)."""
        self.self_k = [None] * self.n_layers
        self.self_v = [None] * self.n_layers
        self.offset = 0
        self.left_pad = None

    def clone(self) -> DecoderState:
        """A copy that can be extended without touching this one (tensors are shared until replaced)."""
        return DecoderState(
            n_layers=self.n_layers,
            self_k=list(self.self_k),
            self_v=list(self.self_v),
            cross_k=self.cross_k,
            cross_v=self.cross_v,
            cross_valid=self.cross_valid,
            offset=self.offset,
            left_pad=self.left_pad,
        )

    def _device(self) -> torch.device:
        if self.cross_k is not None:
            return self.cross_k[0].device
        for k in self.self_k:
            if k is not None:
                return k.device
        return torch.device("cpu")
