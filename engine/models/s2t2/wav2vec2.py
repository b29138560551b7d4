"""The wav2vec2 speech encoder in plain PyTorch: raw 16 kHz samples in, one vector per 20 ms out.

Module and parameter names follow the HF checkpoints (`feature_extractor.conv_layers.0.conv.weight`, ...) so that
loading is a prefix strip; the one exception is the positional convolution, whose weight norm is folded into a plain
weight when the checkpoint is read (it never changes at inference time).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..common import Layers

SAMPLE_RATE = 16000  # wav2vec2 is trained on 16 kHz audio only


@dataclass(frozen=True)
class Wav2Vec2Config:
    conv_dim: tuple[int, ...] = (512,) * 7  # channels of each feature-encoder convolution
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)  # product 320: one frame per 20 ms at 16 kHz
    conv_bias: bool = False
    # "group": GroupNorm after the first convolution only (base models); "layer": LayerNorm after each (large-lv60)
    feat_extract_norm: Literal["group", "layer"] = "group"
    feat_extract_activation: str = "gelu"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    num_conv_pos_embeddings: int = 128  # kernel of the convolutional relative positional embedding
    num_conv_pos_embedding_groups: int = 16
    # False: post-LN layers and a LayerNorm before them (base); True: pre-LN layers and a LayerNorm after (large)
    do_stable_layer_norm: bool = False
    # optional convolutional adapter after the transformer (shortens the sequence; used by some seq2seq checkpoints)
    add_adapter: bool = False
    output_hidden_size: int | None = None  # adapter width; None = hidden_size
    num_adapter_layers: int = 3
    adapter_kernel_size: int = 3
    adapter_stride: int = 2

    @property
    def out_size(self) -> int:
        """Width of the encoder's output vectors."""
        if self.add_adapter and self.output_hidden_size is not None:
            return self.output_hidden_size
        return self.hidden_size

    @property
    def samples_per_frame(self) -> int:
        """Input samples per output frame (320 for every released wav2vec2: 20 ms at 16 kHz)."""
        stride = math.prod(self.conv_stride)
        if self.add_adapter:
            stride *= self.adapter_stride**self.num_adapter_layers
        return stride

    def output_lengths(self, n_samples: Tensor, with_adapter: bool = True) -> Tensor:
        """Number of encoder frames for inputs of `n_samples` samples (the reference's formula)."""
        n = n_samples
        for kernel, stride in zip(self.conv_kernel, self.conv_stride):
            n = torch.div(n - kernel, stride, rounding_mode="floor") + 1
        if self.add_adapter and with_adapter:
            for _ in range(self.num_adapter_layers):
                n = torch.div(n - 1, self.adapter_stride, rounding_mode="floor") + 1
        return n

    @property
    def min_samples(self) -> int:
        """The shortest input that yields one frame from the feature encoder (400 samples = 25 ms)."""
        n = 1
        for kernel, stride in reversed(list(zip(self.conv_kernel, self.conv_stride))):
            n = (n - 1) * stride + kernel
        return n


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """The activation function for a config name; ValueError for names this engine does not implement."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unsupported activation {name!r} (supported: {', '.join(ACTIVATIONS)})") from None


def normalize_audio(audio: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """wav2vec2's front end: zero mean and unit variance over the utterance (float32, as the reference computes it)."""
    x = np.asarray(audio, dtype=np.float32)
    out: npt.NDArray[np.float32] = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    return out


class ConvLayer(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config, i: int) -> None:
        super().__init__()
        c_in = cfg.conv_dim[i - 1] if i > 0 else 1
        c_out = cfg.conv_dim[i]
        self.conv = nn.Conv1d(c_in, c_out, cfg.conv_kernel[i], stride=cfg.conv_stride[i], bias=cfg.conv_bias)
        self.kind = "layer" if cfg.feat_extract_norm == "layer" else ("group" if i == 0 else "none")
        if self.kind == "layer":
            self.layer_norm: nn.LayerNorm | nn.GroupNorm = nn.LayerNorm(c_out)
        elif self.kind == "group":
            self.layer_norm = nn.GroupNorm(c_out, c_out)  # one group per channel: per-channel norm over time
        self.act = activation(cfg.feat_extract_activation)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)  # (B, C, T)
        if self.kind == "layer":
            x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        elif self.kind == "group":
            x = self.layer_norm(x)
        return self.act(x)


class FeatureEncoder(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList(ConvLayer(cfg, i) for i in range(len(cfg.conv_dim)))

    def forward(self, samples: Tensor) -> Tensor:
        x = samples[:, None]  # (B, 1, N)
        for layer in self.conv_layers:
            x = layer(x)
        return x.transpose(1, 2)  # (B, T, C)


class FeatureProjection(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.projection = nn.Linear(cfg.conv_dim[-1], cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.projection(self.layer_norm(x))
        return out


class PositionalConv(nn.Module):
    """Grouped convolution over time added to the input: wav2vec2's relative positional embedding."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        k = cfg.num_conv_pos_embeddings
        self.conv = nn.Conv1d(
            cfg.hidden_size, cfg.hidden_size, k, padding=k // 2, groups=cfg.num_conv_pos_embedding_groups
        )
        self.trim = 1 if k % 2 == 0 else 0  # an even kernel with padding k//2 yields one frame too many
        self.act = activation(cfg.feat_extract_activation)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x.transpose(1, 2))  # (B, H, T + trim)
        if self.trim:
            y = y[:, :, : -self.trim]
        return self.act(y).transpose(1, 2)


class AttentionProjections(nn.Module):
    """Multi-head attention's four width-preserving projections, named as the BART-style checkpoints name them
    (q_proj, k_proj, v_proj, out_proj): the wav2vec2 encoder's self-attention, and (model.Attention) the
    Speech2Text2 and text-MT decoders' attention."""

    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        if d % n_head:
            raise ValueError(f"width {d} is not divisible by {n_head} attention heads")
        self.n_head = n_head
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def split_heads(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)  # (B, H, T, Dh)


class SelfAttention(AttentionProjections):
    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, t, d = x.shape
        out = F.scaled_dot_product_attention(
            self.split_heads(self.q_proj(x)),
            self.split_heads(self.k_proj(x)),
            self.split_heads(self.v_proj(x)),
            attn_mask=mask,
        )
        merged: Tensor = self.out_proj(out.transpose(1, 2).reshape(b, t, d))
        return merged


class FeedForward(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output_dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.output_dense(self.act(self.intermediate_dense(x)))
        return out


class EncoderLayer(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.pre_ln = cfg.do_stable_layer_norm
        self.attention = SelfAttention(cfg.hidden_size, cfg.num_attention_heads)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.feed_forward = FeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        if self.pre_ln:  # "stable layer norm" (large-lv60): normalise before each block
            x = x + self.attention(self.layer_norm(x), mask)
            ff: Tensor = self.feed_forward(self.final_layer_norm(x))
            return x + ff
        x = self.layer_norm(x + self.attention(x, mask))  # post-LN (base)
        out: Tensor = self.final_layer_norm(x + self.feed_forward(x))
        return out


class Transformer(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.pre_ln = cfg.do_stable_layer_norm
        self.pos_conv_embed = PositionalConv(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: Tensor, valid: Tensor | None) -> Tensor:
        mask = None
        if valid is not None:
            x = x * valid[:, :, None].to(x.dtype)  # padded frames must not leak in through the positional conv
            mask = valid[:, None, None, :]  # (B, 1, 1, T): every query may look at real frames only
        x = x + self.pos_conv_embed(x)
        if not self.pre_ln:
            x = self.layer_norm(x)
        for layer in self.layers:
            x = layer(x, mask)
        return self.layer_norm(x) if self.pre_ln else x


class Adapter(nn.Module):
    """Strided GLU convolutions that shorten the encoder output (`add_adapter` checkpoints)."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        out = cfg.output_hidden_size or cfg.hidden_size
        self.proj: nn.Linear | None = None
        if out != cfg.hidden_size:
            self.proj = nn.Linear(cfg.hidden_size, out)
            self.proj_layer_norm = nn.LayerNorm(out)
        self.layers = Layers[_AdapterLayer](
            _AdapterLayer(out, cfg.adapter_kernel_size, cfg.adapter_stride) for _ in range(cfg.num_adapter_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            x = self.proj_layer_norm(self.proj(x))
        x = x.transpose(1, 2)
        for layer in self.layers:
            x = F.glu(layer.conv(x), dim=1)
        return x.transpose(1, 2)


class _AdapterLayer(nn.Module):
    def __init__(self, d: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d, 2 * d, kernel, stride=stride, padding=1)


class Wav2Vec2Encoder(nn.Module):
    """Normalised samples (B, N) -> encoder output (B, T, out_size), T = frames of 20 ms."""

    def __init__(self, cfg: Wav2Vec2Config) -> None:
        super().__init__()
        self.config = cfg
        self.feature_extractor = FeatureEncoder(cfg)
        self.feature_projection = FeatureProjection(cfg)
        self.encoder = Transformer(cfg)
        self.adapter = Adapter(cfg) if cfg.add_adapter else None

    def frame_mask(self, n_frames: int, n_samples: Tensor, with_adapter: bool = True) -> Tensor:
        """(B, n_frames) True for frames computed from real samples (`n_samples` (B,) real samples per row)."""
        lengths = self.config.output_lengths(n_samples.to(torch.long), with_adapter)
        return torch.arange(n_frames, device=n_samples.device)[None, :] < lengths[:, None]

    def forward(self, samples: Tensor, sample_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """`sample_mask` (B, N) bool marks real samples in a padded batch; returns the output and its frame mask."""
        if samples.shape[-1] < self.config.min_samples:
            raise ValueError(f"wav2vec2 needs at least {self.config.min_samples} samples, got {samples.shape[-1]}")
        x = self.feature_extractor(samples)  # (B, T, C)
        n_samples = None if sample_mask is None else sample_mask.sum(-1)
        valid = None if n_samples is None else self.frame_mask(x.shape[1], n_samples, with_adapter=False)
        x = self.feature_projection(x)
        x = self.encoder(x, valid)
        if self.adapter is not None:
            x = self.adapter(x)
            if n_samples is not None:
                valid = self.frame_mask(x.shape[1], n_samples)
        return x, valid
