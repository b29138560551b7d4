"""The sans-I/O protocol: parsing, validation, phases and the messages the server builds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app import protocol as p
from app.protocol import ConnectionProtocol, ErrorCode, Phase, ProtocolError, ProtocolLimits


def code_of(fn, *args) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value.code


def test_start_defaults():
    """A bare start means: translate, detect the language, 16 kHz 16-bit PCM."""
    assert p.parse_text('{"type": "start"}') == p.Start("translate", None, 16000, "pcm_s16le")


def test_start_full_and_language_normalised():
    """Every start field is read; 'auto' and '' mean detection, codes are lower-cased."""
    msg = p.parse_text(json.dumps({"type": "start", "task": "transcribe", "language": "DE", "sample_rate": 48000.0,
                                   "encoding": "pcm_f32le", "protocol": 1}))
    assert msg == p.Start("transcribe", "de", 48000, "pcm_f32le")
    assert p.parse_text('{"type": "start", "language": "auto"}').language is None
    assert p.parse_text('{"type": "start", "language": ""}').language is None


@pytest.mark.parametrize("text, code", [
    ("not json", ErrorCode.BAD_JSON),
    ("[1, 2]", ErrorCode.BAD_JSON),
    ('{"no": "type"}', ErrorCode.BAD_MESSAGE),
    ('{"type": 3}', ErrorCode.BAD_MESSAGE),
    ('{"type": "dance"}', ErrorCode.UNKNOWN_TYPE),
    ('{"type": "start", "task": "summarise"}', ErrorCode.BAD_MESSAGE),
    ('{"type": "start", "language": "german!"}', ErrorCode.BAD_MESSAGE),
    ('{"type": "start", "language": 7}', ErrorCode.BAD_MESSAGE),
    ('{"type": "start", "sample_rate": 100}', ErrorCode.BAD_MESSAGE),
    ('{"type": "start", "sample_rate": 1e9}', ErrorCode.BAD_MESSAGE),
    ('{"type": "start", "sample_rate": 16000.5}', ErrorCode.BAD_MESSAGE),
    ('{"type": "start", "sample_rate": true}', ErrorCode.BAD_MESSAGE),
    ('{"type": "start", "sample_rate": "16000"}', ErrorCode.BAD_MESSAGE),
    ('{"type": "start", "encoding": "mp3"}', ErrorCode.BAD_MESSAGE),
    ('{"type": "start", "protocol": 2}', ErrorCode.UNSUPPORTED_VERSION),
    ('{"type": "offer"}', ErrorCode.BAD_MESSAGE),
    ('{"type": "offer", "sdp": "hello"}', ErrorCode.BAD_MESSAGE),
    ('{"type": "ice", "sdpMLineIndex": -1, "candidate": null}', ErrorCode.BAD_MESSAGE),
])
def test_bad_messages_get_stable_codes(text, code):
    """Each kind of malformed message is rejected with its documented error code."""
    assert code_of(p.parse_text, text) is code


def test_size_limits_are_config():
    """Text, SDP and audio size limits come from ProtocolLimits and answer too_large."""
    limits = ProtocolLimits(max_text_bytes=100, max_audio_frame_bytes=64, max_sdp_bytes=10)
    assert code_of(p.parse_text, '{"type": "start", "pad": "' + "x" * 200 + '"}', limits) is ErrorCode.TOO_LARGE
    assert code_of(p.parse_text, '{"type": "offer", "sdp": "v=0 and more"}', limits) is ErrorCode.TOO_LARGE
    assert code_of(p.decode_audio, bytes(66), "pcm_s16le", 16000, limits) is ErrorCode.TOO_LARGE
    # multi-byte characters count as bytes, not characters
    assert code_of(p.parse_text, '{"type":"start","x":"' + "ü" * 45 + '"}', limits) is ErrorCode.TOO_LARGE


def test_ice_candidate_parsing():
    """An ICE message keeps candidate, mid and index; null or empty candidate marks the end."""
    line = "candidate:1 1 udp 2122260223 192.168.1.2 54321 typ host"
    assert p.parse_text(json.dumps({"type": "ice", "candidate": line, "sdpMid": "0", "sdpMLineIndex": 0})) == \
        p.Ice(line, "0", 0)
    assert p.parse_text('{"type": "ice", "candidate": ""}') == p.Ice(None)


def test_decode_s16_and_f32():
    """PCM frames decode to float32 in [-1, 1]; f32 peaks are clipped, NaN is refused."""
    s16 = np.array([0, 16384, -32768, 32767], "<i2").tobytes()
    audio = p.decode_audio(s16, "pcm_s16le", 16000)
    assert audio.samples.dtype == np.float32
    np.testing.assert_allclose(audio.samples, [0, 0.5, -1, 32767 / 32768])
    f32 = np.array([0.25, 1.5, -2.0], "<f4").tobytes()
    np.testing.assert_allclose(p.decode_audio(f32, "pcm_f32le", 48000).samples, [0.25, 1.0, -1.0])
    nan = np.array([0.1, np.nan], "<f4").tobytes()
    assert code_of(p.decode_audio, nan, "pcm_f32le", 16000) is ErrorCode.BAD_AUDIO
    assert code_of(p.decode_audio, b"\x00\x01\x02", "pcm_s16le", 16000) is ErrorCode.BAD_AUDIO
    assert code_of(p.decode_audio, b"\x00" * 6, "pcm_f32le", 16000) is ErrorCode.BAD_AUDIO
    assert code_of(p.decode_audio, b"", "pcm_s16le", 16000) is ErrorCode.BAD_AUDIO


def test_phases():
    """Audio and stop need a start; start twice is refused; after the session ends a new start is allowed."""
    conn = ConnectionProtocol()
    assert code_of(conn.receive_binary, b"\x00\x00") is ErrorCode.NOT_STARTED
    assert code_of(conn.receive_text, '{"type": "stop"}') is ErrorCode.NOT_STARTED
    assert code_of(conn.receive_text, '{"type": "offer", "sdp": "v=0"}') is ErrorCode.NOT_STARTED
    conn.receive_text('{"type": "start", "sample_rate": 8000}')
    assert conn.phase is Phase.STREAMING
    assert code_of(conn.receive_text, '{"type": "start"}') is ErrorCode.ALREADY_STARTED
    assert conn.receive_binary(b"\x00\x40").sample_rate == 8000
    conn.receive_text('{"type": "offer", "sdp": "v=0"}')
    assert code_of(conn.receive_text, '{"type": "offer", "sdp": "v=0"}') is ErrorCode.BAD_MESSAGE
    conn.receive_text('{"type": "stop"}')
    assert conn.phase is Phase.STOPPING
    assert code_of(conn.receive_binary, b"\x00\x00") is ErrorCode.NOT_STARTED
    assert code_of(conn.receive_text, '{"type": "start"}') is ErrorCode.ALREADY_STARTED
    conn.session_ended()
    assert isinstance(conn.receive_text('{"type": "start"}'), p.Start)


def test_server_messages_are_json_with_rounded_times():
    """Outgoing messages are compact JSON; times round to ms and NaN becomes null."""
    assert json.loads(p.commit_message(" Hello", 1.23456, 2.0)) == \
        {"type": "commit", "text": " Hello", "start_s": 1.235, "end_s": 2.0}
    assert json.loads(p.stats_message(float("nan"), 0.5, 3.0)) == \
        {"type": "stats", "lag_s": None, "rtf": 0.5, "audio_s": 3.0}
    ready = json.loads(p.ready_message("abc", [{"urls": ["stun:x:1"]}]))
    assert ready == {"type": "ready", "session": "abc", "protocol": p.PROTOCOL_VERSION, "sample_rate": 16000,
                     "ice_servers": [{"urls": ["stun:x:1"]}]}
    assert json.loads(p.error_message(ErrorCode.BUSY, "full")) == {"type": "error", "code": "busy", "message": "full"}
    assert p.message_type(p.end_message()) == "end"
    assert p.message_type(p.partial_message("ü")) == "partial"
    assert "ü" in p.partial_message("ü")  # not \\u-escaped: half the bytes on the wire
