"""``text:PATH`` — language modelling on your own text: one file, or a folder of ``.txt`` files.

Tokens are characters (default: the vocabulary is the sorted set of characters of all
the files) or bytes (``--task-arg vocab=bytes``: 256 tokens, the UTF-8 bytes, any file
works). The vocabulary is saved with the run (``config.json``), so ``rnnx generate``
encodes prompts and decodes samples with it and ``rnnx eval --task text:OTHER`` encodes
another file the way the model was trained.

Held-out split (no text is in two splits):

* **several files** (3 or more): by **whole files**: the files, in an order drawn with
  ``seed``, go to the test split until it holds ``test_fraction`` of the characters
  (at least one file), then to validation until it holds ``val_fraction`` (at least
  one), and the rest train (at least one);
* **one or two files**: by **contiguous blocks** of the concatenated text: the first
  ``1 - val_fraction - test_fraction`` train, the next ``val_fraction`` validate, the
  last ``test_fraction`` test.

Each split is its texts joined by a blank line and cut into non-overlapping windows of
``seq_len + 1`` tokens (inputs: the first ``seq_len``, targets: the next token at each
step), as for ``shakespeare``; every window starts from an empty state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rnnx.data.base import TaskData, register_task
from rnnx.data.shakespeare import _windows


class Tokenizer:
    """Characters (of a fixed vocabulary) or UTF-8 bytes <-> token ids."""

    def __init__(self, kind: str, chars: str = "") -> None:
        if kind not in ("chars", "bytes"):
            raise ValueError(f"vocab: expected 'chars' or 'bytes', got {kind!r}")
        if kind == "chars" and not chars:
            raise ValueError("vocab: a character vocabulary needs its characters")
        self.kind, self.chars = kind, chars
        self._index = {c: i for i, c in enumerate(chars)}

    @property
    def size(self) -> int:
        return 256 if self.kind == "bytes" else len(self.chars)

    def encode(self, text: str, *, what: str = "text") -> list[int]:
        """Token ids of ``text``; characters outside the vocabulary are an error naming them."""
        if self.kind == "bytes":
            return list(text.encode("utf-8"))
        unknown = sorted(set(text) - set(self._index))
        if unknown:
            shown = "".join(unknown[:20])
            raise ValueError(
                f"{what}: {len(unknown)} character(s) not in the model's vocabulary of "
                f"{len(self.chars)}: {shown!r}"
            )
        return [self._index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        if self.kind == "bytes":
            return bytes(ids).decode("utf-8", errors="replace")
        return "".join(self.chars[i] for i in ids)

    def task_kwargs(self) -> dict[str, Any]:
        """The ``text`` task arguments that reproduce this vocabulary."""
        if self.kind == "bytes":
            return {"vocab": "bytes"}
        return {"vocab": "chars", "chars": self.chars}

    @classmethod
    def from_spec(cls, task: dict[str, Any]) -> Tokenizer | None:
        """From the ``task`` entry of a run's ``config.json`` (None: not a text model)."""
        if task.get("tokenizer") == "bytes":
            return cls("bytes")
        if task.get("vocab"):
            return cls("chars", task["vocab"])
        return None


def text_files(path: str | Path) -> list[Path]:
    """The file ``path``, or the ``.txt`` files under the folder ``path`` (sorted)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"task text:{path}: no such file or folder")
    if p.is_file():
        return [p]
    files = sorted(f for f in p.rglob("*.txt") if f.is_file())
    if not files:
        raise ValueError(f"task text:{path}: the folder holds no .txt files")
    return files


def _read(f: Path, vocab: str, encoding: str) -> str | bytes:
    data = f.read_bytes()
    if vocab == "bytes":
        return data
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"task text: {f} is not {encoding} text (byte {data[exc.start]:#04x} at offset "
            f"{exc.start}); use --task-arg vocab=bytes, or --task-arg encoding=latin-1"
        ) from None
    except LookupError:
        raise ValueError(f"task text: encoding: no codec named {encoding!r}") from None


def _split_files(sizes: list[int], val_fraction: float, test_fraction: float, seed: int):
    """Indices of the files in (train, val, test), by whole files (module docstring)."""
    order = torch.randperm(len(sizes), generator=torch.Generator().manual_seed(seed)).tolist()
    total = sum(sizes)
    held: dict[str, list[int]] = {"test": [], "val": []}
    for split, frac in (("test", test_fraction), ("val", val_fraction)):
        while order and len(order) > 1 + (split == "test"):
            if held[split] and sum(sizes[i] for i in held[split]) >= frac * total:
                break
            held[split].append(order.pop(0))
    return sorted(order), sorted(held["val"]), sorted(held["test"])


@register_task(
    "text",
    description="your own text: a file or a folder of .txt files (character or byte LM)",
    takes_path=True,
)
def text(
    path: str,
    seed: int = 0,
    *,
    vocab: str = "chars",
    chars: str | None = None,
    seq_len: int = 128,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    encoding: str = "utf-8",
) -> TaskData:
    """Next-token prediction on the text at ``path`` (module docstring).

    ``vocab``: ``"chars"`` or ``"bytes"``; ``chars`` fixes the character vocabulary
    (``rnnx eval`` passes a trained model's); ``seed`` draws the file split.
    """
    if vocab not in ("chars", "bytes"):
        raise ValueError(f"task text: vocab: expected 'chars' or 'bytes', got {vocab!r}")
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        raise ValueError(f"task text: seq_len: expected an integer >= 1, got {seq_len!r}")
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(frac, int | float) or not 0 < frac < 1:
            raise ValueError(f"task text: {name}: expected a number in (0, 1), got {frac!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError("task text: val_fraction + test_fraction: expected < 1")
    files = text_files(path)
    texts = [_read(f, vocab, encoding) for f in files]
    if vocab == "bytes":
        tok = Tokenizer("bytes")
    else:
        used = "".join(sorted(set("".join(texts))))  # type: ignore[arg-type]
        if chars is not None:
            tok = Tokenizer("chars", chars)
            tok.encode(used, what=f"task text:{path}")  # every character must be known
        else:
            if not used:
                raise ValueError(f"task text:{path}: the text is empty")
            tok = Tokenizer("chars", used)
    sep: Any = b"\n\n" if vocab == "bytes" else "\n\n"

    def encode(parts: list) -> torch.Tensor:
        joined = sep.join(parts)
        ids = list(joined) if vocab == "bytes" else tok.encode(joined)
        return torch.tensor(ids, dtype=torch.long)

    if len(files) >= 3:
        idx = _split_files([len(t) for t in texts], val_fraction, test_fraction, seed)
        ids = [encode([texts[i] for i in part]) for part in idx]
        policy = (
            f"by whole files (seed {seed}): {len(idx[0])} train, {len(idx[1])} val, "
            f"{len(idx[2])} test"
        )
        split_files = {
            k: [str(files[i]) for i in part] for k, part in zip(("train", "val", "test"), idx)
        }
    else:
        whole = encode(texts)
        n = len(whole)
        a, b = int(n * (1 - val_fraction - test_fraction)), int(n * (1 - test_fraction))
        ids = [whole[:a], whole[a:b], whole[b:]]
        policy = (
            f"by contiguous blocks: first {1 - val_fraction - test_fraction:.0%} train, "
            f"next {val_fraction:.0%} val, last {test_fraction:.0%} test"
        )
        split_files = {}
    for split, part in zip(("train", "val", "test"), ids):
        if len(part) < seq_len + 1:
            raise ValueError(
                f"task text:{path}: the {split} split has {len(part)} tokens, fewer than "
                f"seq_len + 1 = {seq_len + 1}; lower --task-arg seq_len or give more text"
            )
    unit = "bytes" if vocab == "bytes" else "characters"
    root = Path(path).expanduser().absolute()
    return TaskData(
        name=f"text:{root}",
        kind="lm",
        train=_windows(ids[0], seq_len),
        val=_windows(ids[1], seq_len),
        test=_windows(ids[2], seq_len),
        vocab_size=tok.size,
        n_classes=tok.size,
        info={
            "source": str(root),
            "files": len(files),
            "split": policy + f"; non-overlapping windows of {seq_len}",
            **({"split_files": split_files} if split_files else {}),
            "vocab": tok.chars if vocab == "chars" else None,
            "tokenizer": vocab,
            "inferred": {
                "kind": "lm",
                "tokens": unit,
                "vocabulary": tok.size,
                "files": len(files),
                unit: sum(len(t) for t in ids),
                "split": "by file" if len(files) >= 3 else "by block",
            },
        },
    )
