"""Parity with an independent implementation on the real base weights: our state dict, renamed into
transformers' WhisperForConditionalGeneration, must give the same encoder output, logits and greedy tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram
from engine.models.whisper.decoding import DecodingOptions, decode, detect_language
from engine.models.whisper.load import WhisperBundle
from tests.speech import speech

pytestmark = pytest.mark.slow

# fp32 on both sides; the two differ only in summation order (fused vs split projections, SDPA vs eager
# attention, 6 layers deep). Measured max |diff|: encoder ~2e-4, logits ~1e-3 on values of magnitude ~10-30.
ENCODER_TOL = dict(rtol=1e-3, atol=2e-3)
LOGITS_TOL = dict(rtol=1e-3, atol=1e-2)


def to_transformers_state_dict(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename our Whisper parameters into transformers' layout (the inverse of engine's HF loader, written
    out independently here so a mistake in one is not mirrored in the other)."""
    hf: dict[str, torch.Tensor] = {}

    def attn(src: str, dst: str) -> None:
        for theirs, mine in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"), ("out_proj", "out")):
            hf[f"{dst}.{theirs}.weight"] = ours[f"{src}.{mine}.weight"]
            if mine != "key":
                hf[f"{dst}.{theirs}.bias"] = ours[f"{src}.{mine}.bias"]

    def common(src: str, dst: str) -> None:
        attn(f"{src}.attn", f"{dst}.self_attn")
        for mine, theirs in (
            ("attn_ln", "self_attn_layer_norm"),
            ("mlp.0", "fc1"),
            ("mlp.2", "fc2"),
            ("mlp_ln", "final_layer_norm"),
        ):
            hf[f"{dst}.{theirs}.weight"] = ours[f"{src}.{mine}.weight"]
            hf[f"{dst}.{theirs}.bias"] = ours[f"{src}.{mine}.bias"]

    for conv in ("conv1", "conv2"):
        for p in ("weight", "bias"):
            hf[f"model.encoder.{conv}.{p}"] = ours[f"encoder.{conv}.{p}"]
    hf["model.encoder.embed_positions.weight"] = ours["encoder.positional_embedding"]
    n_enc = 1 + max(int(k.split(".")[2]) for k in ours if k.startswith("encoder.blocks."))
    n_dec = 1 + max(int(k.split(".")[2]) for k in ours if k.startswith("decoder.blocks."))
    for i in range(n_enc):
        common(f"encoder.blocks.{i}", f"model.encoder.layers.{i}")
    hf["model.encoder.layer_norm.weight"] = ours["encoder.ln_post.weight"]
    hf["model.encoder.layer_norm.bias"] = ours["encoder.ln_post.bias"]
    hf["model.decoder.embed_tokens.weight"] = ours["decoder.token_embedding.weight"]
    hf["model.decoder.embed_positions.weight"] = ours["decoder.positional_embedding"]
    for i in range(n_dec):
        src, dst = f"decoder.blocks.{i}", f"model.decoder.layers.{i}"
        common(src, dst)
        attn(f"{src}.cross_attn", f"{dst}.encoder_attn")
        hf[f"{dst}.encoder_attn_layer_norm.weight"] = ours[f"{src}.cross_attn_ln.weight"]
        hf[f"{dst}.encoder_attn_layer_norm.bias"] = ours[f"{src}.cross_attn_ln.bias"]
    hf["model.decoder.layer_norm.weight"] = ours["decoder.ln.weight"]
    hf["model.decoder.layer_norm.bias"] = ours["decoder.ln.bias"]
    hf["proj_out.weight"] = ours["decoder.token_embedding.weight"]
    return hf


@pytest.fixture(scope="module")
def reference(whisper_bundle_fp32: WhisperBundle):
    """transformers' WhisperForConditionalGeneration (eager attention, fp32) holding the embedded base weights."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from transformers.modeling_utils import no_init_weights

    cfg = whisper_bundle_fp32.model.config
    hf_cfg = WhisperConfig(
        vocab_size=cfg.n_vocab,
        num_mel_bins=cfg.n_mels,
        d_model=cfg.n_text_state,
        encoder_layers=cfg.n_audio_layer,
        decoder_layers=cfg.n_text_layer,
        encoder_attention_heads=cfg.n_audio_head,
        decoder_attention_heads=cfg.n_text_head,
        encoder_ffn_dim=4 * cfg.n_audio_state,
        decoder_ffn_dim=4 * cfg.n_text_state,
        max_source_positions=cfg.n_audio_ctx,
        max_target_positions=cfg.n_text_ctx,
        decoder_start_token_id=50258,
        pad_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50257,
        attn_implementation="eager",
    )
    with no_init_weights():
        model = WhisperForConditionalGeneration(hf_cfg)
    sd = {k: v.detach().clone() for k, v in whisper_bundle_fp32.model.state_dict().items()}
    missing, unexpected = model.load_state_dict(to_transformers_state_dict(sd), strict=False)
    assert not unexpected and not [k for k in missing if k != "proj_out.weight"], (missing, unexpected)
    model.tie_weights()
    return model.eval()


@pytest.fixture(scope="module")
def encoded(
    whisper_bundle_fp32: WhisperBundle, reference, audio_dir: Path
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """German and English speech in 30 s log-mel windows, encoded by both implementations: lang -> (ours, theirs)."""
    out = {}
    for lang in ("de", "en"):
        audio, _ = speech(lang, 0, audio_dir)
        features = log_mel_spectrogram(np.asarray(audio), pad_samples=N_SAMPLES)[None, :, :N_FRAMES]
        with torch.inference_mode():
            out[lang] = (
                whisper_bundle_fp32.model.encode(features),
                reference.model.encoder(features).last_hidden_state,
            )
    return out


def test_encoder_output_matches_transformers(encoded) -> None:
    """On real German and English speech the encoder outputs (1, 1500, 512) agree with transformers'."""
    for ours, theirs in encoded.values():
        assert ours.shape == theirs.shape == (1, 1500, 512)
        torch.testing.assert_close(ours, theirs, **ENCODER_TOL)


@pytest.mark.parametrize("lang,task", [("de", "translate"), ("de", "transcribe"), ("en", "transcribe")])
def test_logits_and_greedy_tokens_match_transformers(
    whisper_bundle_fp32: WhisperBundle, reference, encoded, lang: str, task: str
) -> None:
    """Our greedy decode over DecoderState yields tokens that transformers' greedy choice confirms at every position
    (same suppression rules), and our logits for the whole answer equal theirs."""
    bundle = whisper_bundle_fp32
    tok = bundle.tokenizer
    ours_enc, theirs_enc = encoded[lang]
    prompt = tok.sot_sequence(task, lang, timestamps=False)
    with torch.inference_mode():
        result = decode(bundle, ours_enc, DecodingOptions(task=task, language=lang))
        assert result.finished and len(result.tokens) > 5
        # One teacher-forced pass over prompt + answer; position i predicts token i + 1. If transformers' filtered
        # argmax is our token at every position (and <|endoftext|> after the last), its greedy decoding would
        # produce exactly our sequence.
        seq = torch.tensor([prompt + result.tokens])
        ours_logits = bundle.model.step(seq, bundle.model.new_state(ours_enc))
        theirs_logits = reference(encoder_outputs=(theirs_enc,), decoder_input_ids=seq).logits
    torch.testing.assert_close(ours_logits, theirs_logits, **LOGITS_TOL)
    n_vocab = bundle.model.config.n_vocab
    banned = sorted({*bundle.suppress_ids, *range(tok.eot + 1, n_vocab)})
    answer = theirs_logits[0, len(prompt) - 1 :].clone()  # (len(answer) + 1, V)
    answer[:, banned] = float("-inf")
    answer[0, list(bundle.suppress_ids_begin)] = float("-inf")
    theirs_greedy = answer.argmax(-1).tolist()
    assert theirs_greedy == result.tokens + [tok.eot], (result.text, tok.decode(theirs_greedy[:-1]))


def test_language_detection_matches_transformers(whisper_bundle_fp32: WhisperBundle, reference, encoded) -> None:
    """The language probabilities after <|startoftranscript|> agree with transformers' to 1e-3 and pick de/en."""
    tok = whisper_bundle_fp32.tokenizer
    codes = list(tok.language_ids)
    ids = torch.tensor([tok.language_ids[c] for c in codes])
    for lang, (ours_enc, theirs_enc) in encoded.items():
        with torch.inference_mode():
            detected, probs = detect_language(whisper_bundle_fp32, ours_enc)
            logits = reference(
                encoder_outputs=(theirs_enc,), decoder_input_ids=torch.tensor([[tok.special.sot]])
            ).logits
        theirs = logits[0, -1, ids].softmax(-1)
        assert detected == lang
        np.testing.assert_allclose([probs[c] for c in codes], theirs.numpy(), atol=1e-3)
