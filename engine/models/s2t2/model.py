"""wav2vec2 encoder + Speech2Text2 decoder (HF `SpeechEncoderDecoderModel`) in plain PyTorch.

The decoder is stateless: every step reads and extends an explicit DecoderState (self-attention keys/values, the
cross-attention keys/values of the current audio, the position offset). Layer and parameter names follow the HF
checkpoint (`self_attn.k_proj`, `encoder_attn_layer_norm`, `fc1`, ...) so the loader only strips prefixes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ...kv_cache import DecoderState
from ..common import Layers
from ..seq2seq import CachedDecoding
from .wav2vec2 import AttentionProjections, Wav2Vec2Config, Wav2Vec2Encoder, activation


@dataclass(frozen=True)
class S2T2Config:
    vocab_size: int = 10224
    d_model: int = 256
    decoder_layers: int = 7
    decoder_attention_heads: int = 4
    decoder_ffn_dim: int = 2048
    activation_function: str = "relu"
    max_target_positions: int = 1024  # decoder positions (tokens per window, the start token included)
    scale_embedding: bool = True  # token embeddings are multiplied by sqrt(d_model)
    pad_token_id: int = 1  # also the sinusoidal table's padding index: real positions start at pad + 1


def sinusoidal_table(n_positions: int, dim: int, padding_idx: int) -> Tensor:
    """fairseq/tensor2tensor sinusoids (sin half, then cos half), row `padding_idx` zeroed, (n_positions, dim)."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    inv = torch.exp(torch.arange(half, dtype=torch.int64).float() * -step)
    angles = torch.arange(n_positions, dtype=torch.int64).float().unsqueeze(1) * inv.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(n_positions, 1)], dim=1)
    table[padding_idx] = 0
    return table


def fairseq_positions(tokens: Tensor, offset: int, left_pad: Tensor | None, pad: int) -> Tensor:
    """Rows of a sinusoidal_table for `tokens` (B, T) after `offset` cached tokens, as fairseq numbers them: real
    tokens count up from pad + 1 + offset, pad tokens take the zero row `pad` and are not counted.

    A batched row's left-padding slots (`left_pad` (B,), whatever token fills them) are not counted either, so
    the row's first real token is at pad + 1, as it would be alone."""
    real = tokens.ne(pad)
    base = torch.full((1, 1), offset, dtype=torch.long, device=tokens.device)
    if left_pad is not None:
        left = left_pad.to(tokens.device).view(-1, 1)  # (B, 1)
        slots = torch.arange(offset, offset + tokens.shape[1], device=tokens.device)[None, :]
        real = real & (slots >= left)
        base = (base - left).clamp(min=0)
    real = real.to(torch.long)
    return (torch.cumsum(real, dim=1) + base) * real + pad


class Attention(AttentionProjections):
    """The decoders' attention, in steps: keys/values (cached by the caller), the query, then attend."""

    def __init__(self, d: int, n_head: int) -> None:
        super().__init__(d, n_head)
        self.scaling = (d // n_head) ** -0.5

    def kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def query(self, x: Tensor) -> Tensor:
        # scaled before the product, as the reference does (keeps fp32 results bit-close to it)
        return self.split_heads(self.q_proj(x) * self.scaling)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """q (B,H,Tq,Dh), k/v (B|1,H,Tk,Dh), bool mask broadcastable to (B,H,Tq,Tk) (True = may attend).

        Returns the output (B, Tq, D) and the attention weights (B, H, Tq, Tk): written out rather than fused
        because the weights give the alignment, and the decoder is small."""
        scores = q @ k.transpose(-1, -2)  # (B, H, Tq, Tk)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        out = weights @ v  # (B, H, Tq, Dh)
        b, h, t, dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * dh)), weights


class DecoderLayer(nn.Module):
    """Post-LN: attention, residual, LayerNorm — three times (self, cross, feed-forward)."""

    def __init__(self, cfg: S2T2Config) -> None:
        super().__init__()
        d = cfg.d_model
        self.self_attn = Attention(d, cfg.decoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = Attention(d, cfg.decoder_attention_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.decoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.decoder_ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = activation(cfg.activation_function)


class S2T2Decoder(nn.Module):
    embed_positions: Tensor  # a buffer, (pad + 1 + max_target_positions, d_model)

    def __init__(self, cfg: S2T2Config) -> None:
        super().__init__()
        self.config = cfg
        self.embed_scale = math.sqrt(cfg.d_model) if cfg.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # rows 0..pad are never used by real tokens (pad itself maps to the zero row); the reference allocates
        # max_target_positions + 2 rows, enough for pad_token_id <= 1
        n_rows = cfg.pad_token_id + 1 + cfg.max_target_positions
        self.register_buffer(
            "embed_positions", sinusoidal_table(n_rows, cfg.d_model, cfg.pad_token_id), persistent=False
        )
        self.layers = Layers[DecoderLayer](DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)


class S2T2(CachedDecoding, nn.Module):
    """SpeechEncoderDecoder: wav2vec2 -> optional projection to the decoder width -> Speech2Text2 decoder.

    Alignment (step_with_alignment): S2T2 has no curated alignment heads (Whisper's `alignment_heads`); the last
    layer's cross-attention averaged over its heads, (B, 1, T, S), is the sharpest generic signal of where in the
    audio a token comes from."""

    family = "s2t2"

    def __init__(self, encoder_cfg: Wav2Vec2Config, decoder_cfg: S2T2Config, enc_to_dec: bool | None = None) -> None:
        super().__init__()
        self.encoder_config = encoder_cfg
        self.config = decoder_cfg
        self.encoder = Wav2Vec2Encoder(encoder_cfg)
        if enc_to_dec is None:
            enc_to_dec = encoder_cfg.out_size != decoder_cfg.d_model
        # the reference projects from hidden_size even when an adapter changes the width; keep its shape
        self.enc_to_dec_proj = nn.Linear(encoder_cfg.hidden_size, decoder_cfg.d_model) if enc_to_dec else None
        self.decoder = S2T2Decoder(decoder_cfg)

    @property
    def n_text_ctx(self) -> int:
        return self.config.max_target_positions

    @property
    def device(self) -> torch.device:
        return self.encoder.feature_projection.projection.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.feature_projection.projection.weight.dtype

    # -- encoder -------------------------------------------------------------------------------------------
    def encode(self, samples: Tensor, sample_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Normalised samples (B, N) -> encoder output in the decoder's width (B, S, d_model) and its (B, S)
        validity mask (None when `sample_mask` is None: every frame is real)."""
        samples = samples.to(self.device, self.dtype)
        if sample_mask is not None:
            sample_mask = sample_mask.to(self.device)
        out, valid = self.encoder(samples, sample_mask)
        if self.enc_to_dec_proj is not None:
            out = self.enc_to_dec_proj(out)
        return out, valid

    # -- decoder -------------------------------------------------------------------------------------------
    def _cross_attentions(self) -> list[Attention]:
        return [layer.encoder_attn for layer in self.decoder.layers]

    def positions(self, tokens: Tensor, state: DecoderState) -> Tensor:
        """Rows of the sinusoidal table for `tokens` (B, T) after the cached prefix, as the reference numbers them
        (fairseq_positions)."""
        return fairseq_positions(tokens, state.offset, state.left_pad, self.config.pad_token_id)

    def _decode(self, tokens: Tensor, state: DecoderState, want_alignment: bool) -> tuple[Tensor, Tensor | None]:
        self_mask, cross_mask = self._step_masks(tokens, state)
        dec = self.decoder
        n_new = tokens.shape[1]
        x = dec.embed_tokens(tokens) * dec.embed_scale + dec.embed_positions[self.positions(tokens, state)]
        x = x.to(self.dtype)
        align: Tensor | None = None
        last = len(dec.layers) - 1
        for i, layer in enumerate(dec.layers):
            q = layer.self_attn.query(x)
            k_new, v_new = layer.self_attn.kv(x)
            k, v = state.extend_layer(i, k_new, v_new)
            x = layer.self_attn_layer_norm(x + layer.self_attn.attend(q, k, v, self_mask)[0])

            q = layer.encoder_attn.query(x)
            out, w = layer.encoder_attn.attend(q, *state.cross_cache(i), cross_mask)
            x = layer.encoder_attn_layer_norm(x + out)
            if want_alignment and i == last:
                align = w.mean(dim=1, keepdim=True)  # (B, 1, T, S)

            x = layer.final_layer_norm(x + layer.fc2(layer.act(layer.fc1(x))))
        state.advance(n_new)
        return dec.lm_head(x).float(), align
