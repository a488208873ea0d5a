"""The manifest beside built engines: what each artifact is, so the runtime can check it before use.

One ``manifest.json`` per engines directory describes the model (source, config, weights hash),
the scheduler config, the engine I/O declaration and, per artifact file name, its sha256, size,
precision and build facts (opset, parity error, tool versions; TensorRT facts for plans).
export/ writes it (through :func:`update_artifact`); the runtime only reads it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json
from .errors import ManifestError
from .io_spec import UNetIO

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    path: Path
    data: dict[str, Any]

    @property
    def io(self) -> UNetIO:
        return UNetIO.from_dict(self.data["io"])

    @property
    def scheduler_config(self) -> dict[str, Any]:
        return self.data["scheduler_config"]

    def artifact(self, name: str) -> dict[str, Any]:
        try:
            return self.data["artifacts"][name]
        except KeyError:
            raise ManifestError(
                f"{self.path} does not describe {name!r} (it lists: {', '.join(sorted(self.data['artifacts'])) or 'nothing'}); "
                "rebuild the engine with `make engine` or `python -m export.onnx`"
            ) from None


_REQUIRED = ("format", "model", "scheduler_config", "io", "artifacts")


def manifest_path_for(engine: str | Path) -> Path:
    return Path(engine).parent / MANIFEST_NAME


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(
            f"no manifest at {path}; engines must be used from the folder export wrote them to "
            "(rebuild with `python -m export.onnx --model MODEL --out DIR`)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}; rebuild the engine") from None
    if not isinstance(data, dict) or any(k not in data for k in _REQUIRED):
        raise ManifestError(f"manifest {path} is incomplete (needs {', '.join(_REQUIRED)}); rebuild the engine")
    if data["format"] != FORMAT_VERSION:
        raise ManifestError(
            f"manifest {path} has format {data['format']!r}, this runtime reads format {FORMAT_VERSION}; "
            "rebuild the engine with this version of ddpm-deploy"
        )
    try:
        UNetIO.from_dict(data["io"])
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"manifest {path} has a malformed io section ({exc}); rebuild the engine") from None
    return Manifest(path=path, data=data)


def artifact_entry(engine: str | Path) -> tuple[Manifest, dict[str, Any]]:
    """The manifest beside ``engine`` and its entry for it (no hashing)."""
    engine = Path(engine)
    manifest = read_manifest(manifest_path_for(engine))
    return manifest, manifest.artifact(engine.name)


def check_hashes(engine: str | Path, manifest: Manifest, entry: dict[str, Any]) -> None:
    """The engine (and its external weight files) against the sha256 the manifest records."""
    engine = Path(engine)
    actual = sha256_file(engine)
    if actual != entry.get("sha256"):
        raise ManifestError(
            f"{engine} does not match its manifest (sha256 {actual[:12]}... vs {str(entry.get('sha256'))[:12]}... "
            f"in {manifest.path}): the engine or manifest is stale or was replaced; rebuild with `make engine`"
        )
    for name, digest in entry.get("external_data", {}).items():
        data = engine.parent / name
        if not data.is_file() or sha256_file(data) != digest:
            raise ManifestError(f"{engine}'s weight file {data} is missing or does not match the manifest; rebuild the engine")


def verify_artifact(engine: str | Path) -> tuple[Manifest, dict[str, Any]]:
    """Reads the manifest beside ``engine`` and checks the engine's sha256 against it."""
    manifest, entry = artifact_entry(engine)
    check_hashes(engine, manifest, entry)
    return manifest, entry


def update_artifact(directory: str | Path, base: dict[str, Any], name: str, entry: dict[str, Any]) -> Path:
    """Writes ``directory/manifest.json`` atomically with ``base``'s sections and ``entry`` for ``name``.

    Entries of other artifacts are kept only when they were built from the same model and I/O
    declaration, their file is still there, and (for derived artifacts, which name their ``source``)
    the source entry still has the hash they were built from: a rebuilt FP32 model makes the old
    FP16 model and plan stale, and the runtime then refuses them.
    """
    path = Path(directory) / MANIFEST_NAME
    artifacts: dict[str, Any] = {}
    if path.exists():
        try:
            old = read_manifest(path).data
        except ManifestError:
            old = None
        if old and old["model"] == base["model"] and old["io"] == base["io"]:
            artifacts = {k: v for k, v in old["artifacts"].items() if (Path(directory) / k).exists()}
    artifacts[name] = entry
    changed = True
    while changed:
        changed = False
        for key, value in list(artifacts.items()):
            source = value.get("source")
            if source and (source not in artifacts or artifacts[source]["sha256"] != value.get("source_sha256")):
                del artifacts[key]
                changed = True
    data = {"format": FORMAT_VERSION, **base, "artifacts": artifacts}
    atomic_write_json(path, data)
    return path
