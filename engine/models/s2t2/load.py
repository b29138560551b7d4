"""Loading HF-format wav2vec2 + Speech2Text2 checkpoints (`SpeechEncoderDecoderModel` directories).

The family registers `load_s2t2` for config.json model_type "speech-encoder-decoder" (engine/models/loading.py sends
such directories here). Everything that is checked is checked before any weight is read, and every failure is a
ModelLoadError that names the field or file.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ...errors import ModelLoadError
from ..checkpoint import (
    check_weights,
    config_from_json,
    generation_lookup,
    no_random_init,
    read_json,
    read_state_dict,
    warn_unapplied,
)
from .model import S2T2, S2T2Config
from .tokenizer import S2T2Tokenizer
from .wav2vec2 import ACTIVATIONS, SAMPLE_RATE, Wav2Vec2Config

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 200  # HF's own default (20) would cut a 30 s window's translation mid-sentence
# checkpoint entries that carry nothing the inference model needs
# HF generation options with their neutral values; other values are logged and not applied
UNAPPLIED_OPTIONS = {
    "no_repeat_ngram_size": 0,
    "repetition_penalty": 1.0,
    "min_length": 0,
    "forced_eos_token_id": None,
    "forced_bos_token_id": None,
    "bad_words_ids": None,
    "do_sample": False,
}
IGNORED_WEIGHTS = ("encoder.masked_spec_embed", "decoder.model.decoder.embed_positions.weights")


@dataclass(frozen=True)
class FrontEndConfig:
    """preprocessor_config.json of a Wav2Vec2FeatureExtractor."""

    do_normalize: bool = True  # zero mean, unit variance per utterance
    # True for models trained with padded batches (large-lv60, layer norm): padding is masked in the encoder.
    # False for group-norm models: they were trained unmasked, so padded batches are zero-padded, not masked.
    return_attention_mask: bool = False
    padding_value: float = 0.0


@dataclass(frozen=True)
class GenerationConfig:
    """The parts of HF's generation config that decoding follows (generation_config.json, else config.json)."""

    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int
    max_length: int = DEFAULT_MAX_LENGTH  # start token included, as in HF
    num_beams: int = 1
    length_penalty: float = 1.0  # beam scores are sum(logprob) / n_generated ** length_penalty
    early_stopping: bool | Literal["never"] = False  # HF's beam stopping rule


@dataclass
class S2T2Bundle:
    """A loaded wav2vec2 + Speech2Text2 model with its tokenizer, front end and generation settings."""

    model: S2T2
    tokenizer: S2T2Tokenizer
    name: str
    generation: GenerationConfig
    frontend: FrontEndConfig = field(default_factory=FrontEndConfig)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    quantized: bool = False
    family: str = "s2t2"


def load_s2t2(path: Path, cfg: dict[str, Any], name: str) -> S2T2Bundle:
    """A SpeechEncoderDecoderModel directory with a wav2vec2 encoder and a Speech2Text2 decoder."""
    t0 = time.perf_counter()
    path = Path(path)
    enc_cfg, dec_cfg = parse_config(cfg, path)
    frontend = _frontend(path)
    tokenizer = S2T2Tokenizer.from_dir(path)
    generation = _generation(path, cfg, tokenizer)
    if len(tokenizer.vocab) > dec_cfg.vocab_size:
        raise ModelLoadError(
            f"{path}: vocab.json has {len(tokenizer.vocab)} tokens but the decoder only "
            f"{dec_cfg.vocab_size} (config.json decoder.vocab_size)"
        )
    with no_random_init():  # every weight comes from the checkpoint (strict below)
        model = S2T2(enc_cfg, dec_cfg)
    model.load_state_dict(map_weights(read_state_dict(path), model, path), strict=True)
    log.info("loaded s2t2 %s in %.2f s", name, time.perf_counter() - t0)
    return S2T2Bundle(model=model.eval(), tokenizer=tokenizer, name=name, generation=generation, frontend=frontend)


# -- config.json ---------------------------------------------------------------------------------------------
def parse_config(cfg: dict[str, Any], path: Path | str = "config.json") -> tuple[Wav2Vec2Config, S2T2Config]:
    """The encoder and decoder configs of a speech-encoder-decoder config.json; ModelLoadError names what is wrong."""
    where = f"{path}/config.json" if not str(path).endswith(".json") else str(path)
    enc, dec = cfg.get("encoder"), cfg.get("decoder")
    if not isinstance(enc, dict) or not isinstance(dec, dict):
        raise ModelLoadError(f"{where}: a speech-encoder-decoder config needs 'encoder' and 'decoder' sections")
    if enc.get("model_type") != "wav2vec2":
        raise ModelLoadError(
            f"{where}: encoder model_type {enc.get('model_type')!r} is not supported "
            "(this engine runs wav2vec2 encoders with Speech2Text2 decoders)"
        )
    if dec.get("model_type") != "speech_to_text_2":
        raise ModelLoadError(
            f"{where}: decoder model_type {dec.get('model_type')!r} is not supported "
            "(this engine runs Speech2Text2 decoders; for Whisper use a Whisper checkpoint)"
        )
    try:
        enc_cfg = _wav2vec2_config(enc)
        dec_cfg = _s2t2_config(dec)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{where}: {e}") from None
    return enc_cfg, dec_cfg


def _wav2vec2_config(enc: dict[str, Any]) -> Wav2Vec2Config:
    c = config_from_json(Wav2Vec2Config, enc)
    c = dataclasses.replace(c, output_hidden_size=c.output_hidden_size or c.hidden_size)
    if c.feat_extract_norm not in ("group", "layer"):
        raise ValueError(f"encoder.feat_extract_norm is {c.feat_extract_norm!r}; it must be 'group' or 'layer'")
    if not (len(c.conv_dim) == len(c.conv_kernel) == len(c.conv_stride)) or not c.conv_dim:
        raise ValueError("encoder.conv_dim, conv_kernel and conv_stride must be non-empty lists of equal length")
    n_conv = enc.get("num_feat_extract_layers")
    if n_conv is not None and int(n_conv) != len(c.conv_dim):
        raise ValueError(f"encoder.num_feat_extract_layers is {n_conv} but conv_dim lists {len(c.conv_dim)} layers")
    if c.hidden_size % c.num_attention_heads:
        raise ValueError(
            f"encoder.hidden_size {c.hidden_size} is not divisible by num_attention_heads {c.num_attention_heads}"
        )
    if c.hidden_size % c.num_conv_pos_embedding_groups:
        raise ValueError(
            f"encoder.hidden_size {c.hidden_size} is not divisible by "
            f"num_conv_pos_embedding_groups {c.num_conv_pos_embedding_groups}"
        )
    for key in ("feat_extract_activation", "hidden_act"):
        if getattr(c, key) not in ACTIVATIONS:
            raise ValueError(f"encoder.{key} {getattr(c, key)!r} is not supported ({', '.join(ACTIVATIONS)})")
    if enc.get("adapter_attn_dim") is not None:
        raise ValueError("encoder.adapter_attn_dim (MMS attention adapters) is not supported")
    return c


def _s2t2_config(dec: dict[str, Any]) -> S2T2Config:
    c = config_from_json(S2T2Config, dec)
    if c.d_model % c.decoder_attention_heads:
        raise ValueError(
            f"decoder.d_model {c.d_model} is not divisible by decoder_attention_heads {c.decoder_attention_heads}"
        )
    if c.activation_function not in ACTIVATIONS:
        raise ValueError(f"decoder.activation_function {c.activation_function!r} is not supported")
    if not 0 <= c.pad_token_id < c.vocab_size:
        raise ValueError(f"decoder.pad_token_id {c.pad_token_id} is outside the vocabulary of {c.vocab_size}")
    if dec.get("cross_attention_hidden_size") not in (None, c.d_model):
        raise ValueError("decoder.cross_attention_hidden_size is not supported by Speech2Text2 (remove it)")
    return c


def _frontend(path: Path) -> FrontEndConfig:
    f = path / "preprocessor_config.json"
    if not f.is_file():
        log.warning("%s has no preprocessor_config.json; assuming wav2vec2's defaults (normalised input)", path)
        return FrontEndConfig()
    pre = read_json(f)
    rate = pre.get("sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise ModelLoadError(f"{f}: sampling_rate {rate} is not supported (wav2vec2 front ends run at 16000 Hz)")
    if pre.get("feature_size", 1) != 1:
        raise ModelLoadError(f"{f}: feature_size {pre.get('feature_size')} is not raw audio (expected 1)")
    return FrontEndConfig(
        do_normalize=bool(pre.get("do_normalize", True)),
        return_attention_mask=bool(pre.get("return_attention_mask", False)),
        padding_value=float(pre.get("padding_value", 0.0)),
    )


def _generation(path: Path, cfg: dict[str, Any], tokenizer: S2T2Tokenizer) -> GenerationConfig:
    """generation_config.json when present; else the top-level config, then the decoder's (HF's precedence)."""
    get = generation_lookup(path, cfg, cfg.get("decoder") or {})
    sp = tokenizer.special
    start = get("decoder_start_token_id", get("bos_token_id", sp.bos))
    eos = get("eos_token_id", sp.eos)
    if isinstance(eos, list):  # several end tokens: the first is the one the reference appends
        eos = eos[0]
    pad = get("pad_token_id", sp.pad)
    warn_unapplied(get, UNAPPLIED_OPTIONS, path)
    early = get("early_stopping", False)
    return GenerationConfig(
        decoder_start_token_id=int(start),
        eos_token_id=int(eos),
        pad_token_id=int(pad),
        max_length=int(get("max_length", DEFAULT_MAX_LENGTH)),
        num_beams=int(get("num_beams", 1)),
        length_penalty=float(get("length_penalty", 1.0)),
        early_stopping=early if early == "never" else bool(early),
    )


# -- weights -------------------------------------------------------------------------------------------------
def map_weights(hf: dict[str, torch.Tensor], model: S2T2, path: Path | str) -> dict[str, torch.Tensor]:
    """HF SpeechEncoderDecoderModel names -> ours; weight norm folded; missing or surplus weights are errors."""
    sd: dict[str, torch.Tensor] = {}
    conv = "encoder.encoder.pos_conv_embed.conv"
    g = hf.get(f"{conv}.weight_g", hf.get(f"{conv}.parametrizations.weight.original0"))
    v = hf.get(f"{conv}.weight_v", hf.get(f"{conv}.parametrizations.weight.original1"))
    folded = {
        f"{conv}.weight_g",
        f"{conv}.weight_v",
        f"{conv}.parametrizations.weight.original0",
        f"{conv}.parametrizations.weight.original1",
    }
    if g is not None and v is not None:
        # weight norm over dim 2 (time): each kernel tap's (out, in/groups) slice is scaled to norm g
        g, v = g.float(), v.float()
        sd[f"{conv}.weight"] = v * (g / v.norm(dim=(0, 1), keepdim=True))
    elif f"{conv}.weight" in hf:
        sd[f"{conv}.weight"] = hf[f"{conv}.weight"].float()
    for key, tensor in hf.items():
        if key in folded or key in IGNORED_WEIGHTS or key == f"{conv}.weight":
            continue
        # the decoder sits two wrappers deep in HF (ForCausalLM.model.decoder); everything else keeps its name
        ours = "decoder." + key.removeprefix("decoder.model.decoder.") if key.startswith("decoder.model.") else key
        if ours.startswith("decoder.embed_positions"):
            continue  # the sinusoidal table is recomputed, never trained
        sd[ours] = tensor.float()
    # tied output projection: checkpoints saved with tie_word_embeddings drop lm_head and share the embedding
    if "decoder.lm_head.weight" not in sd and "decoder.embed_tokens.weight" in sd:
        sd["decoder.lm_head.weight"] = sd["decoder.embed_tokens.weight"]
    check_weights(model, sd, path)
    return sd
