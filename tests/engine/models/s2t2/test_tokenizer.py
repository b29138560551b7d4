"""The Speech2Text2 tokenizer against the reference Speech2Text2Tokenizer (transformers 4.46.3)."""

from __future__ import annotations

import json
import random

import pytest

from engine.errors import ModelLoadError
from engine.models.s2t2.tokenizer import S2T2Tokenizer
from tests.s2t2_reference import PIECES, write_tokenizer


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from transformers import Speech2Text2Tokenizer

    path = tmp_path_factory.mktemp("tok")
    write_tokenizer(path)
    return S2T2Tokenizer.from_dir(path), Speech2Text2Tokenizer.from_pretrained(path)


def _sequences(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(len(PIECES) + 3) for _ in range(rng.randrange(1, 15))] for _ in range(n)]


def test_decode_matches_reference(pair) -> None:
    """Random id sequences (specials and out-of-vocabulary ids included) decode exactly as the reference does."""
    ours, ref = pair
    for ids in _sequences(300):
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)


def test_token_bytes_concatenate_to_decode(pair) -> None:
    """Joining token_bytes and stripping the trailing space gives decode() whenever the last piece ends a word."""
    ours, ref = pair
    checked = 0
    for ids in _sequences(300, seed=1):
        text_ids = [i for i in ids if i not in ours.special_ids and i < len(PIECES)]
        if not text_ids or ours.piece(text_ids[-1]).endswith("@@"):
            continue
        joined = b"".join(ours.token_bytes(i) for i in ids).decode("utf-8").strip()
        assert joined == ref.decode(ids, skip_special_tokens=True).strip()
        checked += 1
    assert checked > 50


def test_token_bytes_of_pieces(pair) -> None:
    """A word-continuing piece contributes no space, a word-final piece one trailing space, specials nothing."""
    ours, _ = pair
    assert ours.token_bytes(PIECES.index("Sch@@")) + ours.token_bytes(PIECES.index("ön")) == "Schön ".encode()
    assert ours.token_bytes(PIECES.index("Straße")) == "Straße ".encode()
    assert ours.token_bytes(ours.special.eos) == b"" and ours.token_bytes(ours.special.unk) == b""
    assert ours.token_bytes(10_000) == b""


def test_encode_matches_reference(pair) -> None:
    """BPE with merges.txt splits words into the reference's pieces (unknown pieces become <unk>)."""
    ours, ref = pair
    for text in ["Haus Welt", "ein Mann sagte", "Schön über Straße !", "Hauser x", "a", "Welten unser"]:
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False), text


def test_special_token_ids(pair) -> None:
    """bos/pad/eos/unk come from the vocabulary by name, as the reference resolves them."""
    ours, ref = pair
    sp = ours.special
    assert (sp.bos, sp.pad, sp.eos, sp.unk) == (ref.bos_token_id, ref.pad_token_id, ref.eos_token_id, ref.unk_token_id)


def test_decoding_only_tokenizer_without_merges(tmp_path) -> None:
    """Without merges.txt decoding works and encoding raises a ModelLoadError that says why."""
    write_tokenizer(tmp_path)
    (tmp_path / "merges.txt").unlink()
    tok = S2T2Tokenizer.from_dir(tmp_path)
    assert tok.decode([PIECES.index("Sch@@"), PIECES.index("ön")]) == "Schön"
    with pytest.raises(ModelLoadError, match="merges.txt"):
        tok.encode("Haus")


def test_broken_vocab_is_a_model_load_error(tmp_path) -> None:
    """A missing vocab.json, bad JSON or missing special tokens are ModelLoadErrors naming the problem."""
    with pytest.raises(ModelLoadError, match="no vocab.json"):
        S2T2Tokenizer.from_dir(tmp_path)
    (tmp_path / "vocab.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        S2T2Tokenizer.from_dir(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1}))
    with pytest.raises(ModelLoadError, match="special token"):
        S2T2Tokenizer.from_dir(tmp_path)
