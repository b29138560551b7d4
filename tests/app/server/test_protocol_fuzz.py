"""Property-based tests over the sans-I/O protocol: whatever a client sends, the parser answers a typed message or a
ProtocolError with a stable code — never another exception, never a hang — and the connection's phase stays sane.

Example counts (the issue asks for >= 10,000 malformed inputs in CI across the fuzz tests): 2,500 + 3,000 + 2,000
+ 1,000 sequences (up to 40 messages each) + 500 here, plus tests/engine/streaming/test_session_fuzz.py and test_connection_fuzz.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.server import protocol as p
from app.server.limits import TokenBucket
from app.server.protocol import ConnectionProtocol, ErrorCode, Phase, ProtocolError, ProtocolLimits

LIMITS = ProtocolLimits(max_text_bytes=4096, max_audio_frame_bytes=4096, max_sdp_bytes=1024, max_candidate_bytes=200)
FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "type",
    "task",
    "language",
    "sample_rate",
    "encoding",
    "protocol",
    "sdp",
    "candidate",
    "sdpMid",
    "sdpMLineIndex",
]
TYPES = ["start", "stop", "offer", "ice", "language", "START", "", "answer", "ready"]
interesting = st.sampled_from(
    [
        "translate",
        "transcribe",
        "de",
        "auto",
        "",
        "pcm_s16le",
        "pcm_f32le",
        16000,
        48000,
        7999,
        192001,
        44100.0,
        16000.5,
        float("inf"),
        float("nan"),
        -1,
        0,
        2**63,
        True,
        False,
        None,
        "v=0\r\n",
        "candidate:1 1 udp 1 x 1 typ",
        "v=0" + "x" * 2000,
        1,
        2,
        63,
        64,
        "de" * 40,
        "xx-yy",
        [],
        {},
    ]
)
messages = st.fixed_dictionaries({}, optional={"type": st.sampled_from(TYPES) | json_values}).flatmap(
    lambda base: st.dictionaries(st.sampled_from(FIELDS), interesting | json_values, max_size=6).map(
        lambda extra: {**base, **extra}
    )
)


def _dumps(obj: object) -> str:
    # NaN/inf are not JSON, but a client's json library may still write them: the parser must cope either way
    return json.dumps(obj, allow_nan=True)


def check_message(message: p.ClientMessage) -> None:
    """A parsed message always satisfies the documented ranges."""
    if isinstance(message, p.Start):
        assert message.task in p.TASKS and message.encoding in p.ENCODINGS
        assert LIMITS.min_sample_rate <= message.sample_rate <= LIMITS.max_sample_rate
        assert isinstance(message.sample_rate, int) and not isinstance(message.sample_rate, bool)
        assert message.language is None or (2 <= len(message.language) <= 3 and message.language.isalpha())
    elif isinstance(message, p.Offer):
        assert message.sdp.startswith("v=0") and len(message.sdp.encode()) <= LIMITS.max_sdp_bytes
    elif isinstance(message, p.Ice):
        assert message.candidate is None or len(message.candidate.encode()) <= LIMITS.max_candidate_bytes
        assert message.sdp_mline_index is None or 0 <= message.sdp_mline_index < 64
    elif isinstance(message, p.SetLanguage):
        assert message.language is None or (2 <= len(message.language) <= 3 and message.language.isalpha())
    else:
        assert isinstance(message, p.Stop)


def check_error(e: ProtocolError) -> None:
    """Errors carry a stable code and a message that renders as a valid server JSON message."""
    assert isinstance(e.code, ErrorCode) and isinstance(e.message, str) and e.message
    out = json.loads(p.ErrorMessage(e.code, e.message).to_json())
    assert out["type"] == "error" and out["code"] == e.code.value


def parse(text: str) -> None:
    try:
        message = p.parse_text(text, LIMITS)
    except ProtocolError as e:
        check_error(e)
    else:
        check_message(message)


@settings(max_examples=2500, **FAST)
@given(
    st.text(max_size=300)
    | st.text(alphabet='{}[]":,0123456789.eE+-truefalsnl \\u', max_size=80)
    | st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape"))
)
def test_any_text_parses_or_fails_with_a_code(text):
    """Arbitrary text (junk, JSON fragments, lone surrogates) gives a message or a coded ProtocolError."""
    parse(text)


@pytest.mark.slow
@settings(max_examples=3000, **FAST)
@given(messages | json_values.map(lambda v: {"type": "start", "x": v}) | json_values)
def test_json_with_missing_and_wrong_fields_parses_or_fails_with_a_code(obj):
    """Any JSON value, and objects mixing the protocol's field names with wrong types and values, never crash."""
    parse(_dumps(obj))


def test_deep_nesting_and_huge_numbers_are_protocol_errors():
    """Pathological JSON (deep nesting, 10^5-digit numbers, oversize text) gives bad_json/bad_message/too_large."""
    for text, code in [
        ("[" * 100_000 + "]" * 100_000, ErrorCode.TOO_LARGE),
        ("[" * 2000 + "]" * 2000, ErrorCode.BAD_JSON),
        ('{"type":"start","sample_rate":1' + "0" * 3000 + "}", ErrorCode.BAD_MESSAGE),
        ('{"type":"start","sample_rate":1e400}', ErrorCode.BAD_MESSAGE),
        ('{"type":"start","sample_rate":NaN}', ErrorCode.BAD_MESSAGE),
    ]:
        try:
            p.parse_text(text, LIMITS)
        except ProtocolError as e:
            assert e.code in (code, ErrorCode.BAD_JSON), (text[:40], e.code)
        else:
            raise AssertionError(f"{text[:40]!r} was accepted")


@pytest.mark.slow
@settings(max_examples=2000, **FAST)
@given(
    data=st.binary(max_size=5000)
    | st.builds(lambda n, v: np.full(n, v, "<f4").tobytes(), st.integers(0, 300), st.floats(width=32)),
    encoding=st.sampled_from(list(p.ENCODINGS)),
    rate=st.integers(8000, 192000),
)
def test_binary_frames_decode_to_finite_audio_or_fail_with_a_code(data, encoding, rate):
    """Any bytes in either encoding give finite samples in [-1, 1] of the right length, or bad_audio/too_large."""
    try:
        audio = p.decode_audio(data, encoding, rate, LIMITS)
    except ProtocolError as e:
        check_error(e)
        assert e.code in (ErrorCode.BAD_AUDIO, ErrorCode.TOO_LARGE)
        assert (
            not data
            or len(data) > LIMITS.max_audio_frame_bytes
            or len(data) % p.ENCODINGS[encoding].itemsize
            or encoding == "pcm_f32le"
        )
    else:
        assert audio.samples.dtype == np.float32 and audio.sample_rate == rate
        assert audio.samples.size == len(data) // p.ENCODINGS[encoding].itemsize > 0
        assert np.isfinite(audio.samples).all() and np.abs(audio.samples).max() <= 1.0


actions = st.one_of(
    messages.map(lambda m: ("text", _dumps(m))),
    st.sampled_from(
        [
            '{"type":"start"}',
            '{"type":"stop"}',
            '{"type":"start","encoding":"pcm_f32le"}',
            '{"type":"offer","sdp":"v=0\\r\\n"}',
            '{"type":"ice","candidate":null}',
            "{",
            "[]",
        ]
    ).map(lambda t: ("text", t)),
    st.binary(max_size=64).map(lambda b: ("binary", b)),
    st.just(("ended", None)),
)


@pytest.mark.slow
@settings(max_examples=1000, **FAST)
@given(st.lists(actions, max_size=40))
def test_message_sequences_keep_the_phase_consistent(steps):
    """Any sequence of messages (and flushes) keeps phase, start parameters and errors consistent with the rules."""
    proto = ConnectionProtocol(LIMITS)
    for kind, payload in steps:
        before = proto.phase
        try:
            if kind == "text":
                message = proto.receive_text(payload)
                check_message(message)
                if isinstance(message, p.Start):
                    assert before is Phase.IDLE and proto.phase is Phase.STREAMING and proto.start == message
                elif isinstance(message, p.Stop):
                    assert before is Phase.STREAMING and proto.phase is Phase.STOPPING
            elif kind == "binary":
                audio = proto.receive_binary(payload)
                assert before is Phase.STREAMING and audio.samples.size
            else:
                proto.session_ended()
                assert proto.phase is Phase.IDLE
        except ProtocolError as e:
            check_error(e)
            if e.code is ErrorCode.NOT_STARTED:
                assert before is not Phase.STREAMING
            if e.code is ErrorCode.ALREADY_STARTED:
                assert before is not Phase.IDLE
            assert proto.phase is before  # a rejected message never moves the phase
        assert (proto.phase is Phase.IDLE) == (proto.start is None)


@settings(max_examples=500, **FAST)
@given(
    rate=st.floats(0.5, 500),
    burst=st.floats(0, 100),
    items=st.lists(st.tuples(st.floats(0, 20), st.floats(0, 2)), min_size=1, max_size=60),
)
def test_token_bucket_admits_no_more_than_rate_and_burst(rate, burst, items):
    """A caller that waits as told gets at most burst + rate * elapsed + one item admitted, at any point in time."""
    bucket, now, admitted, t0 = TokenBucket(rate, burst), 0.0, 0.0, 0.0
    for amount, gap in items:
        now += gap
        wait = bucket.take(amount, now)
        admitted += amount
        assert admitted <= burst + rate * (now - t0) + amount + 1e-6 * (1 + admitted)
        assert wait >= 0 and math.isfinite(wait)
        now += wait  # the server does not read during the wait
    # refusing (try_take) never spends what it refused
    bucket.take(0.0, now + 1e6)  # refill to the brim
    assert not bucket.try_take(burst + 1.0, now + 1e6) and bucket.level == burst
    assert bucket.try_take(burst, now + 1e6) and bucket.level == 0
