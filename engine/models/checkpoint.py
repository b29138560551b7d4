"""Reading HF-format checkpoints, the same way for every family (Whisper, wav2vec2 + Speech2Text2, text MT).

config.json and the other JSON files, the weights (model.safetensors, pytorch_model.bin or a sharded index of
either), generation_config.json's precedence, snapshots from the hub cache or the network, and building a module
that receives the checkpoint's tensors without drawing random initial weights first. Every failure is a
ModelLoadError that names the file or field. Nothing here knows a family's names or shapes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn
from torch.nn import init
from torch.overrides import TorchFunctionMode

from ..errors import ModelLoadError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger(__name__)

Lookup = Callable[..., Any]  # get(key, default=None): the first source that sets `key`, else `default`


# -- JSON ----------------------------------------------------------------------------------------------------
Config = TypeVar("Config", bound="DataclassInstance")


def config_from_json(cls: type[Config], raw: Mapping[str, Any]) -> Config:
    """A config dataclass whose fields all have defaults, from a config.json object: each field present under its
    own name is converted as its default is typed (bool, int, float, a tuple of ints; strings and fields
    defaulting to None as given), the others keep their defaults. TypeError / ValueError on a value that does not
    convert."""
    default = cls()
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        value, like = raw[f.name], getattr(default, f.name)
        if isinstance(like, bool):  # before int: a bool is an int
            value = bool(value)
        elif isinstance(like, int | float):
            value = type(like)(value)
        elif isinstance(like, tuple):
            value = tuple(int(x) for x in value)
        values[f.name] = value
    return cls(**values)


def read_json(file: Path) -> dict[str, Any]:
    """A JSON file's object; ModelLoadError naming the file when it is not valid JSON."""
    try:
        obj: dict[str, Any] = json.loads(file.read_text())
        return obj
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{file} is not valid JSON: {e}") from e


def read_config(path: Path, kind: str = "") -> dict[str, Any]:
    """`path`/config.json; `kind` ("MT ") names the directory that was expected in the error."""
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{path} has no config.json: not an HF-format {kind}checkpoint directory")
    return read_json(cfg_path)


def generation_lookup(path: Path, *fallbacks: Mapping[str, Any]) -> Lookup:
    """HF's precedence for generation settings: generation_config.json when present, then each of `fallbacks`
    (config.json, then perhaps a sub-config) in order; a key set to null counts as unset."""
    sources: list[Mapping[str, Any]] = []
    f = path / "generation_config.json"
    if f.is_file():
        sources.append(read_json(f))
    sources += fallbacks

    def get(key: str, default: Any = None) -> Any:
        for s in sources:
            if s.get(key) is not None:
                return s[key]
        return default

    return get


def warn_unapplied(get: Lookup, neutral: Mapping[str, Any], path: Path) -> None:
    """Log each generation option the checkpoint sets away from its neutral value: this engine does not apply it."""
    for key, default in neutral.items():
        value = get(key, default)
        if value != default:
            log.warning("%s: generation option %s=%r is not applied by this engine", path, key, value)


# -- weights -------------------------------------------------------------------------------------------------
def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, pytorch_model.bin (weights_only) or a sharded index of either."""
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = path / index_name
        if index.is_file():
            shards = sorted(set(read_json(index)["weight_map"].values()))
            sd: dict[str, torch.Tensor] = {}
            for shard in shards:
                sd.update(_read_weights_file(path / shard))
            return sd
        if (path / single).is_file():
            return _read_weights_file(path / single)
    raise ModelLoadError(f"{path} has no model.safetensors or pytorch_model.bin")


def _read_weights_file(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not file.is_file():
        raise ModelLoadError(f"weights shard {file} is missing")
    try:
        if file.suffix == ".safetensors":
            return load_file(str(file))
        sd: dict[str, torch.Tensor] = torch.load(str(file), map_location="cpu", weights_only=True)
        return sd
    except Exception as e:
        raise ModelLoadError(f"cannot read weights {file}: {e}") from e


def check_weights(model: nn.Module, sd: Mapping[str, torch.Tensor], path: Path | str) -> None:
    """ModelLoadError unless `sd` has exactly the model's weights, each in the shape the config implies."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing weights {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected weights {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}")
        raise ModelLoadError(f"{path}: the checkpoint does not match config.json: {'; '.join(parts)}")
    for key, shape in expected.items():
        if sd[key].shape != shape:
            raise ModelLoadError(
                f"{path}: weight {key} has shape {tuple(sd[key].shape)}, config.json implies {tuple(shape)}"
            )


# torch.nn's own initialisers: the ones reset_parameters() of Linear, Conv1d, Embedding and LayerNorm call
_INITIALISERS = frozenset(
    {
        init.uniform_,
        init.normal_,
        init.kaiming_uniform_,
        init.kaiming_normal_,
        init.xavier_uniform_,
        init.xavier_normal_,
        init.trunc_normal_,
    }
)


class _SkipInit(TorchFunctionMode):
    """Turns torch.nn.init's random initialisers into no-ops, on this thread only (torch function modes are
    thread-local): nothing process-wide is patched, so other threads and later modules initialise as usual."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Collection[type],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _INITIALISERS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


@contextlib.contextmanager
def no_random_init() -> Iterator[None]:
    """Construct modules without drawing random initial weights (the checkpoint overwrites them anyway).

    Drawing them cost ~0.9 s for Whisper base on 2 cores, almost half of a warm start; the meta device would avoid
    it too, but its first use pulls in ~1 s of lazy imports. The parameters hold uninitialised memory until
    load_state_dict(..., assign=True) replaces them, so every one must come from the checkpoint."""
    with _SkipInit():
        yield


# -- the hub and our cache -----------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Dragoman's own cache (converted checkpoints, benchmark peers): $XDG_CACHE_HOME/dragoman."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dragoman"


def looks_like_path(name: str) -> bool:
    """True for names meant as directories (./x, /x, ~/x, a/b/c); False for hub ids (owner/name)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name and name.count("/") != 1


def hub_snapshot(repo_id: str, patterns: list[str], what: str, offline_message: Callable[[str], str]) -> Path:
    """A snapshot of `repo_id` (`patterns` only) from the local hub cache first, else downloaded; fails at once,
    with `offline_message(why)`, when the hub is unreachable or HF_HUB_OFFLINE is set. `what` ("model", "MT
    model") names the checkpoint in the errors."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelLoadError(
            f"huggingface_hub is not installed; pass a local {what.removesuffix('model')}checkpoint directory instead"
        ) from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass  # not cached: try the network
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelLoadError(offline_message("HF_HUB_OFFLINE is set and it is not in the local hub cache"))
    # huggingface_hub reads its download timeout (HF_HUB_DOWNLOAD_TIMEOUT, 10 s by default) when imported; the
    # metadata request's timeout is passed here, so an unreachable hub fails within seconds
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Path(snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=10))
    except Exception as e:
        kind = type(e).__name__
        if "RepositoryNotFound" in kind or "404" in str(e):
            raise ModelLoadError(f"hub {what} {repo_id!r} does not exist (or is private)") from None
        raise ModelLoadError(offline_message(f"{kind}: {str(e).splitlines()[0][:200]}")) from None
