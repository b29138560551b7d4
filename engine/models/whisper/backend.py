"""Whisper behind the Backend seam: log-mel windows in, byte-level BPE tokens out."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ...audio import HOP_LENGTH, N_SAMPLES, SAMPLE_RATE, SECONDS_PER_ENCODER_FRAME, log_mel_spectrogram
from ...backend import Task
from ...kv_cache import DecoderState
from .decoding import detect_language
from .load import WhisperBundle


class WhisperBackend:
    """Whisper behind the Backend seam (unpadded encoder windows, no timestamps during streaming)."""

    family = "whisper"
    sample_rate = SAMPLE_RATE
    max_window_s = N_SAMPLES / SAMPLE_RATE
    trained_window_s = N_SAMPLES / SAMPLE_RATE  # every training window was 30 s, padded
    frame_s = SECONDS_PER_ENCODER_FRAME
    tasks: tuple[str, ...] = ("transcribe", "translate")

    def __init__(self, bundle: WhisperBundle) -> None:
        self.bundle = bundle
        self.model = bundle.model
        self.tokenizer = bundle.tokenizer
        self.name = bundle.name
        self.eot = bundle.tokenizer.eot
        self.alignment_heads = len(bundle.model.config.resolved_alignment_heads())
        self.max_text_tokens = bundle.model.n_text_ctx
        sp = bundle.tokenizer.special
        n_vocab = bundle.model.config.n_vocab
        banned = set(bundle.suppress_ids) | set(range(sp.eot + 1, n_vocab))  # specials and timestamps
        self._banned = torch.tensor(sorted(i for i in banned if i < n_vocab), dtype=torch.long)
        self._banned_begin = torch.tensor([i for i in bundle.suppress_ids_begin if i < n_vocab], dtype=torch.long)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _mel(self, audio: np.ndarray) -> Tensor:
        # The encoder halves the frame rate: keep an even frame count, and at least 2 frames (zero-pad audio
        # shorter than 20 ms) so even a tiny window encodes to one frame instead of failing.
        if len(audio) < 2 * HOP_LENGTH:
            audio = np.pad(audio, (0, 2 * HOP_LENGTH - len(audio)))
        mel = log_mel_spectrogram(audio, self.model.config.n_mels)
        return mel[:, : mel.shape[1] - mel.shape[1] % 2]

    @torch.inference_mode()
    def encode(self, audio: np.ndarray, *, bf16: bool = False) -> Tensor:
        return self.model.encode(self._mel(audio)[None], bf16=bf16)

    @torch.inference_mode()
    def encode_batch(self, audios: list[np.ndarray]) -> tuple[Tensor, Tensor | None]:
        mels = [self._mel(a) for a in audios]
        n = max(m.shape[1] for m in mels)
        if all(m.shape[1] == n for m in mels):
            return self.model.encode(torch.stack(mels)), None
        # Pad with zeros: a row alone is zero-padded by conv1, so its last real frames see exactly the same
        # input (any other value shifts the last frame, and through attention every frame); the attention mask
        # hides the padded frames themselves.
        batch = torch.stack([torch.nn.functional.pad(m, (0, n - m.shape[1])) for m in mels])
        valid = torch.zeros(len(mels), n // 2, dtype=torch.bool)
        for i, m in enumerate(mels):
            valid[i, : m.shape[1] // 2] = True
        valid = valid.to(self.device)
        return self.model.encode(batch, valid), valid

    @torch.inference_mode()  # encoder outputs are inference tensors: autograd must stay off (fp32 too)
    def new_state(self, encoder_out: Tensor, valid: Tensor | None = None) -> DecoderState:
        return self.model.new_state(encoder_out, valid)

    @torch.inference_mode()  # encoder outputs are inference tensors: autograd must stay off (fp32 too)
    def set_audio(self, state: DecoderState, encoder_out: Tensor, valid: Tensor | None = None) -> None:
        self.model.set_audio(state, encoder_out, valid)

    @torch.inference_mode()  # encoder outputs are inference tensors: autograd must stay off (fp32 too)
    def step(self, tokens: Tensor, state: DecoderState) -> Tensor:
        return self.model.step(tokens, state)

    @torch.inference_mode()  # encoder outputs are inference tensors: autograd must stay off (fp32 too)
    def step_with_alignment(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, Tensor]:
        return self.model.step_with_alignment(tokens, state)

    def start_tokens(self, task: Task, language: str | None, previous: list[int]) -> list[int]:
        sp = self.tokenizer.special
        head = [sp.sot_prev] + previous[-(self.model.n_text_ctx // 4) :] if previous else []
        return head + self.tokenizer.sot_sequence(task, language, timestamps=False)

    def filter_logits(self, logits: Tensor, n_generated: int) -> None:
        logits[..., self._banned.to(logits.device)] = float("-inf")
        if n_generated == 0:
            logits[..., self._banned_begin.to(logits.device)] = float("-inf")

    def token_bytes(self, token: int) -> bytes:
        return self.tokenizer.token_bytes(token)

    def text_tokens(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    @torch.inference_mode()
    def detect_language(self, encoder_out: Tensor) -> str | None:
        return detect_language(self.bundle, encoder_out)[0]

    @torch.inference_mode()
    def language_probs(self, encoder_out: Tensor) -> dict[str, float] | None:
        return detect_language(self.bundle, encoder_out)[1]

    @torch.inference_mode()
    def no_speech_prob(self, state: DecoderState) -> float | None:
        # openai reads <|nospeech|> at the <|startoftranscript|> position; without a previous-text prompt
        # that position sees only itself, so one step on an empty clone sharing the cross K/V is enough.
        probe = state.clone()
        probe.reset()
        sp = self.tokenizer.special
        logits = self.model.step(torch.tensor([[sp.sot]], device=self.device), probe)[0, -1]
        return float(logits.float().softmax(-1)[sp.no_speech])
