"""The wav2vec2 + Speech2Text2 family through everything the streaming engine offers (session, both policies,
both modes, the asyncio Engine), on a small checkpoint written by the test and real synthesised speech."""

from __future__ import annotations

import asyncio
import difflib

import numpy as np
import pytest

from app.runtime import Engine, EngineConfig
from engine.backend import make_backend
from engine.events import Commit, Error, Partial
from engine.models.loading import load_model
from engine.streaming.session import SessionConfig, StreamingSession
from tests.s2t2_reference import VARIANTS, build_reference
from tests.speech import speech

# A random decoder is nearly uniform over its vocabulary (avg logprob ≈ -8): the guard that drops a real model's
# guesses on noise would drop everything, so it is moved out of the way; everything else is the default.
RANDOM_MODEL = {"logprob_threshold": -100.0}


@pytest.fixture(scope="module")
def s2t2(tmp_path_factory):
    """A loaded tiny S2T2 checkpoint (random weights, the real checkpoint's encoder style) and its backend."""
    _, _, path = build_reference(tmp_path_factory.mktemp("s2t2stream"), VARIANTS[1])
    bundle = load_model(str(path), device="cpu")
    return bundle, make_backend(bundle)


def _two_sentences(language: str, audio_dir, pause_s: float) -> np.ndarray:
    """Sentences 0 and 1 of a language, with a pause before, between and after."""
    pause = np.zeros(int(pause_s * 16000), np.float32)
    return np.concatenate([pause, speech(language, 0, audio_dir)[0], pause, speech(language, 1, audio_dir)[0], pause])


@pytest.fixture(scope="module")
def talk(audio_dir):
    """Two English sentences with pauses (the en→de direction of the real checkpoint)."""
    return _two_sentences("en", audio_dir, pause_s=1.0)


@pytest.fixture(scope="module")
def other_talk(audio_dir):
    """Two German sentences, another voice and length: a second speaker for the concurrency test."""
    return _two_sentences("de", audio_dir, pause_s=0.75)


def _stream(backend, config: SessionConfig, audio: np.ndarray) -> tuple[StreamingSession, list]:
    session = StreamingSession(backend, config)
    events = []
    for i in range(0, len(audio), 1600):
        session.feed_audio(audio[i : i + 1600], 16000)
        session.process()
        events += session.drain_events()
    session.finish()
    session.process()
    events += session.drain_events()
    return session, events


@pytest.mark.parametrize("policy", ["alignatt", "local-agreement"])
@pytest.mark.parametrize("mode", ["exact", "incremental"])
def test_s2t2_streams_with_every_policy_and_mode(s2t2, talk, policy, mode):
    """Streaming an S2T2 model commits append-only text in stream time, with no errors, for each policy/mode."""
    _, backend = s2t2
    session, events = _stream(backend, SessionConfig(task="translate", policy=policy, mode=mode, **RANDOM_MODEL), talk)
    assert not [e for e in events if isinstance(e, Error)]
    commits = [e for e in events if isinstance(e, Commit)]
    assert commits, "a random decoder still emits tokens for speech"
    assert "".join(c.text for c in commits) == session.transcript
    starts = [c.start_s for c in commits]
    assert starts == sorted(starts) and all(c.end_s >= c.start_s for c in commits)
    assert commits[-1].end_s <= len(talk) / 16000 + 0.5
    assert any(isinstance(e, Partial) for e in events) or len(commits) >= 2


def test_s2t2_sessions_run_concurrently_in_the_engine(s2t2, talk, other_talk):
    """Two S2T2 sessions in one asyncio Engine (batched), fed different speech at the same time, each get the text
    their own audio gets alone, not the other's."""
    _, backend = s2t2
    config = SessionConfig(task="translate", **RANDOM_MODEL)
    audios = [talk, other_talk]
    alone = [_stream(backend, config, audio)[0].transcript for audio in audios]

    async def run() -> list[str]:
        async with Engine(backend, EngineConfig(batch=True)) as engine:
            lives = [engine.open_session(config) for _ in audios]

            async def collect(live) -> str:
                return "".join([e.text async for e in live.events() if isinstance(e, Commit)])

            tasks = [asyncio.create_task(collect(lv)) for lv in lives]
            for i in range(0, max(map(len, audios)), 1600):
                for lv, audio in zip(lives, audios):
                    if i < len(audio):
                        lv.feed_audio(audio[i : i + 1600], 16000)
                await asyncio.sleep(0)
            await asyncio.gather(*(lv.finish() for lv in lives))
            batched = engine.batched_passes
            return [*await asyncio.gather(*tasks), batched]

    *texts, batched = asyncio.run(run())
    assert batched > 0  # the two were encoded together at least once
    assert all(t.strip() for t in texts)
    assert alone[0] != alone[1]  # the two audios give different text, so a mix-up would show

    def similarity(a: str, b: str) -> float:
        return difflib.SequenceMatcher(None, a.split(), b.split()).ratio()

    # each session's text is its own audio's (equal on this machine; "closer" leaves room for batched float noise)
    for text, own, other in zip(texts, alone, alone[::-1]):
        assert similarity(text, own) > similarity(text, other), (text, own, other)
