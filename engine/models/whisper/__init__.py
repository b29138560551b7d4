"""OpenAI's Whisper: the network, its tokenizer, offline decoding and transcription, checkpoint loading (the
embedded base model included) and its Backend. Importing the package registers the family."""

from __future__ import annotations

from ...backend import Family, register
from .backend import WhisperBackend
from .decoding import DecodingOptions, DecodingResult, decode, detect_language
from .load import EMBEDDED_MODEL, WhisperBundle, load_embedded, load_hf_whisper
from .model import Whisper, WhisperConfig
from .tokenizer import WhisperTokenizer
from .transcribe import TranscribeOptions, transcribe, transcribe_offline

FAMILY = register(
    Family(
        name="whisper",
        model_types=("whisper",),
        load_directory=load_hf_whisper,
        backend=WhisperBackend,
        transcribe=transcribe_offline,
        builtin={EMBEDDED_MODEL: load_embedded},
        int8_by_default=True,  # quantize="auto": an int8 decoder on the CPU for Whisper only (S2T2 stays fp32)
    )
)

__all__ = [
    "EMBEDDED_MODEL",
    "FAMILY",
    "DecodingOptions",
    "DecodingResult",
    "TranscribeOptions",
    "Whisper",
    "WhisperBackend",
    "WhisperBundle",
    "WhisperConfig",
    "WhisperTokenizer",
    "decode",
    "detect_language",
    "load_embedded",
    "load_hf_whisper",
    "transcribe",
    "transcribe_offline",
]
