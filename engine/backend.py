"""The seam between model families and everything above them (decoding loops, streaming, policies), and the
registry through which a family is loaded, served and run offline without the code above naming it.

A Backend turns audio into encoder output, builds decoder prompts, filters logits and turns token ids into
bytes. It holds no per-stream state: that lives in DecoderState objects, one per stream. Nothing here knows a
family: each family package (engine/models/whisper, engine/models/s2t2) registers a Family when it is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from .kv_cache import DecoderState

Task = Literal["transcribe", "translate"]


@runtime_checkable
class Backend(Protocol):
    family: str
    name: str
    sample_rate: int  # model input rate (16 kHz for both families)
    max_window_s: float  # longest audio one encoder pass may see
    # the window the encoder was trained on, silence-padded (30 s for Whisper); 0: any length (wav2vec2)
    trained_window_s: float
    frame_s: float  # seconds of audio per encoder output frame
    eot: int  # end-of-text token
    tasks: tuple[str, ...]  # tasks this model can do
    alignment_heads: int  # number of heads step_with_alignment returns
    max_text_tokens: int  # decoder context length (prompt + generated tokens)

    def encode(self, audio: np.ndarray, *, bf16: bool = False) -> Tensor:
        """float32 mono samples at `sample_rate` -> encoder output (1, S, d). `bf16`: a whole trained window may
        be encoded in bfloat16 where the CPU does it natively (faster, a little less exact); others ignore it."""

    def encode_batch(self, audios: list[np.ndarray]) -> tuple[Tensor, Tensor | None]:
        """Several streams' windows in one pass -> (B, S_max, d) and a (B, S_max) validity mask (None: all valid)."""

    def new_state(self, encoder_out: Tensor, valid: Tensor | None = None) -> DecoderState: ...

    def set_audio(self, state: DecoderState, encoder_out: Tensor, valid: Tensor | None = None) -> None: ...

    def step(self, tokens: Tensor, state: DecoderState) -> Tensor: ...

    def step_with_alignment(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, Tensor]: ...

    def start_tokens(self, task: Task, language: str | None, previous: list[int]) -> list[int]:
        """Decoder prompt for a segment: optional previous text (bounded), then the task tokens."""

    def filter_logits(self, logits: Tensor, n_generated: int) -> None:
        """Suppress tokens that must never be generated (in place, (B, V))."""

    def token_bytes(self, token: int) -> bytes:
        """The UTF-8 bytes a token contributes (b'' for special tokens)."""

    def text_tokens(self, text: str) -> list[int]: ...

    def detect_language(self, encoder_out: Tensor) -> str | None: ...

    def language_probs(self, encoder_out: Tensor) -> dict[str, float] | None:
        """Probability of each spoken language given the audio (None: one language per checkpoint)."""

    def no_speech_prob(self, state: DecoderState) -> float | None:
        """Probability that the audio installed in `state` holds no speech (None: the family cannot tell).

        Must not change `state` (streaming calls it between updates)."""


@dataclass(frozen=True)
class Segment:
    """A stretch of a recording and the text decoded for it."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """A whole recording decoded offline."""

    language: str | None  # the spoken language, given or detected (None: not given, and the family cannot tell)
    segments: list[Segment]

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()


@dataclass(frozen=True)
class OfflineOptions:
    """What a caller may choose when decoding a whole recording; each family keeps its own defaults for the rest."""

    task: Task = "transcribe"
    language: str | None = None  # None: detected, where the family can
    beam_size: int = 1


Progress = Callable[[float, float], None]  # (seconds of audio decoded, seconds in all)


class SpeechBundle(Protocol):
    """What loading returns for any family: a network with its tokenizer and settings, and where it runs.
    Code that serves any family goes through make_backend(bundle); code that needs one family checks its type."""

    device: torch.device  # set by placement (engine/models/common.py), like `quantized`
    quantized: bool  # the decoder's Linear layers run in int8

    @property
    def family(self) -> str: ...  # the registered Family's name

    @property
    def name(self) -> str: ...  # what the user asked for (a built-in name, a directory, a hub id)

    @property
    def model(self) -> torch.nn.Module: ...


BundleT = TypeVar("BundleT", bound=SpeechBundle)


@dataclass(frozen=True)
class Family(Generic[BundleT]):
    """One model family as the rest of the engine sees it: the checkpoints it loads, its Backend (streaming) and
    its offline decoding of whole recordings."""

    name: str  # the `family` of its bundles and backends
    model_types: tuple[str, ...]  # config.json `model_type` values of the checkpoint directories it loads
    # (directory, its config.json, name) -> bundle on the CPU
    load_directory: Callable[[Path, dict[str, Any], str], BundleT]
    backend: Callable[[BundleT], Backend]
    # a whole recording of any length: (bundle, 16 kHz float32 mono samples, options, progress) -> Transcript
    transcribe: Callable[[BundleT, np.ndarray, OfflineOptions, Progress | None], Transcript]
    builtin: Mapping[str, Callable[[], BundleT]] = field(default_factory=dict)  # models loaded by name alone
    int8_by_default: bool = False  # quantize="auto" puts the decoder in int8 on the CPU


_FAMILIES: dict[str, Family[Any]] = {}


def register(family: Family[BundleT]) -> Family[BundleT]:
    """Make a family loadable and servable (each family package calls this once, when it is imported)."""
    known = _FAMILIES.get(family.name)
    if known is not None and known != family:
        raise ValueError(f"model family {family.name!r} is registered twice")
    _FAMILIES[family.name] = family
    return family


def families() -> tuple[Family[Any], ...]:
    """The registered families, in registration order."""
    return tuple(_FAMILIES.values())


def family_of(bundle: object) -> Family[Any]:
    """The registered Family of a loaded bundle; TypeError for anything else."""
    name = getattr(bundle, "family", None)
    family = _FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        raise TypeError(f"no backend for {type(bundle).__name__}")
    return family


def make_backend(bundle: SpeechBundle) -> Backend:
    """The Backend for a loaded bundle of any family."""
    return family_of(bundle).backend(bundle)


def tokens_text(backend: Backend, tokens: list[int]) -> str:
    """The text of `tokens` (special tokens add nothing; a cut-off character becomes U+FFFD)."""
    return b"".join(backend.token_bytes(t) for t in tokens).decode("utf-8", "replace")


def transcribe(
    bundle: SpeechBundle,
    audio: np.ndarray,
    options: OfflineOptions = OfflineOptions(),
    progress: Progress | None = None,
) -> Transcript:
    """Decode a whole recording (16 kHz float32 mono, any length) offline with the bundle's family."""
    return family_of(bundle).transcribe(bundle, audio, options, progress)
