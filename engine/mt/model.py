"""The text encoder-decoder behind both MT families (MarianMT and M2M100 / NLLB-200), in plain PyTorch.

Both are fairseq/BART-style Transformers; they differ only in a few switches, which `MTConfig` names:

| switch            | Marian (opus-mt)                 | M2M100 / NLLB-200                                 |
|-------------------|----------------------------------|---------------------------------------------------|
| `pre_ln`          | False: LayerNorm after residuals | True: before each block, plus a final LayerNorm   |
| `positions`       | "marian": sin | cos of 0, 1, ... | "fairseq": pad-skipping, counted from pad + 1     |
| `logits_bias`     | True (final_logits_bias)         | False                                             |
| `activation`      | swish                            | relu                                              |

The decoder is stateless like the speech decoders: every step reads and extends an explicit DecoderState (self
keys/values, the source sentence's cross keys/values, the position offset), so a translation can be extended,
rewound (a wait-k or re-translation policy takes back its last tokens) and reordered (beam search) without
recomputation. Parameter names follow the HF checkpoints (`self_attn.k_proj`, `encoder_attn_layer_norm`, `fc1`, ...),
so the loaders only strip prefixes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import torch
from torch import Tensor, nn

from ..kv_cache import DecoderState
from ..models.common import Layers
from ..models.s2t2.model import Attention, fairseq_positions, sinusoidal_table
from ..models.s2t2.wav2vec2 import activation
from ..models.seq2seq import CachedDecoding

Family = Literal["marian", "m2m100"]


@dataclass(frozen=True)
class MTConfig:
    family: Family
    vocab_size: int  # source (encoder) vocabulary
    decoder_vocab_size: int  # target vocabulary (== vocab_size unless a Marian model has separate vocabularies)
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    activation_function: str
    max_position_embeddings: int  # longest source sentence / translation, in tokens (start token included)
    pad_token_id: int
    scale_embedding: bool  # token embeddings are multiplied by sqrt(d_model)
    pre_ln: bool  # M2M100: LayerNorm before each block and after the last layer; Marian: after each residual
    positions: Literal["marian", "fairseq"]
    logits_bias: bool  # Marian's final_logits_bias (a (1, V) buffer added to the logits)
    shared_embeddings: bool = True  # encoder and decoder read one embedding table
    layer_norm_eps: float = 1e-5


def marian_table(n_positions: int, dim: int) -> Tensor:
    """Marian's sinusoids: sin of every frequency in the first half, cos in the second, position 0 first, (n, dim).

    Computed in float64 and rounded once, as the reference does (numpy), so tables agree to the last bit."""
    pos = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(dim, dtype=torch.float64)
    angles = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)  # (n, dim)
    sentinel = (dim + 1) // 2
    table = torch.empty(n_positions, dim, dtype=torch.float64)
    table[:, :sentinel] = torch.sin(angles[:, 0::2])
    table[:, sentinel:] = torch.cos(angles[:, 1::2])
    return table.float()


class _Layer(nn.Module):
    """What encoder and decoder layers share: self-attention and the feed-forward block, each with its LayerNorm
    (before the block and its residual with `pre_ln`, after them otherwise)."""

    def __init__(self, cfg: MTConfig, n_heads: int, ffn_dim: int) -> None:
        super().__init__()
        d = cfg.d_model
        self.pre_ln = cfg.pre_ln
        self.self_attn = Attention(d, n_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(d, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d)
        self.final_layer_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.act = activation(cfg.activation_function)

    def feed_forward(self, x: Tensor) -> Tensor:
        """The feed-forward block with its residual and LayerNorm, (B, T, D) -> (B, T, D)."""
        h = self.final_layer_norm(x) if self.pre_ln else x
        x = x + self.fc2(self.act(self.fc1(h)))
        out: Tensor = x if self.pre_ln else self.final_layer_norm(x)
        return out


class EncoderLayer(_Layer):
    def __init__(self, cfg: MTConfig) -> None:
        super().__init__(cfg, cfg.encoder_attention_heads, cfg.encoder_ffn_dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x (B, S, D); mask (B, 1, 1, S) True where the source token is real."""
        attn = self.self_attn
        h = self.self_attn_layer_norm(x) if self.pre_ln else x
        k, v = attn.kv(h)
        x = x + attn.attend(attn.query(h), k, v, mask)[0]
        if not self.pre_ln:
            x = self.self_attn_layer_norm(x)
        return self.feed_forward(x)


class DecoderLayer(_Layer):
    def __init__(self, cfg: MTConfig) -> None:
        super().__init__(cfg, cfg.decoder_attention_heads, cfg.decoder_ffn_dim)
        self.encoder_attn = Attention(cfg.d_model, cfg.decoder_attention_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)


L = TypeVar("L", bound=_Layer)


class _Stack(nn.Module, Generic[L]):
    """Token embedding, layers and (pre_ln) a final LayerNorm: the encoder, and the decoder before its head."""

    def __init__(self, cfg: MTConfig, vocab_size: int, layers: Iterable[L]) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, cfg.d_model)
        self.layers = Layers[L](layers)
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.pre_ln else None


class Encoder(_Stack[EncoderLayer]):
    def __init__(self, cfg: MTConfig) -> None:
        super().__init__(cfg, cfg.vocab_size, (EncoderLayer(cfg) for _ in range(cfg.encoder_layers)))


class Decoder(_Stack[DecoderLayer]):
    def __init__(self, cfg: MTConfig) -> None:
        super().__init__(cfg, cfg.decoder_vocab_size, (DecoderLayer(cfg) for _ in range(cfg.decoder_layers)))
        self.lm_head = nn.Linear(cfg.d_model, cfg.decoder_vocab_size, bias=False)


class MTModel(CachedDecoding, nn.Module):
    """encode(source ids) -> (B, S, D); new_state(encoder_out, valid) -> DecoderState; step(tokens, state) -> logits."""

    position_table: Tensor  # a buffer, (rows, d_model): the family's sinusoids
    final_logits_bias: Tensor  # a buffer, (1, decoder_vocab_size); zeros unless `logits_bias`

    def __init__(self, cfg: MTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_scale = math.sqrt(cfg.d_model) if cfg.scale_embedding else 1.0
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.positions == "marian":
            table = marian_table(cfg.max_position_embeddings, cfg.d_model)
        else:  # fairseq numbering: row pad is zero, real tokens count from pad + 1
            table = sinusoidal_table(cfg.pad_token_id + 1 + cfg.max_position_embeddings, cfg.d_model, cfg.pad_token_id)
        self.register_buffer("position_table", table, persistent=False)
        self.register_buffer("final_logits_bias", torch.zeros(1, cfg.decoder_vocab_size), persistent=cfg.logits_bias)

    @property
    def n_text_ctx(self) -> int:
        return self.config.max_position_embeddings

    # read from the encoder's embedding: the decoder's Linear layers may be int8 (quantize_decoder)
    @property
    def device(self) -> torch.device:
        return self.encoder.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.embed_tokens.weight.dtype

    # -- positions -----------------------------------------------------------------------------------------
    def _positions(self, tokens: Tensor, offset: int, left_pad: Tensor | None = None) -> Tensor:
        """Position-table rows for `tokens` (B, T) that follow `offset` earlier tokens, (B, T, D)."""
        cfg = self.config
        if cfg.positions == "marian":  # the reference numbers every slot, pad or not
            rows = torch.arange(offset, offset + tokens.shape[1], device=tokens.device).unsqueeze(0)
            if left_pad is not None:
                rows = (rows - left_pad.to(tokens.device).view(-1, 1)).clamp(min=0)
        else:
            rows = fairseq_positions(tokens, offset, left_pad, cfg.pad_token_id)  # (B, T)
        if int(rows.max()) >= self.position_table.shape[0]:
            raise ValueError(f"more than {cfg.max_position_embeddings} tokens: the model's positions end there")
        return self.position_table[rows].expand(tokens.shape[0], -1, -1)  # marian's rows may be one for all

    # -- encoder -------------------------------------------------------------------------------------------
    def encode(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Source token ids (B, S) (right-padded when `mask` (B, S) marks the real ones) -> (B, S, D)."""
        enc = self.encoder
        ids = ids.to(self.device)
        x = enc.embed_tokens(ids) * self.embed_scale + self._positions(ids, 0)
        x = x.to(self.dtype)
        attn_mask = None if mask is None else mask.to(self.device)[:, None, None, :]
        for layer in enc.layers:
            x = layer(x, attn_mask)
        out: Tensor = enc.layer_norm(x) if enc.layer_norm is not None else x
        return out

    # -- decoder -------------------------------------------------------------------------------------------
    def _cross_attentions(self) -> list[Attention]:
        return [layer.encoder_attn for layer in self.decoder.layers]

    def _decode(self, tokens: Tensor, state: DecoderState, want_alignment: bool) -> tuple[Tensor, Tensor | None]:
        self_mask, cross_mask = self._step_masks(tokens, state)
        dec = self.decoder
        n_new = tokens.shape[1]
        x = dec.embed_tokens(tokens) * self.embed_scale + self._positions(tokens, state.offset, state.left_pad)
        x = x.to(self.dtype)  # (B, T, D)
        align: Tensor | None = None
        last = len(dec.layers) - 1
        pre = self.config.pre_ln
        for i, layer in enumerate(dec.layers):
            sa, ca = layer.self_attn, layer.encoder_attn
            h = layer.self_attn_layer_norm(x) if pre else x
            k_new, v_new = sa.kv(h)
            k, v = state.extend_layer(i, k_new, v_new)  # (B, H, offset + T, Dh)
            x = x + sa.attend(sa.query(h), k, v, self_mask)[0]
            if not pre:
                x = layer.self_attn_layer_norm(x)

            h = layer.encoder_attn_layer_norm(x) if pre else x
            out, w = ca.attend(ca.query(h), *state.cross_cache(i), cross_mask)  # w (B, H, T, S)
            x = x + out
            if not pre:
                x = layer.encoder_attn_layer_norm(x)
            if want_alignment and i == last:
                align = w.mean(dim=1, keepdim=True)  # (B, 1, T, S)

            x = layer.feed_forward(x)
        state.advance(n_new)
        if dec.layer_norm is not None:
            x = dec.layer_norm(x)
        logits = dec.lm_head(x)
        if self.config.logits_bias:
            logits = logits + self.final_logits_bias.to(logits.dtype)
        return logits.float(), align  # (B, T, V)
