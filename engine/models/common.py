"""What every model family shares once its checkpoint is read: the device it runs on and the int8 decoder; and
Layers, the typed list of a stack's layers."""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Generic, Literal, Protocol, TypeVar, cast

import torch

from ..errors import ModelLoadError

log = logging.getLogger(__name__)

Quantize = Literal["auto", "none", "decoder"]
DeviceName = Literal["auto", "cpu", "cuda"]


class Placeable(Protocol):
    """What every family's bundle has for placement: its network (with a `.decoder`), device and int8 flag."""

    @property
    def model(self) -> torch.nn.Module: ...  # read-only here, so a bundle may hold a subclass (Whisper, MTModel)

    device: torch.device
    quantized: bool


B = TypeVar("B", bound=Placeable)
M = TypeVar("M", bound=torch.nn.Module)


class Layers(torch.nn.ModuleList, Generic[M]):
    """An nn.ModuleList of one kind of layer, which iterates as that kind (no cast at every loop)."""

    def __iter__(self) -> Iterator[M]:
        return cast(Iterator[M], super().__iter__())


def resolve_device(device: DeviceName | str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for, but no CUDA GPU is available (use --device cpu)")
    if device not in ("cpu", "cuda"):
        raise ModelLoadError(f"unknown device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


@functools.cache
def native_bf16() -> bool:
    """This CPU multiplies bfloat16 matrices in hardware (AMX or AVX512-BF16). Elsewhere torch emulates bf16,
    slower than fp32, so nothing runs in bf16 there. Linux reports it in /proc/cpuinfo; other systems: no."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


def quantize_decoder(model: torch.nn.Module) -> bool:
    """Dynamic int8 (per-channel) on the decoder's Linear layers; the encoder stays fp32 (int8 there changes
    words). torch.ao.quantization is deprecated, so any failure falls back to fp32 and is logged."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            # inplace: a copy of the fp32 decoder first (inplace=False) cost ~0.7 s of a warm start. A failure
            # half way leaves some layers int8 and the rest fp32, which still decodes correctly.
            model.decoder = quantize_dynamic(
                model.decoder, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
            )
        return True
    except Exception as e:  # pragma: no cover - depends on the torch build
        log.warning("int8 quantization unavailable (%s); running the decoder in fp32", e)
        return False


def place(bundle: B, device: torch.device, int8_decoder: bool) -> B:
    """On a GPU, the whole network in fp16 there; on the CPU, the decoder's Linear layers in int8 when asked."""
    if device.type == "cuda":
        bundle.model.to(device=device, dtype=torch.float16)
        bundle.device = device
    elif int8_decoder:
        bundle.quantized = quantize_decoder(bundle.model)
    return bundle
