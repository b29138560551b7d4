"""The Speech2Text2 tokenizer: fastBPE pieces from `vocab.json`, where a piece ending in "@@" continues a word.

Decoding joins the pieces with spaces and then deletes every "@@ " — so "Sch@@", "ön" reads "Schön". Encoding (only
needed for prompts and tests) applies `merges.txt` with a "</w>" end-of-word marker, as the reference does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ModelLoadError

CONTINUES = "@@"  # suffix of a piece that does not end its word
WORD_END = "</w>"  # end-of-word marker inside merges.txt


@dataclass(frozen=True)
class SpecialTokens:
    bos: int  # <s>: the decoder start token of the released checkpoints
    pad: int
    eos: int  # </s>
    unk: int


class S2T2Tokenizer:
    # merges: merges.txt's piece pairs, first = merged first (a malformed line's shorter tuple never matches, as
    # in the reference)
    def __init__(
        self,
        vocab: dict[str, int],
        merges: list[tuple[str, ...]] | None = None,
        special_names: dict[str, str] | None = None,
        do_lower_case: bool = False,
        clean_up_spaces: bool = False,
    ) -> None:
        self.vocab = vocab
        self.id_to_piece = {i: p for p, i in vocab.items()}
        names = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
        names.update(special_names or {})
        missing = [n for n in names.values() if n not in vocab]
        if missing:
            raise ModelLoadError(f"vocab.json lacks the special token(s) {', '.join(missing)}")
        self.special = SpecialTokens(**{k: vocab[v] for k, v in names.items()})
        self.special_ids = frozenset({vocab[v] for v in names.values()})
        self.bpe_ranks = None if merges is None else {m: r for r, m in enumerate(merges)}
        self.do_lower_case = do_lower_case
        self.clean_up_spaces = clean_up_spaces
        self._bytes: dict[int, bytes] = {}
        self._bpe_cache: dict[str, list[str]] = {}

    @classmethod
    def from_dir(cls, path: Path) -> S2T2Tokenizer:
        """vocab.json (required), merges.txt (optional: decoding works without it), tokenizer_config.json and
        special_tokens_map.json (optional: names of the special tokens)."""
        vocab_file = path / "vocab.json"
        if not vocab_file.is_file():
            raise ModelLoadError(f"{path} has no vocab.json (the Speech2Text2 tokenizer's vocabulary)")
        try:
            vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{vocab_file} is not valid JSON: {e}") from e
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise ModelLoadError(f"{vocab_file} must map token strings to integer ids")
        merges = None
        merges_file = path / "merges.txt"
        if merges_file.is_file():
            lines = merges_file.read_text(encoding="utf-8").split("\n")[:-1]  # the reference drops the last line
            merges = [tuple(line.split()[:2]) for line in lines]
        config: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            f = path / name
            if f.is_file():
                try:
                    config.update(json.loads(f.read_text(encoding="utf-8")))
                except json.JSONDecodeError as e:
                    raise ModelLoadError(f"{f} is not valid JSON: {e}") from e
        special = {}
        for key in ("bos", "pad", "eos", "unk"):
            value = config.get(f"{key}_token")
            if isinstance(value, dict):  # AddedToken serialisation
                value = value.get("content")
            if isinstance(value, str):
                special[key] = value
        return cls(
            vocab,
            merges,
            special,
            bool(config.get("do_lower_case", False)),
            bool(config.get("clean_up_tokenization_spaces", False)),
        )

    # -- decoding ------------------------------------------------------------------------------------------
    def piece(self, token: int) -> str:
        return self.id_to_piece.get(token, self.id_to_piece[self.special.unk])

    def decode(self, tokens: list[int]) -> str:
        """Text of `tokens` with special tokens skipped: exactly the reference's decode(skip_special_tokens=True)."""
        pieces = [self.piece(t) for t in tokens]
        pieces = [p for p in pieces if self.vocab.get(p) not in self.special_ids]
        text = "".join(" ".join(pieces).split(CONTINUES + " "))
        return _clean_up(text) if self.clean_up_spaces else text

    def token_bytes(self, token: int) -> bytes:
        """What a token adds to the text when tokens are concatenated: b"Sch" for "Sch@@", b"ön " for "ön".

        Concatenating, then stripping the trailing space, gives decode() for every sequence whose last piece ends
        a word (a finished sentence always does; the reference would keep a dangling "@@" where we do not)."""
        cached = self._bytes.get(token)
        if cached is None:
            if token in self.special_ids or token not in self.id_to_piece:
                cached = b""  # specials and out-of-vocabulary ids (<unk>) print nothing, as decode() skips them
            else:
                p = self.piece(token)
                text = p[: -len(CONTINUES)] if p.endswith(CONTINUES) else p + " "
                cached = text.encode("utf-8")
            self._bytes[token] = cached
        return cached

    # -- encoding ------------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """BPE-encode `text` (no special tokens added); needs merges.txt."""
        if self.bpe_ranks is None:
            raise ModelLoadError("this checkpoint has no merges.txt: its tokenizer can decode but not encode text")
        if self.do_lower_case:
            text = text.lower()
        unk = self.special.unk
        return [self.vocab.get(p, unk) for word in text.split() for p in self._bpe(word)]

    def _bpe(self, word: str) -> list[str]:
        cached = self._bpe_cache.get(word)
        if cached is not None:
            return cached
        ranks = self.bpe_ranks
        assert ranks is not None
        symbols = list(word[:-1]) + [word[-1] + WORD_END]
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
            best = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
            if best not in ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        if len(symbols) == 1 and len(word) == 1:
            pieces = [word]  # the reference returns a one-character word untouched
        else:
            last = symbols[-1]
            symbols[-1] = last[: -len(WORD_END)] if last.endswith(WORD_END) else last
            pieces = [s + CONTINUES for s in symbols[:-1]] + [symbols[-1]]
        self._bpe_cache[word] = pieces
        return pieces


def _clean_up(text: str) -> str:
    """The reference's clean_up_tokenization (only when tokenizer_config.json asks for it)."""
    for a, b in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(a, b)
    return text
