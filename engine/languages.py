"""Spoken-language codes as users give them: the one rule every entry point checks a language against (the CLI's
--language for file, stream, mic and serve; the WebSocket `start` and `language` messages; the OpenAI, Deepgram and
Realtime APIs), so the same bad code gets the same answer everywhere.

A code is Whisper's (ISO 639-1 where one exists: `de`; three letters otherwise: `yue`, `haw`), in any case, with an
optional region or script subtag that is dropped (`en-US` is `en`). None, "" and "auto" mean "detect". Whether the
model knows the code is the model's business: `known_languages()` asks it. (MT target codes: engine/mt/languages.py.)
"""

from __future__ import annotations

import re
from collections.abc import Collection

from .errors import ConfigError

DETECT = ("", "auto")  # what a user may type for "detect the language" (None means it too)
_CODE = re.compile(r"^([a-z]{2,3})(-[a-z0-9]{2,8})*$")  # a language, then any region/script subtags


def language_error(value: object, detect: str = "'auto'") -> str:
    """The message for a language code that is malformed or unknown to the model; `detect` is how the interface
    at hand asks for detection instead ('auto' on the command line, null in JSON, multi for Deepgram)."""
    return f"unknown language {value!r}; use a code such as de, fr, es (or {detect} to detect)"


def parse_language(value: object, known: Collection[str] | None = None, detect: str = "'auto'") -> str | None:
    """A user's spoken-language code -> the model's code, or None for "detect".

    Raises ConfigError(language_error(...)) when `value` is not a code, or when `known` (the model's codes, from
    known_languages(); None: not checked) lacks it.
    """
    if value is None:
        return None
    code = value.strip().lower() if isinstance(value, str) else None
    if code in DETECT:
        return None
    m = _CODE.match(code) if code is not None else None
    if m is None or (known is not None and m.group(1) not in known):
        raise ConfigError(language_error(value, detect))
    return m.group(1)


def known_languages(model: object) -> Collection[str] | None:
    """The language codes `model` (a Backend or a loaded bundle) can be told to hear; None when it takes none
    (a Speech2Text2 checkpoint hears the one language it was trained on, and ignores the setting)."""
    return getattr(getattr(model, "tokenizer", None), "language_ids", None)
