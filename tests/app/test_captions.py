"""Caption files: cue rules, valid WebVTT/SRT that independent parsers read back, incremental writing."""

from __future__ import annotations

import html
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import srt
import webvtt

from app.captions import (
    CaptionConfig,
    CaptionWriter,
    Cue,
    build_cues,
    caption_format,
    format_captions,
    wrap_lines,
    write_captions,
)
from engine.errors import ConfigError
from engine.events import Commit
from tests import REPO

# Commits as a streaming session emits them: a few words each, stream time, pauses between sentences.
TALK = [
    Commit(" Good morning.", 0.20, 1.00),
    Commit(" Today the weather in Berlin", 1.20, 2.60),
    Commit(" is very nice, and we are going", 2.60, 4.00),
    Commit(" to the park in the afternoon.", 4.00, 5.60),
    Commit(" Please send", 7.00, 7.60),
    Commit(" me the report <by> Friday & co.", 7.60, 9.00),
    Commit(" Thank you very much for your help", 9.20, 10.9),
    Commit(" and see you", 12.5, 13.0),
    Commit(" next week.", 13.0, 13.6),
]
TALK_TEXT = " ".join("".join(c.text for c in TALK).split())


def _words(text: str) -> list[str]:
    return text.split()


def _vtt_cues(path: Path) -> list[tuple[float, float, str]]:
    # webvtt-py returns the raw cue payload; a WebVTT renderer unescapes character references
    return [(_secs(c.start), _secs(c.end), html.unescape(c.text)) for c in webvtt.read(str(path))]


def _secs(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s.replace(",", "."))


def test_vtt_parses_back_with_every_word_in_order(tmp_path: Path) -> None:
    """A WebVTT file written from commits parses with webvtt-py and holds exactly the committed words, in order."""
    path = tmp_path / "talk.vtt"
    n = write_captions(TALK, path)
    cues = _vtt_cues(path)
    assert len(cues) == n >= 4
    assert _words(" ".join(text for _, _, text in cues)) == _words(TALK_TEXT)
    assert "&lt;by&gt; Friday &amp; co." in path.read_text()  # markup characters are escaped


def test_srt_parses_back_with_every_word_in_order(tmp_path: Path) -> None:
    """An SRT file parses with the srt package (strictly), is numbered from 1 and holds the committed words."""
    path = tmp_path / "talk.srt"
    write_captions(TALK, path)
    subs = list(srt.parse(path.read_text(encoding="utf-8"), ignore_errors=False))
    assert [s.index for s in subs] == list(range(1, len(subs) + 1))
    assert _words(" ".join(s.content for s in subs)) == _words(TALK_TEXT)
    assert srt.compose(subs, reindex=False) == path.read_text(encoding="utf-8")


def test_timings_are_stream_time_ordered_and_within_limits(tmp_path: Path) -> None:
    """Cues start when their first word is spoken, never overlap, and last between the minimum and maximum."""
    cfg = CaptionConfig()
    cues = build_cues(TALK, cfg)
    assert cues[0].start_s == pytest.approx(0.2)
    assert cues[0].lines == ("Good morning.",)  # sentence end closes the cue
    for prev, cue in zip(cues, cues[1:]):
        assert cue.start_s >= prev.end_s
    for cue in cues:
        assert cfg.min_duration_s - 1e-9 <= cue.end_s - cue.start_s <= cfg.max_duration_s + 1e-9
    starts = {c.lines[0].split()[0]: c.start_s for c in cues}
    assert starts["Please"] == pytest.approx(7.0)  # after the 1.4 s pause, a new cue at the pause's end
    assert starts["and"] == pytest.approx(12.5)  # likewise after the pause inside a sentence
    assert cues[-1].end_s == pytest.approx(13.6)


def test_cues_hold_at_most_two_lines_of_42_characters() -> None:
    """Long unpunctuated speech is split into cues of at most two balanced lines of at most 42 characters."""
    words = (
        "we keep talking about the weather and the trains and the price of coffee in the city while nobody "
        "stops for breath or punctuation because this is a stream of consciousness"
    ).split()
    commits = [Commit(" " + w, 0.3 * i, 0.3 * i + 0.3) for i, w in enumerate(words)]
    cues = build_cues(commits)
    assert len(cues) >= 3
    for cue in cues:
        assert 1 <= len(cue.lines) <= 2
        assert all(len(line) <= 42 for line in cue.lines)
        if len(cue.lines) == 2:  # balanced: no one-word stub under a full line
            assert abs(len(cue.lines[0]) - len(cue.lines[1])) <= 12
    assert [w for c in cues for w in c.text.split()] == words


def test_full_cue_breaks_after_a_comma() -> None:
    """When a sentence overflows a cue, the cue ends at its last clause boundary rather than mid-clause."""
    cues = build_cues(TALK[1:4])
    assert cues[0].text == "Today the weather in Berlin is very nice,"
    assert cues[1].text.replace("\n", " ") == "and we are going to the park in the afternoon."


def test_full_cue_without_comma_breaks_before_a_conjunction() -> None:
    """Without a clause-ending comma, a full cue ends before its last conjunction instead of orphaning a word."""
    commits = [
        Commit("Today is the weather in Berlin very nice and we go to the afternoon", 1.4, 6.8),
        Commit(" in the park.", 6.8, 8.7),
    ]
    assert [c.text.replace("\n", " ") for c in build_cues(commits)] == [
        "Today is the weather in Berlin very nice",
        "and we go to the afternoon in the park.",
    ]


def test_max_duration_splits_slow_speech() -> None:
    """Words spoken slowly without punctuation or pauses never make a cue longer than max_duration_s."""
    commits = [Commit(f" w{i}", 0.6 * i, 0.6 * i + 0.6) for i in range(30)]
    cues = build_cues(commits, CaptionConfig(max_duration_s=4.0))
    assert len(cues) >= 4
    assert all(c.end_s - c.start_s <= 4.0 + 1e-9 for c in cues)


def test_short_cue_is_extended_and_next_cue_shifted() -> None:
    """A one-word sentence stays on screen min_duration_s; the next cue starts after it instead of overlapping."""
    cues = build_cues([Commit(" Yes.", 1.0, 1.2), Commit(" Then we go home now.", 1.4, 2.8)])
    assert (cues[0].start_s, cues[0].end_s) == (1.0, 2.0)
    assert cues[1].start_s == 2.0 and cues[1].end_s == pytest.approx(3.0)  # still min_duration_s on screen


def test_text_without_spaces_is_cut_to_line_length() -> None:
    """CJK text (no spaces) is cut into line-sized pieces instead of overflowing a line."""
    text = "今天天气很好我们下午去公园散步然后一起吃晚饭" * 4
    cues = build_cues([Commit(text, 0.0, 8.0)])
    assert "".join("".join(c.lines) for c in cues) == text
    assert all(len(line) <= 42 for c in cues for line in c.lines)


def test_wrap_lines_refuses_what_does_not_fit() -> None:
    """wrap_lines returns None for text that needs more than max_lines lines."""
    assert wrap_lines(["a" * 20] * 5, 42, 2) is None
    assert wrap_lines(["short", "text"], 42, 2) == ("short text",)


def test_commits_with_odd_times_still_give_valid_monotonic_cues(tmp_path: Path) -> None:
    """Overlapping, zero-length and empty commits still give ordered, non-overlapping cues that parse back."""
    commits = [
        Commit(" One two.", 2.0, 2.0),
        Commit("", 2.0, 2.5),
        Commit(" three four", 1.5, 1.8),
        Commit(" five -->six.", 3.0, 2.9),
    ]
    path = tmp_path / "odd.srt"
    write_captions(commits, path)
    subs = list(srt.parse(path.read_text(), ignore_errors=False))
    assert " ".join(s.content for s in subs).split() == ["One", "two.", "three", "four", "five", "→six."]
    for a, b in zip(subs, subs[1:]):
        assert a.start < a.end <= b.start
    vtt = tmp_path / "odd.vtt"
    write_captions(commits, vtt)
    assert len(webvtt.read(str(vtt))) == len(subs)


def test_empty_stream_gives_valid_empty_files(tmp_path: Path) -> None:
    """No commits at all still gives files both parsers accept."""
    write_captions([], tmp_path / "none.vtt")
    write_captions([], tmp_path / "none.srt")
    assert len(webvtt.read(str(tmp_path / "none.vtt"))) == 0
    assert list(srt.parse((tmp_path / "none.srt").read_text())) == []


def test_format_follows_suffix(tmp_path: Path) -> None:
    """.vtt and .srt select the format; anything else is a ConfigError naming the file."""
    assert caption_format("a.VTT") == "vtt" and caption_format(Path("b.srt")) == "srt"
    with pytest.raises(ConfigError, match="must end in .vtt or .srt"):
        caption_format("talk.txt")
    with pytest.raises(ConfigError, match="cannot write captions"):
        CaptionWriter(tmp_path / "missing-dir" / "x.vtt")


def test_writer_flushes_each_finished_cue_before_close(tmp_path: Path) -> None:
    """Each finished cue is on disk as soon as it is finished; advance() finishes a cue after a long enough pause."""
    path = tmp_path / "live.vtt"
    writer = CaptionWriter(path)
    writer.add(TALK[0])  # "Good morning." ends a sentence: on disk now
    assert [c.text for c in webvtt.read(str(path))] == ["Good morning."]
    writer.add(TALK[1])
    writer.advance(3.0)  # 0.4 s after the last word: not yet a pause
    assert len(webvtt.read(str(path))) == 1
    writer.advance(3.4)
    assert [c.text for c in webvtt.read(str(path))][-1] == "Today the weather in Berlin"
    writer.close()
    writer.close()  # idempotent
    assert writer.closed and writer.cues_written == 2


def test_killed_writer_keeps_finished_cues(tmp_path: Path) -> None:
    """A process killed mid-stream (SIGKILL: no cleanup at all) leaves every finished cue in a parseable file."""
    path = tmp_path / "crash.srt"
    code = textwrap.dedent(f"""
        import os, signal, sys
        from app.captions import CaptionWriter
        from engine.events import Commit
        w = CaptionWriter({str(path)!r})
        w.add(Commit(" First sentence.", 0.0, 1.5))
        w.add(Commit(" Second sentence.", 2.0, 3.5))
        w.add(Commit(" and an unfinished", 4.0, 5.0))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    subs = list(srt.parse(path.read_text(), ignore_errors=False))
    assert [s.content for s in subs] == ["First sentence.", "Second sentence."]


def test_format_captions_matches_writer(tmp_path: Path) -> None:
    """format_captions gives the same text the incremental writer puts in the file."""
    path = tmp_path / "same.vtt"
    write_captions(TALK, path)
    assert format_captions(build_cues(TALK), "vtt") == path.read_text()
    assert format_captions([Cue(3723.5, 3724.0, ("x",))], "srt") == "1\n01:02:03,500 --> 01:02:04,000\nx\n\n"


def test_config_rejects_nonsense() -> None:
    """Impossible cue limits are refused with a ConfigError."""
    with pytest.raises(ConfigError):
        CaptionConfig(min_duration_s=5.0, max_duration_s=2.0)
    with pytest.raises(ConfigError):
        CaptionConfig(max_line_chars=3)


@pytest.mark.slow
def test_captions_from_real_speech_via_file_pipeline(tmp_path: Path, audio_dir: Path, whisper_bundle) -> None:
    """German speech translated offline gives WebVTT cues with the English words, timed inside the speech."""
    from engine.models.whisper.transcribe import TranscribeOptions, transcribe
    from tests.speech import long_stream

    audio, spans = long_stream("de", audio_dir)
    audio, spans = audio[: int(spans[1][1] * 16000) + 8000], spans[:2]
    result = transcribe(whisper_bundle, audio, TranscribeOptions(task="translate", language="de"))
    commits = [Commit(s.text, s.start_s, s.end_s) for s in result.segments]
    path = tmp_path / "de.vtt"
    write_captions(commits, path)
    cues = _vtt_cues(path)
    text = " ".join(t for _, _, t in cues).lower()
    for word in ("morning", "berlin", "park", "report", "friday"):
        assert word in text
    assert all(0 <= s < e <= spans[-1][1] + 1.5 for s, e, _ in cues)
    friday = next(s for s, _, t in cues if "friday" in t.lower())
    assert friday >= spans[1][0] - 0.5  # the second sentence's words are captioned in its own time span


def test_a_commit_without_leading_space_continues_the_previous_word() -> None:
    """A policy may stop mid-phrase ("very nice" + ", and we go"): the comma stays on its word, never opens a cue."""
    from app.captions import build_cues

    commits = [
        Commit(" Today the weather in Berlin is very nice", 0.0, 2.5),
        Commit(", and we go to the park", 2.6, 4.0),
        Commit(".", 4.0, 4.1),
        Commit(" Thank you", 5.5, 6.0),
        Commit(" for your help", 6.0, 6.6),
        Commit(".", 6.6, 6.7),
    ]
    cues = build_cues(commits)
    words = " ".join(" ".join(c.lines) for c in cues).split()
    assert words == "Today the weather in Berlin is very nice, and we go to the park. Thank you for your help.".split()
    assert all(not line.startswith((",", ".")) for c in cues for line in c.lines)


def test_a_break_that_leaves_too_much_closes_the_rest() -> None:
    """When the words carried over after a clause break still cannot take the next word, they become a cue of their
    own (they were kept open and the cue overflowed: an AssertionError in a live writer)."""
    long_word = "x" * 42
    cues = build_cues([Commit(" and more words here which a<b " + long_word, 0.0, 2.0), Commit(" tail", 2.0, 2.5)])
    assert all(len(line) <= 42 for cue in cues for line in cue.lines)
    assert " ".join(" ".join(c.lines) for c in cues).split() == [
        "and",
        "more",
        "words",
        "here",
        "which",
        "a<b",
        long_word,
        "tail",
    ]


def test_a_piece_that_grows_a_word_past_a_line_is_cut() -> None:
    """CJK text arrives in pieces without spaces; glued together they are cut into line-sized parts again."""
    cues = build_cues([Commit("東京都の天気は晴れです" * 3, 0.0, 1.0), Commit("東京都の天気は晴れです" * 2, 1.0, 2.0)])
    assert "".join("".join(c.lines) for c in cues) == "東京都の天気は晴れです" * 5
    assert all(len(line) <= 42 for cue in cues for line in cue.lines)
