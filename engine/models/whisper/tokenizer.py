"""Whisper's tokenizer through the `tokenizers` library, with the special tokens the decoder needs and a
byte-exact incremental decoder that never emits half a UTF-8 character."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ...errors import ModelLoadError
from ...text import split_complete_utf8

# Whisper's languages, in token order after <|en|> (openai/whisper tokenizer.py)
LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt la mi "
    "ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc ka be tg sd "
    "gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su yue"
).split()


@functools.lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: byte-level BPE symbols back to raw bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def repair_merges(spec: dict[str, Any]) -> int:
    """Put back byte-level BPE merges a tokenizer.json lost; how many. A converter that takes merges.txt's first
    line for its "#version" header drops the first merge (Whisper's "Ġ t"), and then every word starting with
    " t" encodes as " " + "t..." (" the" -> [" ", "the"]), a split the model never saw in training (vocabulary
    prompts, initial prompts). GPT-2-style vocabularies number tokens in merge order (the 256 bytes, then merge
    i makes token 256 + i), so a token no merge makes is rebuilt from its two parts at its own place."""
    model = spec.get("model") or {}
    vocab, merges = model.get("vocab"), model.get("merges")
    if model.get("type") != "BPE" or not isinstance(vocab, dict) or not isinstance(merges, list) or not merges:
        return 0
    as_list = not isinstance(merges[0], str)  # newer files store [left, right] pairs
    pairs = [tuple(m) if as_list else tuple(m.split(" ", 1)) for m in merges]
    made = {a + b for a, b in pairs}
    # only a vocabulary numbered in merge order (allowing for the lost ones) can tell where a lost merge stood
    in_order = sum(vocab.get(a + b, -1) - 256 - j in range(0, 4) for j, (a, b) in enumerate(pairs))
    if in_order < 0.9 * len(pairs):
        return 0
    token_of = {i: t for t, i in vocab.items()}
    fixed = 0
    for i in range(256, 256 + len(pairs) + 1):
        tok = token_of.get(i)
        if tok is None or tok in made or len(tok) < 2:
            continue
        splits = [(tok[:k], tok[k:]) for k in range(1, len(tok))]
        split = next(((a, b) for a, b in splits if vocab.get(a, i) < i and vocab.get(b, i) < i), None)
        if split is None:
            continue
        pairs.insert(i - 256, split)
        made.add(tok)
        fixed += 1
    if fixed:
        model["merges"] = [list(p) if as_list else " ".join(p) for p in pairs]
    return fixed


@dataclass(frozen=True)
class SpecialTokens:
    eot: int
    sot: int
    translate: int
    transcribe: int
    sot_prev: int
    sot_lm: int
    no_speech: int
    no_timestamps: int
    timestamp_begin: int  # <|0.00|>; timestamps step by 0.02 s


class WhisperTokenizer:
    def __init__(self, tokenizer: Tokenizer, n_vocab: int) -> None:
        self._tok = tokenizer
        self.n_vocab = n_vocab

        def tid(s: str) -> int:
            i: int | None = tokenizer.token_to_id(s)
            if i is None:
                raise ModelLoadError(f"tokenizer.json lacks the special token {s}")
            return i

        nospeech = tokenizer.token_to_id("<|nospeech|>")
        if nospeech is None:
            nospeech = tid("<|nocaptions|>")
        self.special = SpecialTokens(
            eot=tid("<|endoftext|>"),
            sot=tid("<|startoftranscript|>"),
            translate=tid("<|translate|>"),
            transcribe=tid("<|transcribe|>"),
            sot_prev=tid("<|startofprev|>"),
            sot_lm=tid("<|startoflm|>"),
            no_speech=nospeech,
            no_timestamps=tid("<|notimestamps|>"),
            timestamp_begin=tid("<|notimestamps|>") + 1,
        )
        self.language_ids: dict[str, int] = {}
        for code in LANGUAGES:
            i = tokenizer.token_to_id(f"<|{code}|>")
            if i is not None and i < self.special.translate:
                self.language_ids[code] = i
        self._byte_of = _unicode_to_byte()
        self._bytes_cache: dict[int, bytes] = {}

    @classmethod
    def from_file(cls, path: str | Path, n_vocab: int) -> WhisperTokenizer:
        try:
            spec = json.loads(Path(path).read_text(encoding="utf-8"))
            repair_merges(spec)
            return cls(Tokenizer.from_str(json.dumps(spec)), n_vocab)
        except ModelLoadError:
            raise
        except Exception as e:
            raise ModelLoadError(f"cannot read tokenizer {path}: {e}") from e

    @property
    def eot(self) -> int:
        return self.special.eot

    def is_timestamp(self, token: int) -> bool:
        return token >= self.special.timestamp_begin

    def timestamp_s(self, token: int) -> float:
        return (token - self.special.timestamp_begin) * 0.02

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self._tok.encode(text, add_special_tokens=False).ids
        return ids

    def sot_sequence(self, task: str, language: str | None, timestamps: bool) -> list[int]:
        seq = [self.special.sot]
        if language is not None:
            if language not in self.language_ids:
                raise ValueError(f"unknown language code {language!r}")
            seq.append(self.language_ids[language])
        seq.append(self.special.translate if task == "translate" else self.special.transcribe)
        if not timestamps:
            seq.append(self.special.no_timestamps)
        return seq

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes one text token stands for (b'' for special and timestamp tokens)."""
        b = self._bytes_cache.get(token)
        if b is None:
            if token >= self.special.eot:
                b = b""
            else:
                piece = self._tok.id_to_token(token) or ""
                b = bytes(self._byte_of[c] for c in piece if c in self._byte_of)
            self._bytes_cache[token] = b
        return b

    def decode_bytes(self, tokens: list[int]) -> bytes:
        return b"".join(self.token_bytes(t) for t in tokens)

    def decode(self, tokens: list[int]) -> str:
        """Text of the (non-special) tokens; invalid UTF-8 (a cut-off character) is replaced."""
        return self.decode_bytes(tokens).decode("utf-8", errors="replace")


def complete_token_count(tokenizer: WhisperTokenizer, tokens: list[int]) -> int:
    """Largest k such that tokens[:k] decodes to whole UTF-8 characters (so a commit never splits a character)."""
    data = tokenizer.decode_bytes(tokens)
    _, tail = split_complete_utf8(data)
    if not tail:
        return len(tokens)
    k = len(tokens)
    while k > 0 and split_complete_utf8(tokenizer.decode_bytes(tokens[:k]))[1]:
        k -= 1
    return k
