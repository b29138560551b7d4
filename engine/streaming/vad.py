"""Voice activity per stream with Silero VAD: which audio is speech, and where a pause closes a segment.

Silero's TorchScript model keeps its recurrent state inside the module, so every stream gets its own copy
(a deepcopy of one loaded template: ~5 ms, ~2 MB) rather than sharing one and swapping state.
"""

from __future__ import annotations

import copy
import functools
import threading
from dataclasses import dataclass

import numpy as np
import torch

from ..audio import SAMPLE_RATE

WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
WINDOW_S = WINDOW / SAMPLE_RATE


@dataclass(frozen=True)
class VadConfig:
    threshold: float = 0.5  # speech probability that opens a segment
    neg_threshold: float = 0.35  # below this a window counts as silence (hysteresis, as silero's own iterator)
    # this much silence inside a segment closes it (its last update then commits it with beam search). 0.5 s:
    # 0.35 s scored a little better on the German and English own sets (23.8 vs 23.0 BLEU, 12.5 vs 13.5 % WER)
    # but split pause-free speech at espeak's sentence-end pauses into one-second segments, where Whisper
    # repeats itself (tests/engine/streaming/test_session.py: 18 inserted or lost words of 150 instead of 1)
    min_silence_s: float = 0.5
    min_speech_s: float = 0.25  # shorter bursts (clicks, coughs) are discarded instead of decoded
    pad_s: float = 0.2  # audio kept before speech starts and after it ends (word onsets / tails)


_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _template() -> torch.jit.ScriptModule:
    from silero_vad import load_silero_vad

    model: torch.jit.ScriptModule = load_silero_vad()  # silero_vad ships no type hints
    return model


def new_vad_model() -> torch.jit.ScriptModule:
    with _lock:
        return copy.deepcopy(_template())


@dataclass
class VadState:
    """What one stream's detector remembers between calls."""

    model: torch.jit.ScriptModule  # Silero with this stream's recurrent state
    pending: np.ndarray  # samples not yet forming a whole 512-sample window
    in_speech: bool = False
    silence_s: float = 0.0  # consecutive silence inside the current segment
    speech_s: float = 0.0  # speech in the current segment so far


@dataclass(frozen=True)
class VadWindow:
    """Verdict on one 512-sample window."""

    samples: np.ndarray
    prob: float
    in_speech: bool  # inside a segment after this window
    opened: bool  # this window opened a segment
    closed: bool  # this window closed a segment (the pause was long enough)


class StreamVad:
    def __init__(self, config: VadConfig = VadConfig()) -> None:
        self.config = config
        self.state = VadState(model=new_vad_model(), pending=np.zeros(0, np.float32))

    @torch.inference_mode()
    def process(self, samples: np.ndarray) -> list[VadWindow]:
        """Classify every whole window in `samples` (plus what was pending); keep the remainder pending."""
        st, cfg = self.state, self.config
        data = np.concatenate([st.pending, samples]) if st.pending.size else samples
        n_win = len(data) // WINDOW
        st.pending = data[n_win * WINDOW :].copy()
        out: list[VadWindow] = []
        for i in range(n_win):
            win = data[i * WINDOW : (i + 1) * WINDOW]
            prob = float(st.model(torch.from_numpy(np.ascontiguousarray(win)), SAMPLE_RATE))
            opened = closed = False
            if not st.in_speech:
                if prob >= cfg.threshold:
                    st.in_speech, opened, st.silence_s, st.speech_s = True, True, 0.0, WINDOW_S
            else:
                if prob < cfg.neg_threshold:
                    st.silence_s += WINDOW_S
                    if st.silence_s >= cfg.min_silence_s:
                        st.in_speech, closed = False, True
                else:
                    st.silence_s = 0.0
                    st.speech_s += WINDOW_S
            out.append(VadWindow(win, prob, st.in_speech, opened, closed))
        return out

    def flush(self) -> np.ndarray:
        """The samples still pending (less than one window), at the end of the stream."""
        rest, self.state.pending = self.state.pending, np.zeros(0, np.float32)
        return rest
