"""Text rules, written once each: complete UTF-8, where a word starts, where a sentence or a clause ends.

Two levels, on purpose with different values:
- token pieces (the bytes one token decodes to, Whisper's byte-level BPE and Speech2Text2 alike): the streaming
  core decides commits on these, and its punctuation is the ASCII Whisper writes for its English output;
- committed text in any script (MT units, terminal lines): CJK stops, the ellipsis and closing quotes count too.
  The caption files keep theirs in web/caption-rules.json, shared with the page's JavaScript; a test checks that
  its sentence-end marks are SENTENCE_END_MARKS.
"""

from __future__ import annotations

import re

# -- token pieces (bytes) -------------------------------------------------------------------------------------
_PIECE_SENTENCE_END = (b".", b"?", b"!")
_PIECE_CLAUSE_END = _PIECE_SENTENCE_END + (b",", b";", b":")


def split_complete_utf8(data: bytes) -> tuple[bytes, bytes]:
    """Split `data` into (complete UTF-8 prefix, incomplete tail of at most 3 bytes to hold back)."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return (data, b"") if need <= back else (data[: n - back], data[n - back :])
    return data, b""


def starts_word(piece: bytes) -> bool:
    """The token opens a new word: its piece begins with a space (both tokenizers mark word starts so)."""
    return piece[:1] == b" "


def ends_sentence(piece: bytes) -> bool:
    """The token ends a sentence: '.', '?' or '!' before any trailing space."""
    return piece.rstrip()[-1:] in _PIECE_SENTENCE_END


def ends_clause(piece: bytes) -> bool:
    """The token ends a clause: a sentence end or ',', ';', ':' before any trailing space."""
    return piece.rstrip()[-1:] in _PIECE_CLAUSE_END


# -- committed text (str, any script) -----------------------------------------------------------------------
SENTENCE_END_MARKS = ".!?…。！？"
CLAUSE_END_MARKS = ",;:，；："
CLOSING_MARKS = "\"'”’»)]"  # a quote or bracket closing after the stop still belongs to the sentence
# an end inside the text: the marks (and closing quotes) followed by a space or the end of the text
SENTENCE_END = re.compile(f"[{re.escape(SENTENCE_END_MARKS)}]+[{re.escape(CLOSING_MARKS)}]*(?=\\s|$)")
CLAUSE_END = re.compile(f"[{re.escape(CLAUSE_END_MARKS)}]+[{re.escape(CLOSING_MARKS)}]*(?=\\s|$)")
_TEXT_ENDS_SENTENCE = re.compile(f"[{re.escape(SENTENCE_END_MARKS)}][{re.escape(CLOSING_MARKS)}]*$")


def text_ends_sentence(text: str) -> bool:
    """`text` (trailing spaces ignored) ends with a sentence end, closing quotes or brackets after it included."""
    return _TEXT_ENDS_SENTENCE.search(text.rstrip()) is not None


def norm_words(text: str) -> list[str]:
    """Words reduced to lower-case letters and digits (punctuation and spacing ignored); empty ones dropped: how
    the streaming guards compare texts ("5. 2%" and "5.2%" are one word)."""
    out = ("".join(c for c in w.lower() if c.isalnum()) for w in text.split())
    return [w for w in out if w]


# a word ending in "." that does not end a sentence: one with a stop inside ("a.m.", "e.g.") or one of these
_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "vs.", "etc.", "approx.", "no.", "nr.", "ca.", "z.", "bzw."}
# a word with a sentence end, the space and opening quotes after it, and the next word's first letter (the rest of
# that word looked at, not consumed); an ellipsis continues the sentence
_LOWER_AFTER_END = re.compile(
    f"(\\S*[{re.escape(SENTENCE_END_MARKS.replace('…', ''))}][{re.escape(CLOSING_MARKS)}]*)"
    "(\\s+[\"'“‘«(\\[]*)([^\\W\\d_])(?=(\\S*))"
)


def capitalise_sentences(before: str, text: str) -> str:
    """`text`, to be written after `before`, with each sentence it starts opening in upper case. Whisper now and
    then starts a sentence in lower case after its own full stop ("... in August. drivers are advised ...",
    "... hospitals. the"), mostly at a segment's start; the full stop stands, so the capital goes with it. Words
    that mix cases ("iPhone") and sentences after an abbreviation ("at 9 a.m. and") keep theirs."""
    tail = before[-40:]

    def fix(m: re.Match[str]) -> str:
        word, gap, letter, rest = m.groups()
        stop_word = word.rstrip(CLOSING_MARKS).lower()
        if (
            m.start(3) < len(tail)  # already written
            or not letter.islower()
            or "." in stop_word[:-1]  # "a.m.", "e.g.", "..."
            or stop_word in _ABBREVIATIONS
            or stop_word[:-1].isdigit()  # a German ordinal ("am 5. mai" is rare, but never a sentence's end)
            or any(c.isupper() for c in rest)  # "iPhone"
            or "." in rest[:-1]  # "a.m." itself
        ):
            return m.group(0)
        return word + gap + letter.upper()

    return _LOWER_AFTER_END.sub(fix, tail + text)[len(tail) :]
