"""Language codes: what users type (ISO 639-1, `de`) and what each MT family's vocabulary calls a language.

M2M100 names languages `__de__`; NLLB-200 `deu_Latn` (ISO 639-3 + script); multilingual opus-mt models take a
target token such as `>>deu<<` or `>>de<<` at the start of the source. Users and the protocol always speak
ISO 639-1 where one exists; these tables map it onto each family's names.
"""

from __future__ import annotations

# fairseq's M2M100 language list, in vocabulary order: the language tokens follow the SentencePiece vocabulary
# in this order (the checkpoint's tokenizer_config.json names the list: "m2m100" or "wmt21").
M2M100_CODES = {
    "m2m100": (
        "af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa ff fi fr fy ga gd gl gu ha he hi hr ht "
        "hu hy id ig ilo is it ja jv ka kk km kn ko lb lg ln lo lt lv mg mk ml mn mr ms my ne nl no ns oc or pa pl ps "
        "pt ro ru sd si sk sl so sq sr ss su sv sw ta th tl tn tr uk ur uz vi wo xh yi yo zh zu"
    ).split(),
    "wmt21": "en ha is ja cs ru zh de".split(),
}

# ISO 639-1 -> NLLB-200 (FLORES-200) codes for the languages Whisper hears best; any other NLLB code may be given
# in full (e.g. --target ast_Latn).
NLLB_CODES = {
    "af": "afr_Latn",
    "ar": "arb_Arab",
    "bg": "bul_Cyrl",
    "bn": "ben_Beng",
    "ca": "cat_Latn",
    "cs": "ces_Latn",
    "cy": "cym_Latn",
    "da": "dan_Latn",
    "de": "deu_Latn",
    "el": "ell_Grek",
    "en": "eng_Latn",
    "es": "spa_Latn",
    "et": "est_Latn",
    "fa": "pes_Arab",
    "fi": "fin_Latn",
    "fr": "fra_Latn",
    "ga": "gle_Latn",
    "gl": "glg_Latn",
    "he": "heb_Hebr",
    "hi": "hin_Deva",
    "hr": "hrv_Latn",
    "hu": "hun_Latn",
    "id": "ind_Latn",
    "is": "isl_Latn",
    "it": "ita_Latn",
    "ja": "jpn_Jpan",
    "ko": "kor_Hang",
    "lt": "lit_Latn",
    "lv": "lvs_Latn",
    "mk": "mkd_Cyrl",
    "ms": "zsm_Latn",
    "nl": "nld_Latn",
    "no": "nob_Latn",
    "pl": "pol_Latn",
    "pt": "por_Latn",
    "ro": "ron_Latn",
    "ru": "rus_Cyrl",
    "sk": "slk_Latn",
    "sl": "slv_Latn",
    "sr": "srp_Cyrl",
    "sv": "swe_Latn",
    "sw": "swh_Latn",
    "ta": "tam_Taml",
    "th": "tha_Thai",
    "tr": "tur_Latn",
    "uk": "ukr_Cyrl",
    "ur": "urd_Arab",
    "vi": "vie_Latn",
    "zh": "zho_Hans",
}

# ISO 639-1 -> ISO 639-3, for opus-mt target tokens written with three letters (>>deu<<)
ISO3 = {iso1: nllb.split("_")[0] for iso1, nllb in NLLB_CODES.items()}
ISO3.update({"ar": "ara", "fa": "fas", "lv": "lav", "ms": "msa", "no": "nor", "sw": "swa", "zh": "zho"})


def nllb_to_iso1(code: str) -> str:
    """`deu_Latn` -> `de` where the table knows it, else the code unchanged."""
    for iso1, nllb in NLLB_CODES.items():
        if nllb == code:
            return iso1
    return code
