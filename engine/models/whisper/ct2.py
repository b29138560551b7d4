"""Reader for CTranslate2's `model.bin` (binary version 6) and the mapping of a WhisperSpec onto our modules.

Layout (little-endian; a string is a uint16 length counting a trailing NUL, then the bytes, then the NUL):
    uint32 version | string spec_name | uint32 spec_revision | uint32 n_vars
    n_vars x { string name | uint8 rank | rank x uint32 dim | uint8 dtype | uint32 nbytes | bytes }
    uint32 n_aliases | n_aliases x { string alias | string target }
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import torch

from ...errors import ModelLoadError
from .model import WhisperConfig

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: None}  # 5 = bfloat16


@dataclass
class CT2Model:
    spec_name: str
    spec_revision: int
    variables: dict[str, npt.NDArray[Any]]  # dtype per variable: float32, int8, int16, int32, float16
    aliases: dict[str, str]

    def get(self, name: str) -> npt.NDArray[Any]:
        return self.variables[self.aliases.get(name, name)]


class _ChainedReader:
    """Reads a sequence of files (the split model.bin parts) as one stream, without concatenating them on disk."""

    def __init__(self, files: list[BinaryIO]) -> None:
        self._files = files
        self._i = 0
        self.consumed = 0  # bytes read so far (progress reporting)

    def read(self, n: int) -> bytes:
        out = bytearray()
        while n > 0 and self._i < len(self._files):
            chunk = self._files[self._i].read(n)
            if not chunk:
                self._i += 1
                continue
            out += chunk
            n -= len(chunk)
        self.consumed += len(out)
        return bytes(out)


def read_ct2(streams: Iterable[BinaryIO], progress: Callable[[int], None] | None = None) -> CT2Model:
    """Parse a CTranslate2 model from one or more binary streams read back to back; `progress(bytes_read)` is
    called after each variable (the weights are most of the file, so bytes track the time it takes)."""
    r = _ChainedReader(list(streams))

    def exact(n: int) -> bytes:
        b = r.read(n)
        if len(b) != n:
            raise ModelLoadError("model.bin is truncated (a part missing or incomplete?)")
        return b

    def u(fmt: str) -> int:
        value: int = struct.unpack("<" + fmt, exact(struct.calcsize(fmt)))[0]  # fmt: one unsigned int code
        return value

    def string() -> str:
        n = u("H")
        return exact(n)[:-1].decode("utf-8")

    version = u("I")
    if version != 6:
        raise ModelLoadError(f"unsupported CTranslate2 binary version {version} (expected 6)")
    spec = string()
    revision = u("I")
    n_vars = u("I")
    variables: dict[str, npt.NDArray[Any]] = {}
    for _ in range(n_vars):
        name = string()
        rank = u("B")
        shape = tuple(u("I") for _ in range(rank))
        dtype_id = u("B")
        nbytes = u("I")
        raw = exact(nbytes)
        if dtype_id not in _DTYPES:
            raise ModelLoadError(f"unknown dtype id {dtype_id} for variable {name}")
        if dtype_id == 5:
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, _DTYPES[dtype_id])
        variables[name] = arr.reshape(shape)
        if progress is not None:
            progress(r.consumed)
    aliases: dict[str, str] = {}
    n_alias = u("I")
    for _ in range(n_alias):
        alias = string()
        aliases[alias] = string()
    return CT2Model(spec, revision, variables, aliases)


def _count_layers(names: Iterable[str], prefix: str) -> int:
    # `encoder/layer_norm` also starts with `encoder/layer_`: count numeric suffixes only
    idx = {int(m.group(1)) for n in names if (m := re.match(re.escape(prefix) + r"layer_(\d+)/", n))}
    return max(idx) + 1 if idx else 0


def whisper_from_ct2(
    ct2: CT2Model, alignment_heads: tuple[tuple[int, int], ...] = ()
) -> tuple[WhisperConfig, dict[str, torch.Tensor]]:
    """Map a CTranslate2 WhisperSpec onto Whisper's state dict (fp32)."""
    if ct2.spec_name != "WhisperSpec":
        raise ModelLoadError(f"expected a WhisperSpec CTranslate2 model, got {ct2.spec_name}")
    v = ct2.variables
    names = list(v)

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(ct2.get(name)).astype(np.float32))

    def scalar(name: str) -> int:
        return int(np.asarray(v[name]).reshape(-1)[0])

    conv1 = v["encoder/conv1/weight"]
    emb = v["decoder/embeddings/weight"]
    d_audio = conv1.shape[0]
    d_text = emb.shape[1]
    cfg = WhisperConfig(
        n_mels=conv1.shape[1],
        n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=d_audio,
        n_audio_head=scalar("encoder/num_heads"),
        n_audio_layer=_count_layers(names, "encoder/"),
        n_vocab=emb.shape[0],
        n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
        n_text_state=d_text,
        n_text_head=scalar("decoder/num_heads"),
        n_text_layer=_count_layers(names, "decoder/"),
        alignment_heads=alignment_heads,
    )
    sd: dict[str, torch.Tensor] = {}

    def ln(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/gamma")
        sd[f"{dst}.bias"] = t(f"{src}/beta")

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/weight")
        sd[f"{dst}.bias"] = t(f"{src}/bias")

    def fused_qkv(dst: str, src: str, d: int) -> None:
        w, b = t(f"{src}/weight"), t(f"{src}/bias")
        if not torch.all(b[d : 2 * d] == 0):
            raise ModelLoadError(f"{src}: Whisper has no key bias, but the fused bias's key part is non-zero")
        sd[f"{dst}.query.weight"], sd[f"{dst}.query.bias"] = w[:d], b[:d]
        sd[f"{dst}.key.weight"] = w[d : 2 * d]
        sd[f"{dst}.value.weight"], sd[f"{dst}.value.bias"] = w[2 * d :], b[2 * d :]

    def self_attention(dst: str, src: str, d: int) -> None:
        ln(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        fused_qkv(f"{dst}.attn", f"{src}/self_attention/linear_0", d)
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")

    def mlp(dst: str, src: str) -> None:
        ln(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")

    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = t("encoder/position_encodings/encodings")
    for i in range(cfg.n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        self_attention(dst, src, d_audio)
        mlp(dst, src)
    ln("encoder.ln_post", "encoder/layer_norm")

    sd["decoder.token_embedding.weight"] = t("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = t("decoder/position_encodings/encodings")
    for i in range(cfg.n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        self_attention(dst, src, d_text)
        ln(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
        w, b = t(f"{src}/attention/linear_1/weight"), t(f"{src}/attention/linear_1/bias")
        if not torch.all(b[:d_text] == 0):
            raise ModelLoadError(f"{src}/attention/linear_1: the fused cross key bias is non-zero")
        sd[f"{dst}.cross_attn.key.weight"] = w[:d_text]
        sd[f"{dst}.cross_attn.value.weight"], sd[f"{dst}.cross_attn.value.bias"] = w[d_text:], b[d_text:]
        linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        mlp(dst, src)
    ln("decoder.ln", "decoder/layer_norm")
    return cfg, sd
