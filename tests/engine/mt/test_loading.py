"""Loading MT checkpoints: what is accepted, and the clear errors for what is not."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.errors import ConfigError, ModelLoadError
from engine.mt.loading import load_mt
from engine.mt.translate import Translator
from tests.mt_reference import build_marian

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("mt") / "opus-mt-en-de-tiny"
    build_marian(path)
    return path


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_generation_config_is_honoured(marian_dir) -> None:
    """Beam width, length, forced final eos and the banned <pad> come from generation_config.json."""
    gen = load_mt(str(marian_dir)).generation
    assert (gen.num_beams, gen.max_length, gen.forced_eos_token_id) == (4, 24, 0)
    assert gen.bad_token_ids == (gen.pad_token_id,) and gen.decoder_start_token_id == gen.pad_token_id


def test_pytorch_bin_loads_like_safetensors(marian_dir, tmp_path) -> None:
    """A checkpoint saved as pytorch_model.bin translates exactly as the safetensors one."""
    import torch
    from safetensors.torch import load_file

    other = _copy(marian_dir, tmp_path / "bin")
    sd = load_file(str(other / "model.safetensors"))
    torch.save(sd, other / "pytorch_model.bin")
    (other / "model.safetensors").unlink()
    a = Translator(load_mt(str(marian_dir), quantize="none")).translate("The weather is nice today.", "en", "de")
    b = Translator(load_mt(str(other), quantize="none")).translate("The weather is nice today.", "en", "de")
    assert a.tokens == b.tokens and a.text == b.text


def test_errors_name_what_is_wrong(marian_dir, tmp_path, monkeypatch) -> None:
    """Unsupported model types, missing vocabularies, mismatched weights and offline hub ids fail at once."""
    with pytest.raises(ModelLoadError, match="not found"):
        load_mt(str(tmp_path / "nope" / "x"))
    bad = _copy(marian_dir, tmp_path / "bad-type")
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "t5"}))
    with pytest.raises(ModelLoadError, match="model_type 't5' is not a supported MT model"):
        load_mt(str(bad))
    no_spm = _copy(marian_dir, tmp_path / "no-spm")
    (no_spm / "target.spm").unlink()
    with pytest.raises(ModelLoadError, match="no target.spm"):
        load_mt(str(no_spm))
    wrong = _copy(marian_dir, tmp_path / "wrong-shape")
    (wrong / "config.json").write_text(json.dumps({**cfg, "d_model": 64}))
    with pytest.raises(ModelLoadError, match="has shape"):
        load_mt(str(wrong))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="Offline alternatives"):
        load_mt("Helsinki-NLP/opus-mt-en-xx-not-cached")


def test_marian_cannot_write_other_targets(marian_dir) -> None:
    """An opus-mt pair knows its languages; a multilingual token the vocabulary lacks is a clear ConfigError."""
    bundle = load_mt(str(marian_dir))
    assert not bundle.can_translate("en", "fr")
    assert Translator(bundle).translate("", "en", "de").text == ""


def test_multilingual_marian_target_token(tmp_path) -> None:
    """A multilingual-target opus-mt puts the chosen >>xx<< token first; ISO 639-1 maps onto 3-letter tokens."""
    build_marian(tmp_path / "opus-mt-en-mul", lang_tokens=(">>deu<<", ">>spa<<"))
    bundle = load_mt(str(tmp_path / "opus-mt-en-mul"))
    tok = bundle.tokenizer
    assert set(bundle.target_languages) == {"deu", "spa", "de", "es"} and bundle.can_translate("en", "de")
    ids = tok.source_ids("Hello.", "en", "de")
    assert ids[0] == tok.vocab[">>deu<<"] and tok.source_ids("Hello.", "en", "es")[0] == tok.vocab[">>spa<<"]
    with pytest.raises(ConfigError, match="cannot write 'fr'"):
        tok.source_ids("Hello.", "en", "fr")


def test_cpu_default_is_an_int8_decoder_close_to_fp32(marian_dir) -> None:
    """By default the CPU decoder runs int8 (fast); its logits stay close to fp32's and the encoder is untouched."""
    import torch

    fp32, int8 = load_mt(str(marian_dir), quantize="none"), load_mt(str(marian_dir))
    assert int8.quantized and not fp32.quantized
    ids = torch.tensor([fp32.tokenizer.source_ids("The weather is nice today.", "en", "de")])
    enc = fp32.model.encode(ids)
    torch.testing.assert_close(int8.model.encode(ids), enc)
    prefix = torch.tensor([[fp32.generation.decoder_start_token_id, 5, 9, 7]])
    a = fp32.model.step(prefix, fp32.model.new_state(enc))
    b = int8.model.step(prefix, int8.model.new_state(enc))
    # column 0 (eos) left out: the tiny model's eos row is a fitted vector of norm ~1500 (tests/mt_reference.py)
    # that magnifies int8 activation rounding; real checkpoints have no such row
    eos = fp32.generation.eos_token_id
    keep = [i for i in range(a.shape[-1]) if i != eos]
    assert (a[..., keep] - b[..., keep]).abs().max() < 0.05 * a[..., keep].abs().max()
    # End to end the int8 decoder runs through the Translator. Its words are not compared with fp32's: the random
    # tiny model's logits are near-ties, and that eos row flips "stop now" on thread-order rounding.
    y = Translator(int8).translate("The weather is nice today.", "en", "de")
    assert y.finished and len(y.tokens) <= int8.generation.max_length
    assert all(t not in int8.generation.bad_token_ids for t in y.tokens)
