"""Property-based tests over StreamingSession's input side: any array, any rate, any order of feed/finish gives
accepted audio or an AudioError/StreamStateError — never another exception — and the session still finishes.

feed_audio does no model work (validate, resample, append), so 1,200 examples run in seconds; the real embedded
backend is only needed to construct sessions.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, SAMPLE_RATE
from engine.errors import AudioError, EngineError
from engine.streaming.session import SessionConfig, StreamingSession

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

FAST = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

dtypes = st.sampled_from(["<i2", "<i4", "|u1", "<u2", "<f4", "<f8", "<f2", "|b1", "<c8", "<M8[s]", "|S2", "O"])
arrays = dtypes.flatmap(
    lambda dt: hnp.arrays(
        np.dtype(dt) if dt != "O" else np.dtype(object),
        st.one_of(
            st.integers(0, 400).map(lambda n: (n,)),
            st.tuples(st.integers(0, 100), st.integers(0, 4)),
            st.tuples(st.integers(0, 5), st.integers(0, 3), st.integers(0, 3)),
            st.just(()),
        ),
        elements=None if dt != "O" else st.none(),
    )
)
rates = st.one_of(
    st.integers(-10, 10**7),
    st.sampled_from([8000, 16000, 44100, 48000, 192000, 384000, 4000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)


def feed(session: StreamingSession, samples, rate) -> bool:
    """Feed one chunk; True if accepted. Only the documented exceptions may come out."""
    try:
        session.feed_audio(samples, rate)
    except (AudioError, EngineError) as e:
        assert str(e)
        return False
    return True


@settings(max_examples=1200, **FAST)
@given(chunks=st.lists(st.tuples(arrays, rates), min_size=1, max_size=6), finish_at=st.integers(0, 7))
def test_any_audio_is_accepted_or_refused_cleanly(backend, chunks, finish_at):
    """Arbitrary dtypes, shapes, NaN/inf, rates (absurd, fractional, non-numeric) and feed-after-finish never crash."""
    session = StreamingSession(backend, SessionConfig(language="de"))
    finished = False
    budget = 0.0
    for i, (samples, rate) in enumerate(chunks):
        if i == finish_at:
            session.finish()
            finished = True
        before = session.n_received
        ok = feed(session, samples, rate)
        if ok:
            assert not finished
            x = np.asarray(samples)
            assert x.ndim in (1, 2) and MIN_SAMPLE_RATE <= int(rate) <= MAX_SAMPLE_RATE
            assert session.n_received >= before
            # what comes out over the whole stream is bounded by what went in (a rate change flushes the previous
            # resampler's tail, so the bound is cumulative, with slack for rounding at each chunk)
            budget += x.shape[0] * SAMPLE_RATE / int(rate) + 64
            assert session.n_received <= budget
        else:
            assert session.n_received == before
    session.finish()
    session.finish()  # idempotent
    assert session.drain_events() == []  # nothing decoded yet: feed/finish never run the model
    assert np.isfinite(session.audio_s) and session.lag_s >= 0
