"""MarianMT and M2M100 against transformers 4.46.3 on tiny random checkpoints written here: tokenizer ids, encoder
output, logits, greedy and beam `generate`, and the explicit decoder state (cache == recomputation, rewind)."""

from __future__ import annotations

import warnings

import pytest
import torch

from engine.mt.loading import load_mt
from engine.mt.search import MTSearchOptions, search
from engine.mt.translate import Translator
from tests.mt_reference import ENGLISH, MAX_LENGTH, build_m2m100, build_marian, build_nllb

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
BUILDERS = {"marian": build_marian, "m2m100": build_m2m100, "nllb": build_nllb}

SENTENCES = ENGLISH[:6] + ["Hello, unknown words: xyz Qq!", "a"]


@pytest.fixture(scope="module", params=list(BUILDERS))
def pair(request, tmp_path_factory):
    """(reference model, reference tokenizer, our bundle, family) for one family."""
    path = tmp_path_factory.mktemp("mt") / request.param
    ref, tok = BUILDERS[request.param](path)
    return ref, tok, load_mt(str(path), device="cpu", quantize="none"), request.param


def _ref_generate(ref, tok, family: str, ids: list[int], num_beams: int) -> list[int]:
    kwargs = {"max_length": MAX_LENGTH, "num_beams": num_beams, "do_sample": False}
    if family == "m2m100":
        kwargs["forced_bos_token_id"] = tok.get_lang_id("de")
    elif family == "nllb":
        kwargs["forced_bos_token_id"] = tok.convert_tokens_to_ids("deu_Latn")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ref.generate(torch.tensor([ids]), **kwargs)[0].tolist()


def test_source_ids_match_reference_tokenizer(pair) -> None:
    """Source ids (language token, pieces, unknown pieces, eos) equal the reference tokenizer's."""
    _, tok, bundle, _ = pair
    for text in SENTENCES:
        assert bundle.tokenizer.source_ids(text, "en", "de") == tok(text).input_ids


def test_languages_come_from_the_checkpoint(pair) -> None:
    """Marian reads its pair from tokenizer_config.json; M2M100 and NLLB know their languages (NLLB as ISO codes
    too: de is deu_Latn)."""
    _, _, bundle, family = pair
    assert bundle.can_translate("en", "de")
    if family == "marian":
        assert bundle.source_languages == ("en",) and bundle.target_languages == ("de",)
        assert not bundle.can_translate("fr", "de")
    else:
        assert {"en", "de", "fr", "es"} <= set(bundle.target_languages)


def test_encoder_output_matches_reference(pair) -> None:
    """Embeddings, positions and encoder layers equal the reference's hidden states (fp32, tight)."""
    ref, tok, bundle, _ = pair
    for text in SENTENCES:
        ids = torch.tensor([tok(text).input_ids])
        with torch.no_grad():
            expected = ref.get_encoder()(ids).last_hidden_state
        torch.testing.assert_close(bundle.model.encode(ids), expected, rtol=1e-5, atol=2e-5)


def test_padded_batch_encodes_like_single_sentences(pair) -> None:
    """Right-padded batches with a mask give each sentence's own encoder output on its real tokens."""
    _, tok, bundle, _ = pair
    rows = [tok(t).input_ids for t in SENTENCES[:3]]
    n = max(map(len, rows))
    pad = bundle.model.config.pad_token_id
    ids = torch.tensor([r + [pad] * (n - len(r)) for r in rows])
    mask = torch.tensor([[True] * len(r) + [False] * (n - len(r)) for r in rows])
    out = bundle.model.encode(ids, mask)
    for i, r in enumerate(rows):
        torch.testing.assert_close(out[i, : len(r)], bundle.model.encode(torch.tensor([r]))[0], rtol=1e-5, atol=2e-5)


def test_logits_match_reference(pair) -> None:
    """Decoder logits for a whole prefix (final_logits_bias, positions, layer norms) equal the reference's."""
    ref, tok, bundle, family = pair
    ids = torch.tensor([tok(SENTENCES[1]).input_ids])
    start = bundle.generation.decoder_start_token_id
    prefix = torch.tensor([[start, 5, 9, 7, 7, 12, 4, 20]])
    with torch.no_grad():
        expected = ref(input_ids=ids, decoder_input_ids=prefix).logits
    state = bundle.model.new_state(bundle.model.encode(ids))
    torch.testing.assert_close(bundle.model.step(prefix, state), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("num_beams", [1, 2, 4])
def test_search_is_token_identical_to_generate(pair, num_beams: int) -> None:
    """Greedy and beam search (forced language token, forced final eos, banned <pad>) equal `generate`."""
    ref, tok, bundle, family = pair
    gen = bundle.generation
    options = MTSearchOptions(
        num_beams=num_beams,
        max_length=MAX_LENGTH,
        length_penalty=gen.length_penalty,
        early_stopping=gen.early_stopping,
        eos=gen.eos_token_id,
        forced_eos=gen.forced_eos_token_id,
        banned=gen.bad_token_ids,
    )
    for text in SENTENCES:
        ids = tok(text).input_ids
        expected = _ref_generate(ref, tok, family, ids, num_beams)
        state = bundle.model.new_state(bundle.model.encode(torch.tensor([ids])))
        start = [gen.decoder_start_token_id] + bundle.tokenizer.target_prefix("de")
        assert search(bundle.model, state, start, options).tokens == expected, text


def test_translator_text_equals_reference_decode(pair) -> None:
    """Translator.translate with the checkpoint's own generation config gives the reference's text."""
    ref, tok, bundle, family = pair
    translator = Translator(bundle)
    for text in SENTENCES[:4]:
        expected = _ref_generate(ref, tok, family, tok(text).input_ids, bundle.generation.num_beams)
        if family != "marian":
            expected = expected[2:]  # the forced language token: not text
        assert translator.translate(text, "en", "de").text == tok.decode(expected, skip_special_tokens=True)


def test_cached_decoding_equals_recomputation(pair) -> None:
    """Token-by-token steps over the cache give the logits of one pass over the whole prefix."""
    _, tok, bundle, _ = pair
    model = bundle.model
    enc = model.encode(torch.tensor([tok(SENTENCES[2]).input_ids]))
    prefix = [bundle.generation.decoder_start_token_id, 11, 6, 6, 30, 8, 17]
    full = model.step(torch.tensor([prefix]), model.new_state(enc))
    state = model.new_state(enc)
    steps = [model.step(torch.tensor([[t]]), state) for t in prefix]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-3, atol=1e-3)
    assert state.offset == len(prefix)


def test_rewind_then_extend_equals_fresh_decode(pair) -> None:
    """Rewinding the cache and feeding other tokens equals decoding the new prefix from scratch."""
    _, tok, bundle, _ = pair
    model = bundle.model
    enc = model.encode(torch.tensor([tok(SENTENCES[3]).input_ids]))
    start = bundle.generation.decoder_start_token_id
    state = model.new_state(enc)
    model.step(torch.tensor([[start, 4, 9, 13, 21]]), state)
    state.rewind(3)
    assert state.offset == 2
    got = model.step(torch.tensor([[25, 5]]), state)
    expected = model.step(torch.tensor([[start, 4, 25, 5]]), model.new_state(enc))[:, -2:]
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
