"""Checkpoints in safetensors plus JSON, written atomically; nothing is ever unpickled.

A training checkpoint is the whole Lightning checkpoint (model, optimizer and
scheduler states, loop progress, callback states such as RNG states and the data
position) split into its tensors — stored as safetensors — and everything else — a
JSON tree in the safetensors header's metadata, in which each tensor appears as
``{"__tensor__": "<key>"}``. One file, so one atomic ``os.replace`` publishes it:
a run killed while saving leaves the previous checkpoint intact.

The JSON tree keeps what JSON alone would lose: tuples (``{"__tuple__": [...]}``),
dicts with non-string keys such as an optimizer's parameter ids
(``{"__dict__": [[key, value], ...]}``), complex tensors (stored as their real view)
and numpy arrays. Any other object is refused with its path in the tree, rather than
pickled.

The final weights of a run are written the same way as ``model.safetensors`` beside
a ``config.json`` that says how to rebuild the model (:func:`load_model`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import CheckpointIO
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from rnnx.train.errors import CheckpointError

FORMAT = "rnnx-checkpoint-1"


def _encode(obj: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, Tensor):
        key = f"t{len(tensors)}"
        t = obj.detach().cpu()
        if t.is_complex():
            tensors[key] = torch.view_as_real(t).clone().contiguous()
            return {"__tensor__": key, "complex": True}
        tensors[key] = t.clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(
            np.ascontiguousarray(obj).astype(obj.dtype.newbyteorder("="))
        )
        return {"__ndarray__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).removeprefix("torch.")}
    if isinstance(obj, tuple | torch.Size):
        return {"__tuple__": [_encode(v, f"{path}[{i}]", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}[{i}]", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{path}.{k}", tensors) for k, v in obj.items()}
        return {
            "__dict__": [
                [_encode(k, f"{path}<key>", tensors), _encode(v, f"{path}[{k!r}]", tensors)]
                for k, v in obj.items()
            ]
        }
    raise TypeError(
        f"checkpoint: cannot store {path or 'the checkpoint'} of type {type(obj).__name__} "
        "without pickle; keep checkpoint contents to tensors, numbers, strings, lists and dicts"
    )


def _decode(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        t = tensors[obj["__tensor__"]]
        return torch.view_as_complex(t) if obj.get("complex") else t
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy()
    if "__dtype__" in obj:
        return getattr(torch, obj["__dtype__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _atomic_save(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write a (Lightning) checkpoint dict to one safetensors file, atomically."""
    tensors: dict[str, Tensor] = {}
    tree = _encode(checkpoint, "", tensors)
    _atomic_save(tensors, Path(path), {"format": FORMAT, "tree": json.dumps(tree)})


def check_safetensors(path: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, after checking that the file is whole.

    Raises :class:`~rnnx.train.errors.CheckpointError` naming the file and what is
    wrong with it: missing, empty, truncated (shorter than its header says) or not a
    safetensors file at all.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint: {p} does not exist")
    if not p.is_file():
        raise CheckpointError(f"checkpoint: {p} is not a file")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"checkpoint: {p} is empty (0 bytes): it was never written completely"
        )
    with open(p, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 0 or n > 100_000_000:
            raise CheckpointError(
                f"checkpoint: {p} is not a safetensors file (no valid header length; "
                f"{size} bytes): it is corrupt or of another format"
            )
        if 8 + n > size:
            raise CheckpointError(
                f"checkpoint: {p} is truncated ({size} bytes; its header alone needs {8 + n})"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CheckpointError(
            f"checkpoint: {p} is not a safetensors file (its header does not parse: {exc}): "
            "it is corrupt or of another format"
        ) from None
    need = 8 + n + max(ends, default=0)
    if need > size:
        raise CheckpointError(
            f"checkpoint: {p} is truncated ({size} bytes; its tensors need {need})"
        )
    return header


def _read(path: str | Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """``(metadata, tensors)`` of a checked safetensors file."""
    check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no iter)
    except Exception as exc:  # safetensors raises its own error types
        msg = " ".join(str(exc).split())
        raise CheckpointError(f"checkpoint: {path} cannot be read ({msg}): it is corrupt") from exc
    return meta, tensors


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read what :func:`save_checkpoint` wrote (no pickle involved)."""
    meta, tensors = _read(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint: {path} is not an rnnx training checkpoint (format "
            f"{meta.get('format')!r}, expected {FORMAT!r})"
        )
    try:
        return _decode(json.loads(meta["tree"]), tensors)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint: {path} has a damaged training state ({type(exc).__name__}: {exc})"
        ) from None


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict | None = None) -> None:
    """``model.state_dict()`` as safetensors (atomically); ``metadata`` as JSON in the header."""
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        tensors[k] = (torch.view_as_real(v) if v.is_complex() else v).clone().contiguous()
    meta = {"format": "rnnx-weights-1"}
    if metadata:
        meta["config"] = json.dumps(metadata)
    _atomic_save(tensors, Path(path), meta)


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file (checked first: see :func:`check_safetensors`)."""
    return _read(path)[1]


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class SafetensorsCheckpointIO(CheckpointIO):
    """Lightning ``CheckpointIO`` plugin: every checkpoint Lightning writes or reads
    goes through :func:`save_checkpoint` / :func:`load_checkpoint`."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_checkpoint(path)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)
