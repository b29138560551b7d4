"""Text tokenizers of the MT checkpoints: Marian (two SentencePiece models + vocab.json), M2M100 (SentencePiece +
vocab.json + fairseq language tokens) and any `tokenizer.json` (NLLB-200, and M2M100 checkpoints saved fast-only).

Every tokenizer answers the same questions: the source ids of a sentence (language tokens and eos included, as the
reference tokenizers build them), the target tokens forced after the decoder start token, the text of generated
ids (special tokens skipped), and which languages the checkpoint reads and writes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError, ModelLoadError
from .languages import ISO3, M2M100_CODES, NLLB_CODES, nllb_to_iso1

if TYPE_CHECKING:  # imported where used: a missing sentencepiece is a ModelLoadError with a hint
    from sentencepiece import SentencePieceProcessor

WORD_START = "\u2581"  # SentencePiece's "▁": the piece begins a new word
MARIAN_LANG_TOKEN = re.compile(r"^>>(.+)<<$")
NLLB_LANG_TOKEN = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
M2M_LANG_TOKEN = re.compile(r"^__([a-z]{2,3})__$")


class MTTokenizer(Protocol):
    eos_id: int
    pad_id: int

    # languages the checkpoint reads / writes as ISO 639-1 codes where known; None: not recorded in the checkpoint
    @property
    def source_languages(self) -> tuple[str, ...] | None: ...

    @property
    def target_languages(self) -> tuple[str, ...] | None: ...

    def source_ids(self, text: str, source: str | None, target: str | None) -> list[int]:
        """The encoder input for one sentence: language token(s), pieces, eos."""

    def target_prefix(self, target: str | None) -> list[int]:
        """Tokens forced right after the decoder start token (M2M100/NLLB: the target language)."""

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids; special and language tokens are skipped."""

    def is_word_start(self, token: int) -> bool:
        """True when the token begins a new word (a commit may end before it)."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return obj
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path} is not valid JSON: {e}") from e


def _load_spm(path: Path) -> SentencePieceProcessor:
    try:
        import sentencepiece
    except ImportError:
        raise ModelLoadError(f"{path.parent} uses a SentencePiece vocabulary: pip install sentencepiece") from None
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except Exception as e:
        raise ModelLoadError(f"cannot read the SentencePiece model {path}: {e}") from e
    return sp


def _tokenizer_config(path: Path) -> dict[str, Any]:
    f = path / "tokenizer_config.json"
    return _read_json(f) if f.is_file() else {}


class MarianTokenizer:
    """opus-mt: source.spm / target.spm split text into pieces, vocab.json numbers them (target_vocab.json too
    for checkpoints with separate vocabularies); the source ends with </s>. Multilingual-target checkpoints list
    tokens such as >>deu<< in their vocabulary; the chosen one is put before the source text."""

    def __init__(self, path: Path, name: str = "") -> None:
        for fname in ("source.spm", "target.spm", "vocab.json"):
            if not (path / fname).is_file():
                raise ModelLoadError(
                    f"{path} has no {fname} (a Marian checkpoint needs source.spm, target.spm and vocab.json)"
                )
        cfg = _tokenizer_config(path)
        self.spm_source = _load_spm(path / "source.spm")
        self.spm_target = _load_spm(path / "target.spm")
        self.vocab: dict[str, int] = _read_json(path / "vocab.json")
        separate = bool(cfg.get("separate_vocabs", False))
        target_vocab = self.vocab
        if separate:
            f = path / (cfg.get("target_vocab_file") or "target_vocab.json")
            if not f.is_file():
                raise ModelLoadError(f"{path}: separate_vocabs is set but {f.name} is missing")
            target_vocab = _read_json(f)
        self.id_to_piece = {i: p for p, i in target_vocab.items()}
        names = {
            "eos": cfg.get("eos_token", "</s>"),
            "unk": cfg.get("unk_token", "<unk>"),
            "pad": cfg.get("pad_token", "<pad>"),
        }
        names = {k: v["content"] if isinstance(v, dict) else v for k, v in names.items()}
        missing = [v for v in names.values() if v not in self.vocab]
        if missing:
            raise ModelLoadError(f"{path}/vocab.json lacks the special token(s) {', '.join(missing)}")
        self.eos_id, self.unk_id, self.pad_id = (self.vocab[names[k]] for k in ("eos", "unk", "pad"))
        self.special_ids = frozenset({self.eos_id, self.unk_id, self.pad_id})
        self.lang_tokens = (
            {} if separate else {m.group(1): i for p, i in self.vocab.items() if (m := MARIAN_LANG_TOKEN.match(p))}
        )
        src, tgt = cfg.get("source_lang"), cfg.get("target_lang")
        if not (src and tgt):  # opus-mt-en-de, also as the tail of a hub id or directory name
            m = re.search(r"opus-mt(?:-tc-[a-z]+)?-([a-zA-Z]+)-([a-zA-Z]+)", name or str(path))
            if m:
                src, tgt = src or m.group(1), tgt or m.group(2)
        self.source_languages: tuple[str, ...] | None = (src,) if src and src.islower() and len(src) <= 3 else None
        if self.lang_tokens:  # >>deu<< serves --target de as well
            iso1 = {v: k for k, v in ISO3.items()}
            codes = set(self.lang_tokens) | {iso1[c] for c in self.lang_tokens if c in iso1}
            self.target_languages: tuple[str, ...] | None = tuple(sorted(codes))
        else:
            self.target_languages = (tgt,) if tgt and tgt.islower() and len(tgt) <= 3 else None

    def _lang_token(self, target: str | None) -> list[int]:
        if not self.lang_tokens or target is None:
            return []
        for code in (target, ISO3.get(target), NLLB_CODES.get(target)):
            if code in self.lang_tokens:
                return [self.lang_tokens[code]]
        raise ConfigError(
            f"this opus-mt model cannot write {target!r}; its target tokens are "
            f"{', '.join(sorted(self.lang_tokens)[:20])}"
        )

    def source_ids(self, text: str, source: str | None = None, target: str | None = None) -> list[int]:
        pieces = self.spm_source.encode(text, out_type=str)
        return self._lang_token(target) + [self.vocab.get(p, self.unk_id) for p in pieces] + [self.eos_id]

    def target_prefix(self, target: str | None = None) -> list[int]:
        return []

    def decode(self, ids: list[int]) -> str:
        pieces = [self.id_to_piece.get(i, "") for i in ids if i not in self.special_ids]
        pieces = [p for p in pieces if p and not MARIAN_LANG_TOKEN.match(p)]
        text: str = self.spm_target.decode_pieces(pieces)
        return text

    def is_word_start(self, token: int) -> bool:
        return self.id_to_piece.get(token, "").startswith(WORD_START)


class M2M100Tokenizer:
    """M2M100: sentencepiece.bpe.model splits, vocab.json numbers the pieces; the language tokens (__de__) follow
    the vocabulary in fairseq's order. Source: [__src__] pieces </s>; the decoder is forced to start [__tgt__]."""

    def __init__(self, path: Path) -> None:
        for f in ("sentencepiece.bpe.model", "vocab.json"):
            if not (path / f).is_file():
                raise ModelLoadError(
                    f"{path} has no {f} (an M2M100 checkpoint needs sentencepiece.bpe.model and "
                    "vocab.json, or a tokenizer.json)"
                )
        cfg = _tokenizer_config(path)
        self.spm = _load_spm(path / "sentencepiece.bpe.model")
        self.vocab: dict[str, int] = _read_json(path / "vocab.json")
        self.id_to_piece = {i: p for p, i in self.vocab.items()}
        codes = M2M100_CODES.get(cfg.get("language_codes", "m2m100"))
        if codes is None:
            raise ModelLoadError(
                f"{path}/tokenizer_config.json: unknown language_codes {cfg.get('language_codes')!r} (m2m100 or wmt21)"
            )
        self.lang_ids = {code: len(self.vocab) + i for i, code in enumerate(codes)}
        for name in ("<s>", "<pad>", "</s>", "<unk>"):
            if name not in self.vocab:
                raise ModelLoadError(f"{path}/vocab.json lacks the special token {name}")
        self.bos_id, self.pad_id, self.eos_id, self.unk_id = (self.vocab[n] for n in ("<s>", "<pad>", "</s>", "<unk>"))
        self.special_ids = frozenset({self.bos_id, self.pad_id, self.eos_id, self.unk_id, *self.lang_ids.values()})
        self.source_languages = self.target_languages = tuple(codes)

    def lang_id(self, code: str | None, role: str) -> int:
        if code is None:
            raise ConfigError(f"an M2M100 model needs the {role} language")
        if code not in self.lang_ids:
            raise ConfigError(f"this M2M100 model does not know the {role} language {code!r}")
        return self.lang_ids[code]

    def source_ids(self, text: str, source: str | None, target: str | None = None) -> list[int]:
        pieces = self.spm.encode(text, out_type=str)
        return [self.lang_id(source, "source")] + [self.vocab.get(p, self.unk_id) for p in pieces] + [self.eos_id]

    def target_prefix(self, target: str | None) -> list[int]:
        return [self.lang_id(target, "target")]

    def decode(self, ids: list[int]) -> str:
        pieces = [self.id_to_piece.get(i, "") for i in ids if i not in self.special_ids]
        text: str = self.spm.decode_pieces([p for p in pieces if p])
        return text

    def is_word_start(self, token: int) -> bool:
        return self.id_to_piece.get(token, "").startswith(WORD_START)


class FastMultilingualTokenizer:
    """A tokenizer.json (NLLB-200, or an M2M100 saved fast-only): the pieces come from the `tokenizers` library
    without its post-processor; the language tokens (eng_Latn or __en__) come from the vocabulary itself, and the
    source is built as the current reference builds it: [src_lang] pieces </s>."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        try:
            self.tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as e:
            raise ModelLoadError(f"cannot read {path}/tokenizer.json: {e}") from e
        vocab: dict[str, int] = self.tok.get_vocab(with_added_tokens=True)
        self.id_to_piece = {i: p for p, i in vocab.items()}
        for name in ("<pad>", "</s>", "<unk>"):
            if name not in vocab:
                raise ModelLoadError(f"{path}/tokenizer.json lacks the special token {name}")
        self.pad_id, self.eos_id, self.unk_id = vocab["<pad>"], vocab["</s>"], vocab["<unk>"]
        self.nllb = any(NLLB_LANG_TOKEN.match(p) for p in vocab)
        self.lang_ids: dict[str, int] = {}
        for piece, i in vocab.items():
            if self.nllb and NLLB_LANG_TOKEN.match(piece):
                self.lang_ids[piece] = i
                self.lang_ids.setdefault(nllb_to_iso1(piece), i)
            elif not self.nllb and (m := M2M_LANG_TOKEN.match(piece)):
                self.lang_ids[m.group(1)] = i
        if not self.lang_ids:
            raise ModelLoadError(
                f"{path}/tokenizer.json has no language tokens (eng_Latn or __en__): not an "
                "NLLB-200 or M2M100 vocabulary"
            )
        self.special_ids = frozenset(
            {vocab.get("<s>", -1), self.pad_id, self.eos_id, self.unk_id, *self.lang_ids.values()}
        )
        codes = tuple(sorted(c for c in self.lang_ids if not NLLB_LANG_TOKEN.match(c) or nllb_to_iso1(c) == c))
        self.source_languages = self.target_languages = codes

    def lang_id(self, code: str | None, role: str) -> int:
        if code is None:
            raise ConfigError(f"a multilingual MT model needs the {role} language")
        for c in (code, NLLB_CODES.get(code) if self.nllb else None):
            if c in self.lang_ids:
                return self.lang_ids[c]
        raise ConfigError(f"this MT model does not know the {role} language {code!r}")

    def source_ids(self, text: str, source: str | None, target: str | None = None) -> list[int]:
        ids: list[int] = self.tok.encode(text, add_special_tokens=False).ids
        return [self.lang_id(source, "source")] + ids + [self.eos_id]

    def target_prefix(self, target: str | None) -> list[int]:
        return [self.lang_id(target, "target")]

    def decode(self, ids: list[int]) -> str:
        text: str = self.tok.decode([i for i in ids if i not in self.special_ids], skip_special_tokens=True)
        return text

    def is_word_start(self, token: int) -> bool:
        return self.id_to_piece.get(token, "").startswith(WORD_START)


def load_tokenizer(path: Path, family: str, name: str = "") -> MTTokenizer:
    """The tokenizer of an MT checkpoint directory: SentencePiece files first (the reference's slow tokenizers,
    which the parity tests check), tokenizer.json otherwise."""
    if family == "marian":
        return MarianTokenizer(path, name)
    if (path / "sentencepiece.bpe.model").is_file() and (path / "vocab.json").is_file():
        return M2M100Tokenizer(path)
    if (path / "tokenizer.json").is_file():
        return FastMultilingualTokenizer(path)
    raise ModelLoadError(
        f"{path} has no tokenizer: an M2M100/NLLB checkpoint needs sentencepiece.bpe.model + "
        "vocab.json, or tokenizer.json"
    )
