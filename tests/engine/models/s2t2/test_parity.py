"""wav2vec2 + Speech2Text2 against transformers 4.46.3: encoder outputs, logits, greedy and beam `generate`.

Each variant is a tiny random SpeechEncoderDecoderModel saved with save_pretrained and loaded by Dragoman's loader,
covering both feature-encoder norms, both layer-norm placements, scale_embedding on and off, and decoder widths with
and without the enc_to_dec projection.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from engine.backend import Backend, make_backend
from engine.models.loading import load_model
from engine.models.s2t2.generate import SearchOptions, generate, translate_window
from tests.s2t2_reference import VARIANTS, build_reference, speech_like

CLIPS = [speech_like(8000, 1), speech_like(5600, 2), speech_like(11200, 3) * 0.2]


@pytest.fixture(scope="module", params=VARIANTS, ids=[v.name for v in VARIANTS])
def pair(request, tmp_path_factory):
    """(reference model, reference tokenizer, feature extractor, our backend) for one variant."""
    from transformers import Wav2Vec2FeatureExtractor

    ref, tok, path = build_reference(tmp_path_factory.mktemp("s2t2"), request.param)
    fe = Wav2Vec2FeatureExtractor.from_pretrained(path)
    backend = make_backend(load_model(str(path), device="cpu"))
    return ref, tok, fe, backend


def _inputs(fe, audio):
    return fe(audio, sampling_rate=16000, return_tensors="pt")


def _reference_generate(ref, inputs, **search) -> list[int]:
    """The reference `generate`'s first sequence for the extracted `inputs` (no sampling; `search`: max_length,
    num_beams, early_stopping)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = ref.generate(inputs.input_values, attention_mask=inputs.get("attention_mask"), do_sample=False, **search)
    return out[0].tolist()


def test_backend_satisfies_protocol(pair) -> None:
    """The loaded checkpoint is an s2t2 bundle whose backend implements every Backend member."""
    _, _, _, backend = pair
    assert isinstance(backend, Backend)
    assert backend.family == "s2t2" and backend.tasks == ("translate",)
    assert backend.detect_language(torch.zeros(1, 3, 4)) is None


def test_encoder_output_matches_reference(pair) -> None:
    """Normalisation + wav2vec2 + enc_to_dec_proj equal the reference's encoder hidden states (fp32, tight)."""
    ref, _, fe, backend = pair
    for audio in CLIPS:
        inputs = _inputs(fe, audio)
        with torch.no_grad():
            expected = ref.encoder(inputs.input_values, attention_mask=inputs.get("attention_mask"))[0]
            if hasattr(ref, "enc_to_dec_proj"):
                expected = ref.enc_to_dec_proj(expected)
        torch.testing.assert_close(backend.encode(audio), expected, rtol=1e-5, atol=2e-5)


def test_logits_match_reference(pair) -> None:
    """Decoder logits for a prefix (with a pad token inside: positions skip it) equal the reference's."""
    ref, _, fe, backend = pair
    inputs = _inputs(fe, CLIPS[0])
    prefix = torch.tensor([[0, 5, 1, 9, 20, 21, 7, 7, 13]])
    with torch.no_grad():
        expected = ref(
            input_values=inputs.input_values, attention_mask=inputs.get("attention_mask"), decoder_input_ids=prefix
        ).logits
    state = backend.new_state(backend.encode(CLIPS[0]))
    torch.testing.assert_close(backend.step(prefix, state), expected, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("num_beams", [1, 2, 4])
def test_search_is_token_identical_to_generate(pair, num_beams: int) -> None:
    """Greedy and beam search give exactly the sequences the reference `generate` gives."""
    ref, _, fe, backend = pair
    for audio in CLIPS:
        expected = _reference_generate(ref, _inputs(fe, audio), max_length=14, num_beams=num_beams)
        got = generate(backend, backend.encode(audio), SearchOptions(num_beams=num_beams, max_length=14))
        assert got == expected


def test_beam_early_stopping_is_token_identical(pair) -> None:
    """early_stopping=True (stop at num_beams finished hypotheses) matches the reference too."""
    ref, _, fe, backend = pair
    audio = CLIPS[1]
    expected = _reference_generate(ref, _inputs(fe, audio), max_length=20, num_beams=3, early_stopping=True)
    got = generate(backend, backend.encode(audio), SearchOptions(num_beams=3, max_length=20, early_stopping=True))
    assert got == expected


def test_translate_window_equals_reference_pipeline(pair) -> None:
    """translate_window's text is the reference tokenizer's decode of the reference generate (beam 2)."""
    ref, tok, fe, backend = pair
    audio = CLIPS[2]
    limit = backend.bundle.generation.max_length
    ids = _reference_generate(ref, _inputs(fe, audio), max_length=limit, num_beams=2)
    assert translate_window(backend.bundle, audio, beam_size=2) == tok.decode(ids, skip_special_tokens=True)


def test_padded_batch_follows_reference_semantics(pair) -> None:
    """encode_batch masks padding exactly when the feature extractor returns a mask; real frames match the
    reference run on the same padded batch."""
    ref, _, fe, backend = pair
    a, b = CLIPS[0], CLIPS[1]
    out, valid = backend.encode_batch([a, b])
    uses_mask = backend.bundle.frontend.return_attention_mask
    assert (valid is not None) == uses_mask
    if uses_mask:
        inputs = fe([a, b], sampling_rate=16000, padding=True, return_tensors="pt")
        mask = inputs.attention_mask
    else:  # rows are normalised alone and zero-padded, the way the reference documents base-model batching
        rows = [fe(x, sampling_rate=16000).input_values[0] for x in (a, b)]
        n = max(len(r) for r in rows)
        inputs = {"input_values": torch.tensor(np.stack([np.pad(r, (0, n - len(r))) for r in rows]))}
        mask = None
    with torch.no_grad():
        expected = ref.encoder(inputs["input_values"], attention_mask=mask)[0]
        if hasattr(ref, "enc_to_dec_proj"):
            expected = ref.enc_to_dec_proj(expected)
    if valid is None:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=2e-5)
    else:
        for row in range(2):
            torch.testing.assert_close(out[row, valid[row]], expected[row, valid[row]], rtol=1e-5, atol=2e-5)
