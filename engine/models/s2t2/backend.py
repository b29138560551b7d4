"""wav2vec2 + Speech2Text2 behind the Backend seam: raw 16 kHz samples in, German (or the checkpoint's) text out.

Differences from Whisper that the layers above see through this class only: one task and no language tokens
(`start_tokens` is just the decoder start token), no previous-text prompt, one alignment "head" (the last decoder
layer's cross-attention averaged over its heads), and BPE pieces whose bytes carry the word spacing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from ...errors import ConfigError
from ...kv_cache import DecoderState
from .load import S2T2Bundle
from .wav2vec2 import SAMPLE_RATE, normalize_audio

MAX_WINDOW_S = 30.0  # no hard limit in wav2vec2; attention cost grows with the square of the window, and the
# released checkpoints were trained on utterances well below this


class S2T2Backend:
    family = "s2t2"
    sample_rate = SAMPLE_RATE
    max_window_s = MAX_WINDOW_S
    trained_window_s = 0.0  # wav2vec2 takes any length: nothing to fill
    tasks: tuple[str, ...] = ("translate",)  # a speech-translation checkpoint translates into its one target language
    alignment_heads = 1  # step_with_alignment returns the head-averaged last layer, (B, 1, T, S)

    def __init__(self, bundle: S2T2Bundle) -> None:
        self.bundle = bundle
        self.model = bundle.model
        self.tokenizer = bundle.tokenizer
        self.name = bundle.name
        self.frontend = bundle.frontend
        gen = bundle.generation
        self.eot = gen.eos_token_id
        self.start = gen.decoder_start_token_id
        enc = bundle.model.encoder_config
        self.max_text_tokens = bundle.model.n_text_ctx  # decoder positions: start token + generated tokens
        self.frame_s = enc.samples_per_frame / SAMPLE_RATE  # 0.02 s for every released wav2vec2
        self._min_samples = enc.min_samples
        sp = self.tokenizer.special
        vocab = bundle.model.config.vocab_size
        # pad and <s> are never targets; ids past vocab.json (embedding rows padded to a round size) decode to
        # nothing. <unk> stays allowed: the reference can emit it and it decodes to nothing as well.
        banned = {sp.pad, sp.bos, gen.pad_token_id} - {self.eot}
        banned |= set(range(max(self.tokenizer.id_to_piece) + 1, vocab))
        self._banned = torch.tensor(sorted(i for i in banned if 0 <= i < vocab), dtype=torch.long)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- audio ---------------------------------------------------------------------------------------------
    def _prepare(self, audio: np.ndarray) -> npt.NDArray[np.float32]:
        """The feature extractor's normalisation; windows shorter than the first convolution are zero-padded
        after normalising (the encoder needs 25 ms to produce a frame)."""
        x = np.asarray(audio, dtype=np.float32)
        if self.frontend.do_normalize:
            x = normalize_audio(x) if x.size else x
        if x.size < self._min_samples:
            x = np.pad(x, (0, self._min_samples - x.size), constant_values=self.frontend.padding_value)
        return x

    @torch.inference_mode()
    def encode(self, audio: np.ndarray, *, bf16: bool = False) -> Tensor:  # no trained window: bf16 unused
        samples = torch.from_numpy(self._prepare(audio))[None]
        return self.model.encode(samples)[0]

    @torch.inference_mode()
    def encode_batch(self, audios: list[np.ndarray]) -> tuple[Tensor, Tensor | None]:
        """Rows are normalised alone, then padded. Models whose feature extractor returns an attention mask
        (layer-norm, large-lv60 style) mask the padding in the encoder and the decoder's cross-attention; the
        group-norm (base style) ones were trained on unmasked zero padding, so the reference passes no mask and
        neither do we."""
        rows = [self._prepare(a) for a in audios]
        n = max(r.size for r in rows)
        pad = self.frontend.padding_value
        batch = torch.from_numpy(np.stack([np.pad(r, (0, n - r.size), constant_values=pad) for r in rows]))
        if all(r.size == n for r in rows) or not self.frontend.return_attention_mask:
            return self.model.encode(batch)[0], None
        lengths = torch.tensor([r.size for r in rows])
        sample_mask = torch.arange(n)[None, :] < lengths[:, None]
        return self.model.encode(batch, sample_mask)

    # -- decoder -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def new_state(self, encoder_out: Tensor, valid: Tensor | None = None) -> DecoderState:
        return self.model.new_state(encoder_out, valid)

    @torch.inference_mode()
    def set_audio(self, state: DecoderState, encoder_out: Tensor, valid: Tensor | None = None) -> None:
        self.model.set_audio(state, encoder_out, valid)

    @torch.inference_mode()
    def step(self, tokens: Tensor, state: DecoderState) -> Tensor:
        return self.model.step(tokens.to(self.device), state)

    @torch.inference_mode()
    def step_with_alignment(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, Tensor]:
        return self.model.step_with_alignment(tokens.to(self.device), state)

    def start_tokens(self, task: str, language: str | None, previous: list[int]) -> list[int]:
        """Only the decoder start token: no task or language tokens exist, and the decoder was not trained with
        a previous-text prompt, so `previous` is ignored (prefixing it would change the output)."""
        if task not in self.tasks:
            raise ConfigError(f"{self.name} can only translate (task 'translate'), not {task!r}")
        return [self.start]

    def filter_logits(self, logits: Tensor, n_generated: int) -> None:
        logits[..., self._banned.to(logits.device)] = float("-inf")

    def token_bytes(self, token: int) -> bytes:
        return self.tokenizer.token_bytes(token)

    def text_tokens(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def detect_language(self, encoder_out: Tensor) -> str | None:
        return None  # one source language per checkpoint: nothing to detect

    def language_probs(self, encoder_out: Tensor) -> dict[str, float] | None:
        return None

    def no_speech_prob(self, state: DecoderState) -> float | None:
        return None  # S2T2 was not trained with a no-speech token; the session's VAD has to decide
