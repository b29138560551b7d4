"""The sans-I/O protocol: parsing, validation, phases and the messages the server builds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.server import protocol as p
from app.server.protocol import ConnectionProtocol, ErrorCode, Phase, ProtocolError, ProtocolLimits


def code_of(fn, *args) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value.code


def test_start_defaults():
    """A bare start means: translate, detect the language, 16 kHz 16-bit PCM."""
    assert p.parse_text('{"type": "start"}') == p.Start("translate", None, 16000, "pcm_s16le")


def test_start_full_and_language_normalised():
    """Every start field is read; 'auto' and '' mean detection, codes are lower-cased."""
    msg = p.parse_text(
        json.dumps(
            {
                "type": "start",
                "task": "transcribe",
                "language": "DE",
                "sample_rate": 48000.0,
                "encoding": "pcm_f32le",
                "protocol": 1,
            }
        )
    )
    assert msg == p.Start("transcribe", "de", 48000, "pcm_f32le")
    assert p.parse_text('{"type": "start", "language": "auto"}').language is None
    assert p.parse_text('{"type": "start", "language": ""}').language is None


@pytest.mark.parametrize(
    "text, code",
    [
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
    ],
)
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
    assert p.parse_text(json.dumps({"type": "ice", "candidate": line, "sdpMid": "0", "sdpMLineIndex": 0})) == p.Ice(
        line, "0", 0
    )
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
    assert json.loads(p.CommitMessage(" Hello", 1.23456, 2.0).to_json()) == {
        "type": "commit",
        "text": " Hello",
        "start_s": 1.235,
        "end_s": 2.0,
    }
    assert json.loads(p.StatsMessage(float("nan"), 0.5, 3.0).to_json()) == {
        "type": "stats",
        "lag_s": None,
        "rtf": 0.5,
        "audio_s": 3.0,
    }
    ready = json.loads(p.ReadyMessage("abc", ({"urls": ["stun:x:1"]},)).to_json())
    assert ready == {
        "type": "ready",
        "session": "abc",
        "protocol": p.PROTOCOL_VERSION,
        "sample_rate": 16000,
        "ice_servers": [{"urls": ["stun:x:1"]}],
    }
    assert json.loads(p.ErrorMessage(ErrorCode.BUSY, "full").to_json()) == {
        "type": "error",
        "code": "busy",
        "message": "full",
    }
    assert p.EndMessage().to_json() == '{"type":"end"}'
    assert p.PartialMessage("ü").to_json().startswith('{"type":"partial",')
    assert "ü" in p.PartialMessage("ü").to_json()  # not \\u-escaped: half the bytes on the wire


def test_server_messages_are_written_byte_for_byte_as_documented():
    """Every server message type, exactly as the page, the docs and deployed clients read it: field order, compact
    separators, UTF-8 unescaped, times in ms."""
    written = [
        (
            p.ReadyMessage("s1", ({"urls": ["stun:x:1"]},), replica="r1"),
            '{"type":"ready","session":"s1","protocol":1,"sample_rate":16000,"ice_servers":[{"urls":["stun:x:1"]}],'
            '"replica":"r1"}',
        ),
        (p.ReadyMessage("s1"), '{"type":"ready","session":"s1","protocol":1,"sample_rate":16000,"ice_servers":[]}'),
        (p.PartialMessage(" grüß", 0.5, None), '{"type":"partial","text":" grüß","start_s":0.5,"end_s":null}'),
        (p.CommitMessage(" Hi", 1.0004, 2.5), '{"type":"commit","text":" Hi","start_s":1.0,"end_s":2.5}'),
        (
            p.TargetPartialMessage("de", "Hal", "Hel"),
            '{"type":"target_partial","target":"de","text":"Hal","source_text":"Hel"}',
        ),
        (
            p.TargetCommitMessage("de", "Hallo.", "Hello.", 0.0, 1.2, 0.3456),
            '{"type":"target_commit","target":"de","text":"Hallo.","source_text":"Hello.","start_s":0.0,'
            '"end_s":1.2,"latency_s":0.346}',
        ),
        (p.StatsMessage(0.25, 0.5, float("inf")), '{"type":"stats","lag_s":0.25,"rtf":0.5,"audio_s":null}'),
        (p.LanguageMessage("de", False), '{"type":"language","language":"de","decided":false}'),
        (p.RestartedMessage("s2", None), '{"type":"restarted","session":"s2","language":null}'),
        (p.AnswerMessage("v=0"), '{"type":"answer","sdp":"v=0"}'),
        (p.ErrorMessage(ErrorCode.BUSY, "full"), '{"type":"error","code":"busy","message":"full"}'),
        (p.ErrorMessage("oom", "engine"), '{"type":"error","code":"oom","message":"engine"}'),
        (p.EndMessage(), '{"type":"end"}'),
        (
            p.RoomMessage("ab12", "tok", 200),
            '{"type":"room","room":"ab12","viewer_token":"tok","watch_path":"/watch/ab12?token=tok","viewers":200}',
        ),
        (p.RoomEndMessage("over"), '{"type":"room_end","reason":"over"}'),
        (p.JoinedMessage("ab12", True, 3), '{"type":"joined","room":"ab12","live":true,"replayed":3}'),
    ]
    for message, text in written:
        assert message.to_json() == text


def test_only_superseded_messages_may_be_dropped():
    """Under backpressure partials, target partials and stats go first (a later one replaces them); commits, errors
    and the session's bookends never do."""
    droppable = {
        m.type
        for m in (p.PartialMessage("x"), p.TargetPartialMessage("de", "x", "y"), p.StatsMessage(0, 1, 1))
        if m.droppable
    }
    kept = [
        p.CommitMessage("x", 0, 1),
        p.TargetCommitMessage("de", "x", "y", 0, 1, 0),
        p.ErrorMessage("busy", "x"),
        p.ReadyMessage("s"),
        p.EndMessage(),
        p.AnswerMessage("v=0"),
        p.LanguageMessage("de", True),
        p.RestartedMessage("s", None),
        p.RoomMessage("r", "t", 1),
    ]
    assert droppable == {"partial", "target_partial", "stats"}
    assert not any(m.droppable for m in kept)
