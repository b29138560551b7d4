"""wav2vec2 + Speech2Text2 (HF `SpeechEncoderDecoderModel` speech-translation checkpoints): the encoder, the
decoder, the BPE tokenizer, HF-equivalent generation, loading and its Backend. Importing the package registers
the family."""

from __future__ import annotations

from ...backend import Family, register
from .backend import S2T2Backend
from .generate import SearchOptions, generate, search_options, translate_offline, translate_window
from .load import S2T2Bundle, load_s2t2
from .model import S2T2, S2T2Config
from .tokenizer import S2T2Tokenizer
from .wav2vec2 import Wav2Vec2Config, Wav2Vec2Encoder

FAMILY = register(
    Family(
        name="s2t2",
        model_types=("speech-encoder-decoder",),  # with a wav2vec2 encoder and a Speech2Text2 decoder (load.py checks)
        load_directory=load_s2t2,
        backend=S2T2Backend,
        transcribe=translate_offline,
    )
)

__all__ = [
    "FAMILY",
    "S2T2",
    "S2T2Backend",
    "S2T2Bundle",
    "S2T2Config",
    "S2T2Tokenizer",
    "SearchOptions",
    "Wav2Vec2Config",
    "Wav2Vec2Encoder",
    "generate",
    "load_s2t2",
    "search_options",
    "translate_offline",
    "translate_window",
]
