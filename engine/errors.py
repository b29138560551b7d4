"""The engine's exception hierarchy: every error a caller can act on derives from EngineError."""

from __future__ import annotations


class EngineError(Exception):
    """Base class for errors raised by the engine."""


class ConfigError(EngineError):
    """An option or configuration value is invalid."""


class ModelLoadError(EngineError):
    """A model could not be found, downloaded, parsed or mapped onto the network."""


class AudioError(EngineError):
    """Audio could not be decoded, or its samples or sample rate are unusable."""


class StreamStateError(EngineError):
    """A streaming operation was called in a state that does not allow it (e.g. audio after finish())."""
