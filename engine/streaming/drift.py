"""Drift: a translation written out in the spoken language instead (Whisper sometimes ignores its task), told by
the density of that language's commonest function words."""

from __future__ import annotations

import re

# Each language's commonest function words that English text does not use (no "a", "no", "on", "will", "war").
# Lists that were too short let drift pass: Spanish lacked "la", "de", "en", "se" (a whole-window retry written
# out in Spanish, "... por qué quede a pedir cita con la doctora", passed as a translation), and French lacked "à",
# "l", "voici" ("Bonsoir à tous, voici les principaux titres de l'actualité" scored 2 of 10).
_SOURCE_WORDS = {
    "de": "und der die das ist nicht ich wir sie mit ein eine einen einem einer auf für sind wird haben heute sehr "
    "auch nach dem den des zu von bitte vielen dank im es aber oder wie wenn noch schon nur kann können muss "
    "mein meine unser unsere".split(),
    "fr": "le la les et est je nous vous avec pour une des du dans sur pas qui que très aujourd bonjour de en au aux "
    "ce cette il elle ils ne mais où sont ont était mon ma mes sa ses leur leurs à l qu c voici tous toutes ça chez "
    "sans alors donc comme aussi bonsoir".split(),
    "es": "el los las y es que con por un una unos unas para nosotros muy hoy buenos días gracias del la de en se al "
    "lo su sus como más pero le les ya este esta también porque cuando qué dónde donde hay ha han tiene puede nos mi "
    "mis está están sobre entre desde hasta todo todos".split(),
    "it": "il gli e è che con per una della sono molto oggi".split(),
    "nl": "de het een en is niet ik wij zijn met voor ook".split(),
}
# listed words that are English words too: they count as evidence of drift but are never banned from a translation
_ENGLISH_TOO = {"die", "den"}
# English function words, the evidence against drift; less those that are also a listed language's words (French
# "as", "or"; Spanish "he", "has")
_ENGLISH_WORDS = set(
    "the of to and is it that for with at be by this have from are you we she they i my our your his her their not "
    "but can had been there what which who would should could do does did if about".split()
)


def looks_like_source_language(text: str, language: str | None) -> bool:
    """Translate mode drifted into the spoken language: many of the words are that language's function words, or
    three or more are and English ones are few beside them. A translation that goes over into the spoken language
    halfway ("A collective rallye samedi à la mairie de Toulouse, the 9h16h.": 3 of 11) or is written in a rarer
    part of its vocabulary ("Laud einer Umfrage unter 2500 Versicherten hat fast jeder dritte des halb schon
    einmal ...": 5 of 17) stays under the density; a place name in an English sentence ("the Rue de la Paix")
    brings the English words with it."""
    words = _SOURCE_WORDS.get(language or "")
    if not words:
        return False
    toks = re.findall(r"[^\W\d_]+", text.lower())
    if len(toks) < 3:
        return False
    hits = sum(t in words for t in toks)
    english = sum(t in _ENGLISH_WORDS for t in toks)
    return hits / len(toks) >= 0.3 or (hits >= 3 and hits > 2 * english)


def bannable_words(language: str | None) -> list[str]:
    """The spoken language's function words a translation into English never needs (none for an unlisted one)."""
    return [w for w in _SOURCE_WORDS.get(language or "", ()) if w not in _ENGLISH_TOO]
