"""The real Whisper tokenizer (from the embedded model's tokenizer.json): special tokens, byte-exact decoding,
and holding back the tail of a character that a token boundary cut in two."""

from __future__ import annotations

import pytest

from engine.models.whisper.load import _embedded_files
from engine.models.whisper.tokenizer import WhisperTokenizer, complete_token_count
from engine.text import split_complete_utf8

# Texts whose real tokens cut characters: "Ärztin" starts with Ä split into b"\xc3" + b"\x84"; the Japanese,
# Chinese and emoji strings have 3- and 4-byte characters spread over two or three tokens.
SPLIT_TEXTS = [
    "Ärztin und Apotheker helfen vielen Menschen.",
    "Äußerst schön, Grüße aus Köln!",
    "日本語の文章です。今日は良い天気ですね。",
    "中文测试",
    "😀 emoji 🇩🇪",
]


@pytest.fixture(scope="module")
def tok() -> WhisperTokenizer:
    """The multilingual Whisper base tokenizer that ships with the embedded model."""
    data_dir, _ = _embedded_files()
    return WhisperTokenizer.from_file(data_dir / "tokenizer.json", 51865)


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_special_token_ids_are_whisper_multilingual(tok: WhisperTokenizer) -> None:
    """The special tokens sit where every multilingual Whisper (v1/v2) has them, with 99 languages."""
    sp = tok.special
    assert (sp.eot, sp.sot, sp.translate, sp.transcribe, sp.no_timestamps) == (50257, 50258, 50358, 50359, 50363)
    assert sp.timestamp_begin == 50364
    assert tok.language_ids["en"] == 50259 and tok.language_ids["de"] == 50261
    assert len(tok.language_ids) == 99  # base predates yue (large-v3 only)


def test_sot_sequence_for_each_task(tok: WhisperTokenizer) -> None:
    """The decoder prompt is sot, language, task, and notimestamps unless timestamps are asked for."""
    assert tok.sot_sequence("translate", "de", timestamps=False) == [50258, 50261, 50358, 50363]
    assert tok.sot_sequence("transcribe", "en", timestamps=True) == [50258, 50259, 50359]
    assert tok.sot_sequence("transcribe", None, timestamps=False) == [50258, 50359, 50363]
    with pytest.raises(ValueError, match="xx"):
        tok.sot_sequence("transcribe", "xx", timestamps=False)


def test_timestamp_tokens(tok: WhisperTokenizer) -> None:
    """Timestamp tokens step by 0.02 s from <|0.00|> and decode to no text."""
    ts = tok.special.timestamp_begin
    assert tok.is_timestamp(ts + 150) and not tok.is_timestamp(tok.eot)
    assert tok.timestamp_s(ts + 150) == pytest.approx(3.0)
    assert tok.token_bytes(ts + 150) == b"" and tok.token_bytes(tok.special.sot) == b""


@pytest.mark.parametrize("text", SPLIT_TEXTS + ["Good morning. Today the weather in Berlin is very nice."])
def test_decode_is_byte_exact(tok: WhisperTokenizer, text: str) -> None:
    """Encoding then decoding gives the text back exactly, multi-byte characters included."""
    ids = tok.encode(text)
    assert tok.decode_bytes(ids) == text.encode("utf-8")
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.eot, tok.special.timestamp_begin]) == text  # special tokens add nothing


@pytest.mark.parametrize("text", SPLIT_TEXTS)
def test_these_texts_really_split_characters_across_tokens(tok: WhisperTokenizer, text: str) -> None:
    """Guard for the hold-back tests: some single token of each text is not valid UTF-8 on its own."""
    assert any(not _valid_utf8(tok.token_bytes(t)) for t in tok.encode(text))


@pytest.mark.parametrize("text", SPLIT_TEXTS)
def test_streaming_tokens_with_hold_back_never_emits_half_a_character(tok: WhisperTokenizer, text: str) -> None:
    """Emitting tokens one by one and holding back incomplete UTF-8 tails gives only whole characters, and
    together exactly the text."""
    emitted: list[str] = []
    pending = b""
    for t in tok.encode(text):
        ready, pending = split_complete_utf8(pending + tok.token_bytes(t))
        piece = ready.decode("utf-8")  # strict: raises on a cut character
        assert "\ufffd" not in piece
        emitted.append(piece)
    assert pending == b""
    assert "".join(emitted) == text


@pytest.mark.parametrize("text", SPLIT_TEXTS)
def test_complete_token_count_stops_before_a_cut_character(tok: WhisperTokenizer, text: str) -> None:
    """For every prefix of the tokens, complete_token_count gives the longest sub-prefix that decodes strictly."""
    ids = tok.encode(text)
    for n in range(len(ids) + 1):
        k = complete_token_count(tok, ids[:n])
        assert k <= n
        assert _valid_utf8(tok.decode_bytes(ids[:k]))
        # maximal: no longer prefix of these n tokens decodes cleanly
        assert not any(_valid_utf8(tok.decode_bytes(ids[:j])) for j in range(k + 1, n + 1))


def test_cut_umlaut_in_arztin_is_held_back(tok: WhisperTokenizer) -> None:
    """After the first token of "Ärztin" (b"\\xc3"), nothing is ready; after the second, "Ä" is."""
    ids = tok.encode("Ärztin")
    assert tok.token_bytes(ids[0]) == b"\xc3"
    assert split_complete_utf8(tok.token_bytes(ids[0])) == (b"", b"\xc3")
    assert complete_token_count(tok, ids[:1]) == 0
    assert complete_token_count(tok, ids[:2]) == 2
    assert tok.decode(ids[:2]) == "Ä"


@pytest.mark.parametrize(
    "data,expected",
    [
        (b"", (b"", b"")),
        (b"abc", (b"abc", b"")),
        (b"a\xc3", (b"a", b"\xc3")),  # 2-byte lead alone
        (b"a\xc3\xa4", (b"a\xc3\xa4", b"")),  # complete ä
        (b"x\xe6\x97", (b"x", b"\xe6\x97")),  # 3-byte character missing its last byte
        (b"\xf0\x9f\x98", (b"", b"\xf0\x9f\x98")),  # 4-byte emoji missing one byte
        (b"\xf0\x9f\x98\x80", (b"\xf0\x9f\x98\x80", b"")),  # complete 😀
    ],
)
def test_split_complete_utf8(data: bytes, expected: tuple[bytes, bytes]) -> None:
    """The split keeps whole characters and holds back at most one incomplete trailing character."""
    assert split_complete_utf8(data) == expected


def test_decode_replaces_a_cut_character_instead_of_raising(tok: WhisperTokenizer) -> None:
    """decode() of a prefix that ends mid-character gives U+FFFD, never an exception."""
    ids = tok.encode("Ärztin")
    assert tok.decode(ids[:1]) == "\ufffd"


def test_the_lost_first_merge_is_put_back(tok: WhisperTokenizer) -> None:
    """The embedded tokenizer.json lacks GPT-2's first merge ("Ġ t"): without it " the" encoded as [" ", "the"]
    (ids 220, 3322), a split Whisper never saw. Loading puts it back: Whisper's own ids, 264 for " the"."""
    import json

    from engine.models.whisper.tokenizer import repair_merges

    assert tok.encode(" the") == [264]
    assert tok.encode(" that to") == [300, 281]
    assert all(tok.encode(" " + w) == [i] for w, i in (("time", 565), ("go", 352)))
    for text in SPLIT_TEXTS + ["Take the train to Toulouse at ten to two."]:
        ids = tok.encode(text)
        assert b"".join(tok.token_bytes(i) for i in ids).decode() == text
        assert 220 not in ids  # no lone space token in front of a word

    spec = json.loads((_embedded_files()[0] / "tokenizer.json").read_text(encoding="utf-8"))
    assert repair_merges(spec) == 1
    assert spec["model"]["merges"][0] == "Ġ t"
    assert repair_merges(spec) == 0  # nothing more to put back
    shuffled = {"model": {"type": "BPE", "vocab": {"a": 300, "b": 301, "ab": 256}, "merges": ["x y", "y z"]}}
    assert repair_merges(shuffled) == 0  # not numbered in merge order: left alone
