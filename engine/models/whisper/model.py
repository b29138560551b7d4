"""Whisper in plain PyTorch: stateless modules; every decoder step reads and extends an explicit DecoderState."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...kv_cache import DecoderState
from ..common import Layers, native_bf16
from ..seq2seq import CachedDecoding


@dataclass(frozen=True)
class WhisperConfig:
    n_mels: int = 80
    n_audio_ctx: int = 1500  # encoder positions: 30 s at 50 frames/s
    n_audio_state: int = 512
    n_audio_head: int = 8
    n_audio_layer: int = 6
    n_vocab: int = 51865
    n_text_ctx: int = 448  # decoder positions
    n_text_state: int = 512
    n_text_head: int = 8
    n_text_layer: int = 6
    # (layer, head) pairs whose cross-attention follows the audio (time alignment); empty = all heads of the
    # second half of the layers, as openai does when a checkpoint lists none
    alignment_heads: tuple[tuple[int, int], ...] = ()

    def resolved_alignment_heads(self) -> tuple[tuple[int, int], ...]:
        if self.alignment_heads:
            return self.alignment_heads
        half = self.n_text_layer // 2
        return tuple((layer, head) for layer in range(half, self.n_text_layer) for head in range(self.n_text_head))


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's encoder positional embedding, (length, channels)."""
    assert channels % 2 == 0
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def _split_heads(x: Tensor, n_head: int) -> Tensor:
    b, t, d = x.shape
    return x.view(b, t, n_head, d // n_head).transpose(1, 2)  # (B, H, T, Dh)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)  # (B, T, D)


class Attention(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d, bias=False)  # Whisper has no key bias
        self.value = nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _split_heads(self.key(x), self.n_head), _split_heads(self.value(x), self.n_head)

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, want_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """q (B,H,Tq,Dh), k/v (B|1,H,Tk,Dh), mask bool broadcastable to (B,H,Tq,Tk), True = may attend."""
        if k.shape[0] != q.shape[0]:
            k, v = k.expand(q.shape[0], -1, -1, -1), v.expand(q.shape[0], -1, -1, -1)
        if not want_weights:
            return self.out(_merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))), None
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        return self.out(_merge_heads(weights @ v)), weights


class EncoderBlock(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.attn = Attention(d, n_head)
        self.attn_ln = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.mlp_ln = nn.LayerNorm(d)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        h = self.attn_ln(x)
        q = _split_heads(self.attn.query(h), self.attn.n_head)
        k, v = self.attn.kv(h)
        x = x + self.attn.attend(q, k, v, mask)[0]
        mlp_out: Tensor = self.mlp(self.mlp_ln(x))
        return x + mlp_out


class AudioEncoder(nn.Module):
    positional_embedding: Tensor  # a buffer, (n_audio_ctx, d)

    def __init__(self, cfg: WhisperConfig) -> None:
        super().__init__()
        d = cfg.n_audio_state
        self.conv1 = nn.Conv1d(cfg.n_mels, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(cfg.n_audio_ctx, d), persistent=True)
        self.blocks = nn.ModuleList(EncoderBlock(d, cfg.n_audio_head) for _ in range(cfg.n_audio_layer))
        self.ln_post = nn.LayerNorm(d)

    def forward(self, mel: Tensor, valid: Tensor | None = None) -> Tensor:
        """mel (B, n_mels, n_frames) -> (B, n_frames // 2, d). Shorter than 30 s is allowed (unpadded encoder).

        `valid` (B, n_frames // 2) bool marks real frames when rows of different lengths share a batch."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, T, d)
        if x.shape[1] > self.positional_embedding.shape[0]:
            raise ValueError(f"{x.shape[1]} encoder frames exceed the model's {self.positional_embedding.shape[0]}")
        x = x + self.positional_embedding[: x.shape[1]]
        mask = None if valid is None else valid[:, None, None, :]
        for block in self.blocks:
            x = block(x, mask)
        out: Tensor = self.ln_post(x)
        return out


class DecoderBlock(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.attn = Attention(d, n_head)
        self.attn_ln = nn.LayerNorm(d)
        self.cross_attn = Attention(d, n_head)
        self.cross_attn_ln = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.mlp_ln = nn.LayerNorm(d)


class TextDecoder(nn.Module):
    def __init__(self, cfg: WhisperConfig) -> None:
        super().__init__()
        d = cfg.n_text_state
        self.n_head = cfg.n_text_head
        self.token_embedding = nn.Embedding(cfg.n_vocab, d)
        self.positional_embedding = nn.Parameter(torch.zeros(cfg.n_text_ctx, d))
        self.blocks = Layers[DecoderBlock](DecoderBlock(d, cfg.n_text_head) for _ in range(cfg.n_text_layer))
        self.ln = nn.LayerNorm(d)
        # The output projection shares the embedding's weight; as its own Linear it can be quantized alone.
        self.proj = nn.Linear(d, cfg.n_vocab, bias=False)
        self.proj.weight = self.token_embedding.weight


class Whisper(CachedDecoding, nn.Module):
    family = "whisper"

    def __init__(self, cfg: WhisperConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = AudioEncoder(cfg)
        self.decoder = TextDecoder(cfg)
        heads = cfg.resolved_alignment_heads()
        self._align_layers = sorted({layer for layer, _ in heads})
        self._align_heads = heads

    @property
    def n_text_ctx(self) -> int:
        return self.config.n_text_ctx

    @property
    def device(self) -> torch.device:
        return self.decoder.token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv1.weight.dtype

    # -- encoder -------------------------------------------------------------------------------------------
    def encode(self, mel: Tensor, valid: Tensor | None = None, *, bf16: bool = False) -> Tensor:
        """mel (B, n_mels, frames) -> encoder output (B, frames // 2, d). `bf16`: a whole trained window (30 s) is
        encoded in bfloat16 where this CPU multiplies it natively (common.native_bf16): 0.19 s instead of 0.43 s
        on two cores, for the opt-in whole-window retry (SessionConfig.window_retry_logprob). Nothing else asks:
        bf16 cost offline beam 5 about 0.85 BLEU (French 25.5 -> 24.6, Spanish 24.2 -> 23.4) and, on every
        streaming window, English 10.6 -> 11.5 % WER (benchmarks/README.md)."""
        x = mel.to(self.device, self.dtype)
        if bf16 and native_bf16() and x.device.type == "cpu" and x.shape[-1] >= 2 * self.config.n_audio_ctx:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                fast: Tensor = self.encoder(x, valid)
            return fast.float()
        out: Tensor = self.encoder(x, valid)
        return out

    # -- decoder -------------------------------------------------------------------------------------------
    def _cross_attentions(self) -> list[Attention]:
        return [block.cross_attn for block in self.decoder.blocks]

    def _decode(self, tokens: Tensor, state: DecoderState, want_alignment: bool) -> tuple[Tensor, Tensor | None]:
        self_mask, cross_mask = self._step_masks(tokens, state)
        dec = self.decoder
        n_new = tokens.shape[1]
        device = tokens.device
        pos = state.positions(n_new, device).clamp(min=0)  # padded rows have negative positions: never used
        x = dec.token_embedding(tokens) + dec.positional_embedding[pos]
        x = x.to(self.dtype)
        align: list[Tensor] = []
        for i, block in enumerate(dec.blocks):
            h = block.attn_ln(x)
            q = _split_heads(block.attn.query(h), self.decoder.n_head)
            k_new, v_new = block.attn.kv(h)
            k, v = state.extend_layer(i, k_new, v_new)
            x = x + block.attn.attend(q, k, v, self_mask)[0]

            h = block.cross_attn_ln(x)
            q = _split_heads(block.cross_attn.query(h), self.decoder.n_head)
            need = want_alignment and i in self._align_layers
            out, w = block.cross_attn.attend(q, *state.cross_cache(i), cross_mask, want_weights=need)
            x = x + out
            if need:
                assert w is not None  # asked for with want_weights
                heads = [h_ for (layer, h_) in self._align_heads if layer == i]
                align.append(w[:, heads])
            x = x + block.mlp(block.mlp_ln(x))
        state.advance(n_new)
        logits = dec.proj(dec.ln(x)).float()
        return logits, (torch.cat(align, dim=1) if want_alignment else None)
