"""Tiny random MarianMT and M2M100 checkpoints built with transformers 4.46.3 (the reference), saved in HF format
with SentencePiece vocabularies trained here on a few sentences. Shared by tests/engine/mt/ and the MT tests of app/ and integration/; no tests here."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch

from tests.reference_weights import randomise_weights

ENGLISH = [
    "The weather is nice today.",
    "We are going to the station.",
    "Can you help me with this?",
    "The house is on the left side of the street.",
    "I would like a cup of coffee, please.",
    "She reads a book every evening.",
    "The children play in the garden.",
    "Where is the train to Berlin?",
    "Thank you very much for your help.",
    "The meeting starts at nine o'clock.",
]
GERMAN = [
    "Das Wetter ist heute schön.",
    "Wir gehen zum Bahnhof.",
    "Kannst du mir dabei helfen?",
    "Das Haus steht auf der linken Seite der Straße.",
    "Ich hätte gern eine Tasse Kaffee, bitte.",
    "Sie liest jeden Abend ein Buch.",
    "Die Kinder spielen im Garten.",
    "Wo ist der Zug nach Berlin?",
    "Vielen Dank für deine Hilfe.",
    "Die Sitzung beginnt um neun Uhr.",
]
MAX_LENGTH = 24  # generation length of the tiny checkpoints (not 20: HF drops its own default from the saved
# generation_config.json, and Dragoman then uses its longer default)
# the tiny networks' shape, every family alike: 2 + 2 layers of width 32, 64 positions
TINY = dict(
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=48,
    decoder_ffn_dim=48,
    max_position_embeddings=64,
    scale_embedding=True,
)


def train_spm(sentences: list[str], vocab_size: int) -> bytes:
    """A unigram SentencePiece model trained on `sentences` (serialized .model bytes)."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=out,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return out.getvalue()


def _pieces(model: bytes) -> list[str]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]


def build_marian(path: Path, seed: int = 0, lang_tokens: tuple[str, ...] = ()):
    """opus-mt-like en->de: separate source/target SentencePiece models, one shared vocab.json (</s> 0, <unk> 1,
    <pad> last), forced final eos and <pad> banned as in the released generation configs."""
    from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

    path.mkdir(parents=True, exist_ok=True)
    src, tgt = train_spm(ENGLISH, 60), train_spm(GERMAN, 60)
    (path / "source.spm").write_bytes(src)
    (path / "target.spm").write_bytes(tgt)
    pieces = list(dict.fromkeys(list(lang_tokens) + _pieces(src) + _pieces(tgt)))
    vocab = {"</s>": 0, "<unk>": 1}
    for p in pieces:
        vocab.setdefault(p, len(vocab))
    pad = vocab["<pad>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "MarianTokenizer", "source_lang": "en", "target_lang": "de"})
    )
    model = _tiny(
        MarianMTModel,
        MarianConfig,
        seed,
        vocab_size=len(vocab),
        pad_token_id=pad,
        eos_token_id=0,
        decoder_start_token_id=pad,
        forced_eos_token_id=0,
    )
    with torch.no_grad():
        model.final_logits_bias.copy_(0.3 * torch.randn(model.final_logits_bias.shape))
    model.generation_config = GenerationConfig(
        decoder_start_token_id=pad,
        eos_token_id=0,
        pad_token_id=pad,
        forced_eos_token_id=0,
        bad_words_ids=[[pad]],
        max_length=MAX_LENGTH,
        num_beams=4,
    )
    tok = MarianTokenizer(
        str(path / "source.spm"), str(path / "target.spm"), str(path / "vocab.json"), source_lang="en", target_lang="de"
    )
    _calibrate_eos(model, [tok(s).input_ids for s in ENGLISH[:4]], eos=0, start=[pad], n_text=pad)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return _reload(MarianMTModel, path), MarianTokenizer.from_pretrained(path)


M2M100_IDS = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)  # fairseq's specials


def build_m2m100(path: Path, seed: int = 0):
    """M2M100-like: one SentencePiece model over both languages, vocab.json with the fairseq specials first, the
    100 language tokens (and 8 made-up words) after it; decoding starts with </s> and forces __de__."""
    from transformers import GenerationConfig, M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    path.mkdir(parents=True, exist_ok=True)
    model_bytes = train_spm(ENGLISH + GERMAN, 90)
    (path / "sentencepiece.bpe.model").write_bytes(model_bytes)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for p in _pieces(model_bytes):
        vocab.setdefault(p, len(vocab))
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "M2M100Tokenizer", "language_codes": "m2m100", "src_lang": "en", "tgt_lang": "de"}
        )
    )
    tok = M2M100Tokenizer(str(path / "vocab.json"), str(path / "sentencepiece.bpe.model"), src_lang="en", tgt_lang="de")
    model = _tiny(M2M100ForConditionalGeneration, M2M100Config, seed, vocab_size=len(vocab) + 100 + 8, **M2M100_IDS)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=2,
        eos_token_id=2,
        pad_token_id=1,
        bos_token_id=0,
        max_length=MAX_LENGTH,
        num_beams=3,
        early_stopping=True,
    )
    _calibrate_eos(
        model, [tok(s).input_ids for s in ENGLISH[:4]], eos=2, start=[2, tok.get_lang_id("de")], n_text=len(vocab)
    )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return _reload(M2M100ForConditionalGeneration, path), M2M100Tokenizer.from_pretrained(path)


def build_nllb(path: Path, seed: int = 0):
    """NLLB-200-like: an M2M100 network with the NLLB fast tokenizer (tokenizer.json, converted from a SentencePiece
    model trained here; language tokens such as deu_Latn are added tokens), no vocab.json."""
    from transformers import GenerationConfig, M2M100Config, M2M100ForConditionalGeneration, NllbTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    spm_file = path / "sentencepiece.bpe.model"
    spm_file.write_bytes(train_spm(ENGLISH + GERMAN, 90))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = NllbTokenizerFast(vocab_file=str(spm_file), src_lang="eng_Latn", tgt_lang="deu_Latn")
    spm_file.unlink()  # as on the hub, the fast tokenizer alone describes the vocabulary
    n_text = tok.convert_tokens_to_ids("ace_Arab")  # the language tokens follow the pieces
    model = _tiny(M2M100ForConditionalGeneration, M2M100Config, seed, vocab_size=len(tok), **M2M100_IDS)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=2, eos_token_id=2, pad_token_id=1, bos_token_id=0, max_length=MAX_LENGTH, num_beams=2
    )
    _calibrate_eos(
        model,
        [tok(s).input_ids for s in ENGLISH[:4]],
        eos=2,
        start=[2, tok.convert_tokens_to_ids("deu_Latn")],
        n_text=n_text,
    )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "sentencepiece.bpe.model").unlink(missing_ok=True)
    return _reload(M2M100ForConditionalGeneration, path), tok


def _reload(cls, path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_pretrained(path, attn_implementation="eager").eval()


def _tiny(model_cls, config_cls, seed: int, **fields):
    """A tiny network of `model_cls` (TINY's shape plus `fields`), seeded, with decisive random weights."""
    torch.manual_seed(seed)
    cfg = config_cls(**TINY, **fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_cls(cfg)
    randomise_weights(model, torch.Generator().manual_seed(1000 + seed))
    return model


@torch.no_grad()
def _calibrate_eos(
    model, sources: list[list[int]], eos: int, start: list[int], n_text: int, n_steps: int = 14, again: bool = True
) -> None:
    """Random decoders almost never pick </s>; fit a bias direction so that eos's logit rises with the position
    (below the best other token at first, above it after ~8 tokens), so beams finish at different lengths and
    beam search's bookkeeping for finished hypotheses is exercised. Written into the (tied) embedding row."""
    g = torch.Generator().manual_seed(7)
    hs, targets = [], []
    for src in sources:
        ids = torch.tensor([src])
        dec = torch.randint(4, n_text, (1, n_steps), generator=g)
        dec[0, : len(start)] = torch.tensor(start)
        out = model(input_ids=ids, decoder_input_ids=dec, output_hidden_states=True)
        h = out.decoder_hidden_states[-1][0]  # (n_steps, d): what lm_head sees
        logits = out.logits[0]
        other = torch.cat([logits[:, :eos], logits[:, eos + 1 :]], dim=-1).max(-1).values
        bias = model.final_logits_bias[0, eos] if hasattr(model, "final_logits_bias") else 0.0
        hs.append(h)
        targets.append(other + torch.linspace(-6.0, 2.0, n_steps) - bias)
    h, t = torch.cat(hs), torch.cat(targets)
    # in float64: CPU lstsq is not bit-reproducible, and this system's condition number (~1e3) would carry its
    # float32 rounding into the eos row; in float64 that noise stays far below float32's last bit
    w = torch.linalg.lstsq(h.double(), t[:, None].double()).solution[:, 0].float()
    model.get_output_embeddings().weight[eos] = w  # tied: also eos's input embedding (M2M100's start token)
    if again:  # the start token's embedding moved, and with it the hidden states: fit once more
        _calibrate_eos(model, sources, eos, start, n_text, n_steps, again=False)
