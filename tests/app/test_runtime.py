"""Engine: concurrent live sessions on one model, model work off the event loop, batched and fair."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import sacrebleu

from app.runtime import Engine, EngineBusy, EngineConfig
from engine.audio import SAMPLE_RATE
from engine.events import Commit, Error
from engine.streaming.session import SessionConfig
from tests.speech import speech


async def run_stream(live, audio: np.ndarray, chunk_s: float = 0.5) -> list:
    """Feed audio in chunks (yielding to the loop between them), finish, and collect every event."""
    events = []

    async def collect():
        async for e in live.events():
            events.append(e)

    task = asyncio.create_task(collect())
    step = int(chunk_s * SAMPLE_RATE)
    for i in range(0, len(audio), step):
        live.feed_audio(audio[i : i + step], SAMPLE_RATE)
        await asyncio.sleep(0.01)
    await live.finish()
    await asyncio.wait_for(task, 60)
    return events


def text_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, Commit))


@pytest.fixture(scope="module")
def three_streams(audio_dir):
    """German, French and English speech, each with its reference and task."""
    out = []
    for lang, task in (("de", "translate"), ("fr", "translate"), ("en", "transcribe")):
        audio, utt = speech(lang, 0, audio_dir)
        audio = np.concatenate([audio, np.zeros(SAMPLE_RATE // 2, np.float32)])
        out.append((audio, utt, SessionConfig(task=task, language=lang)))
    return out


@pytest.mark.parametrize("batch", [True, False])
async def test_concurrent_sessions_get_their_own_text(backend, three_streams, batch):
    """Three simultaneous streams (de→en, fr→en, en) each get their own, unmixed text, batched or not."""
    async with Engine(backend, EngineConfig(batch=batch)) as engine:
        lives = [engine.open_session(cfg, session_id=f"s{i}") for i, (_, _, cfg) in enumerate(three_streams)]
        results = await asyncio.gather(*(run_stream(lv, a) for lv, (a, _, _) in zip(lives, three_streams)))
        if batch:
            assert engine.batched_passes > 0
        assert engine.n_sessions == 0  # finished sessions free their slot
    refs = [u.english for _, u, _ in three_streams]
    # Words only one reference has ("Berlin", "cinema", "coffee", ...): a stream's text must not contain another
    # stream's. (chrF margins between the references alone are fragile: they share "Today we ... talk about".)
    words = [{w.strip(".,'").lower() for w in r.split() if len(w.strip(".,'")) > 4} for r in refs]
    only = [w - set().union(*(o for j, o in enumerate(words) if j != i)) for i, w in enumerate(words)]
    for i, events in enumerate(results):
        text = text_of(events)
        said = {w.strip(".,'!?").lower() for w in text.split()}
        assert sacrebleu.sentence_chrf(text, [refs[i]]).score >= 35, (text, refs[i])
        assert said & only[i], (text, refs[i])
        for j, theirs in enumerate(only):
            assert j == i or not said & theirs, (text, refs[j])
    assert all(lv.lag_s == 0 and lv.audio_s > 3 and 0 < lv.rtf < 5 for lv in lives)


async def test_engine_busy_beyond_max_sessions(backend):
    """Opening more sessions than max_sessions raises EngineBusy; closing one frees its slot."""
    async with Engine(backend, EngineConfig(max_sessions=2)) as engine:
        a = engine.open_session(SessionConfig())
        engine.open_session(SessionConfig())
        with pytest.raises(EngineBusy):
            engine.open_session(SessionConfig())
        a.close()
        engine.open_session(SessionConfig())


async def test_failure_in_one_session_leaves_the_others_running(backend, three_streams, caplog):
    """A session whose model work raises gets one Error("internal"); a concurrent session still finishes."""
    async with Engine(backend) as engine:
        bad = engine.open_session(SessionConfig(language="de"), session_id="bad")
        good = engine.open_session(three_streams[2][2], session_id="good")

        def boom(*args, **kwargs):
            raise RuntimeError("simulated model failure")

        bad.session.end_decode = boom
        bad_events, good_events = await asyncio.gather(
            run_stream(bad, three_streams[0][0]), run_stream(good, three_streams[2][0])
        )
    errors = [e for e in bad_events if isinstance(e, Error)]
    assert len(errors) == 1 and errors[0].code == "internal"
    assert "Good morning" in text_of(good_events)
    assert sum("[bad]" in r.getMessage() for r in caplog.records) == 1


async def test_model_work_does_not_block_the_loop(backend, three_streams):
    """Feeding a whole stream at once returns immediately, and while the worker thread decodes it the event loop
    keeps running: a 10 ms ticker is never held up for even half of one decoder update (model work on the loop
    would hold it up for whole updates)."""
    gaps: list[float] = []
    decoding = True

    async def ticker() -> None:
        last = time.perf_counter()
        while decoding:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with Engine(backend) as engine:
        live = engine.open_session(three_streams[2][2])
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        live.feed_audio(three_streams[2][0], SAMPLE_RATE)
        assert time.perf_counter() - t0 < 0.1
        events = []

        async def collect():
            async for e in live.events():
                events.append(e)

        task = asyncio.create_task(collect())
        await live.finish()
        await task
        decoding = False
        await ticking
    assert "coffee" in text_of(events).lower()
    stats = live.session.stats
    update_s = stats.compute_s / stats.n_updates  # a decoder update's mean wall time in the worker
    assert update_s > 0.05, stats  # real model work, long enough to show on the ticker if it ran on the loop
    assert max(gaps) < update_s / 2, (max(gaps), stats)


async def test_scheduling_is_fair_between_a_busy_and_a_quiet_session(tiny_backend):
    """Two sessions, one fed four times as much audio as the other, both always with audio waiting: each gets a
    decoder update at least every other round, i.e. neither waits more than two of the other's updates while it
    has work (round-robin; a scheduler that served the busy one while it had work would starve the quiet one)."""
    config = SessionConfig(task="transcribe", language="en", use_vad=False, logprob_threshold=-100.0)
    noise = 0.1 * np.random.default_rng(0).standard_normal(SAMPLE_RATE * 60).astype(np.float32)
    per_tick = {"busy": 4 * SAMPLE_RATE, "quiet": SAMPLE_RATE}  # audio fed every 50 ms: 80x and 20x real time
    updates: list[tuple[str, bool]] = []  # (whose update, whether the other one had work meanwhile)
    async with Engine(tiny_backend) as engine:
        lives = {name: engine.open_session(config, session_id=name) for name in per_tick}
        for name, other in (("busy", "quiet"), ("quiet", "busy")):
            session, waiting = lives[name].session, lives[other].session

            def next_update(next_update=session.next_update, name=name, waiting=waiting):
                update = next_update()
                if update is not None:  # called in the worker thread, which owns both sessions' state
                    updates.append((name, waiting.has_work()))
                return update

            session.next_update = next_update
        drains = [asyncio.create_task(_drain(live)) for live in lives.values()]
        fed = dict.fromkeys(per_tick, 0)
        t0 = time.perf_counter()
        while len(updates) < 16 and time.perf_counter() - t0 < 60:
            for name, live in lives.items():
                start = fed[name] % (len(noise) - per_tick[name])
                live.feed_audio(noise[start : start + per_tick[name]], SAMPLE_RATE)
                fed[name] += per_tick[name]
            await asyncio.sleep(0.05)
        contested = list(updates)
        await asyncio.gather(*(live.finish() for live in lives.values()))
        await asyncio.gather(*drains)
    assert len(contested) >= 16, contested
    assert {name for name, _ in contested} == set(per_tick)
    assert sum(other_had_work for _, other_had_work in contested) >= 8, contested  # they really competed
    waited = dict.fromkeys(per_tick, 0)  # the other's updates since one's own, while one had work
    for name, other_had_work in contested:
        waited[name] = 0
        other = "quiet" if name == "busy" else "busy"
        if other_had_work:
            waited[other] += 1
            assert waited[other] <= 2, (other, contested)


async def _drain(live) -> list:
    return [e async for e in live.events()]


async def test_a_whole_window_is_encoded_alone_and_the_rest_batched(tiny_backend, monkeypatch):
    """A segment's last update filled to the whole 30 s window (SessionConfig.last_window_s) is encoded on its own:
    batched, it would pad every other window to 30 s. The others still share one pass; every output equals its
    window encoded alone."""
    rng = np.random.default_rng(0)
    audios = [(0.1 * rng.standard_normal(int(s * SAMPLE_RATE))).astype(np.float32) for s in (2.0, 30.0, 3.0)]
    batched: list[list[int]] = []
    encode_batch = tiny_backend.encode_batch

    def spy(windows):
        batched.append([len(w) for w in windows])
        return encode_batch(windows)

    monkeypatch.setattr(tiny_backend, "encode_batch", spy)
    async with Engine(tiny_backend, EngineConfig(batch=True)) as engine:
        out = engine._encode(audios)
        assert engine.batched_passes == 1
    assert batched == [[2 * SAMPLE_RATE, 3 * SAMPLE_RATE]]
    for a, enc in zip(audios, out):
        alone = tiny_backend.encode(a)
        assert enc.shape == alone.shape
        assert np.allclose(enc.float().cpu().numpy(), alone.float().cpu().numpy(), atol=1e-3)
