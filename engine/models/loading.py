"""Loading a speech model by name: a family's built-in models (the embedded Whisper base), an HF-format
checkpoint directory, or a hub id when the network allows. Every family is reached through the registry in
engine/backend.py; this module only knows which families the engine ships."""

from __future__ import annotations

from pathlib import Path

from ..backend import SpeechBundle, families, family_of
from ..errors import ModelLoadError
from . import s2t2, whisper  # noqa: F401 (the families the engine ships: importing one registers it)
from .checkpoint import hub_snapshot, looks_like_path, read_config
from .common import DeviceName, Quantize, place, resolve_device

DEFAULT_MODEL = whisper.EMBEDDED_MODEL  # embedded in the install: works offline
HUB_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.txt", "*.model"]


def load_model(name: str | None = None, device: DeviceName | str = "auto", quantize: Quantize = "auto") -> SpeechBundle:
    """Load a model by name: None / a family's built-in name ('whisper-base', embedded), a local directory, or a
    hub id."""
    name = name or DEFAULT_MODEL
    dev = resolve_device(device)
    builtin = next((f.builtin[name] for f in families() if name in f.builtin), None)
    bundle: SpeechBundle
    if builtin is not None:
        bundle = builtin()
    else:
        path = Path(name).expanduser()
        if path.exists():
            bundle = load_directory(path)
        elif looks_like_path(name):
            raise ModelLoadError(f"model directory not found: {name}")
        else:
            bundle = load_directory(download_from_hub(name), name=name)
    int8 = quantize == "decoder" or (quantize == "auto" and family_of(bundle).int8_by_default)
    return place(bundle, dev, int8_decoder=int8)


def load_directory(path: Path, name: str | None = None) -> SpeechBundle:
    """An HF-format checkpoint directory; the family comes from its config.json's model_type."""
    cfg = read_config(path)
    model_type = cfg.get("model_type")
    for family in families():
        if model_type in family.model_types:
            bundle: SpeechBundle = family.load_directory(path, cfg, name or str(path))
            return bundle
    supported = ", ".join(repr(t) for t in sorted(t for f in families() for t in f.model_types))
    raise ModelLoadError(f"{path / 'config.json'}: unsupported model_type {model_type!r} (supported: {supported})")


# -- hub ------------------------------------------------------------------------------------------------------
def download_from_hub(repo_id: str) -> Path:
    """A snapshot of `repo_id`, from the local hub cache first, else downloaded; clear error when offline."""
    return hub_snapshot(repo_id, HUB_PATTERNS, "model", lambda why: _offline_message(repo_id, why))


def _offline_message(repo_id: str, why: str) -> str:
    return (
        f"cannot download {repo_id!r} from the Hugging Face hub ({why}). Offline alternatives: "
        f"the embedded model (omit --model, or --model {DEFAULT_MODEL}), or a checkpoint directory on disk "
        "(--model /path/to/dir with config.json, model.safetensors and tokenizer files)"
    )
