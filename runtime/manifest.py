"""The manifest beside built engines: what each artifact is, so the runtime can check it before use.

One ``manifest.json`` per engines directory describes the model (source, config, weights hash),
the scheduler config, the engine I/O declaration and, per artifact file name, its sha256, size,
precision and build facts (opset, parity error, tool versions; TensorRT facts for plans).
export/ writes it (through :func:`update_artifact`); the runtime only reads it.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json
from .errors import ManifestError
from .io_spec import BatchProfile, TimestepDomain, UNetIO
from .jsonio import read_json_object

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1  # the schema version: the layout ArtifactEntry and Manifest read
DECODER_PLAN_NAME = "decoder.plan"  # a latent model's TensorRT decoder, run beside unet.plan (export.trt writes it)


def sha256_file(path: str | Path) -> str:
    """The file's sha256, hashed from a memory map (no copy: 30 % faster than reading in chunks)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return hashlib.sha256(b"").hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return hashlib.sha256(view).hexdigest()


def file_matches(path: Path, digest: str | None) -> bool:
    """Whether ``path`` is a file whose sha256 is ``digest`` (the check for files an artifact needs beside it)."""
    return path.is_file() and sha256_file(path) == digest


_HEX = set("0123456789abcdef")
_ENTRY_FIELDS = ("kind", "precision", "sha256", "bytes", "source", "source_sha256", "external_data", "profile")


@dataclass(frozen=True)
class ArtifactEntry:
    """One built artifact as the manifest records it; checked when read.

    ``kind`` names the backend that runs it (``runtime.runners.BACKENDS``); ``source`` /
    ``source_sha256`` the artifact it was derived from; ``profile`` the batch sizes it accepts (None:
    any); ``build`` what its builder recorded besides (opset, parity or gate figures, tool versions,
    TensorRT facts), kept as written. The JSON layout is flat: ``build``'s keys sit beside the others.
    """

    kind: str
    precision: str
    sha256: str
    bytes: int
    source: str | None = None
    source_sha256: str | None = None
    external_data: dict[str, str] = field(default_factory=dict)
    profile: BatchProfile | None = None
    build: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "precision": self.precision, "sha256": self.sha256, "bytes": self.bytes}
        if self.source is not None:
            out.update(source=self.source, source_sha256=self.source_sha256)
        if self.external_data:
            out["external_data"] = dict(self.external_data)
        if self.profile is not None:
            out["profile"] = self.profile.to_dict()
        return {**self.build, **out}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> ArtifactEntry:
        def bad(what: str) -> ManifestError:
            return ManifestError(f"{where}: {what}; rebuild the engine with `make engine`")

        if not isinstance(raw, dict):
            raise bad("the entry is not an object")
        for key, kind in (("kind", str), ("precision", str), ("sha256", str)):
            if not isinstance(raw.get(key), kind):
                raise bad(f"{key!r} is missing or not a string")
        if len(raw["sha256"]) != 64 or not set(raw["sha256"]) <= _HEX:
            raise bad("'sha256' is not a sha256 hex digest")
        if isinstance(raw.get("bytes"), bool) or not isinstance(raw.get("bytes"), int) or raw["bytes"] < 0:
            raise bad("'bytes' is missing or not a whole number")
        external = raw.get("external_data") or {}
        if not isinstance(external, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in external.items()):
            raise bad("'external_data' is not a map of file names to sha256")
        profile = raw.get("profile")
        if profile is not None:
            try:
                profile = BatchProfile(**profile)
            except (TypeError, ValueError) as exc:
                raise bad(f"'profile' is malformed ({exc})") from None
        return cls(
            kind=raw["kind"],
            precision=raw["precision"],
            sha256=raw["sha256"],
            bytes=raw["bytes"],
            source=raw.get("source"),
            source_sha256=raw.get("source_sha256"),
            external_data=dict(external),
            profile=profile,
            build={k: v for k, v in raw.items() if k not in _ENTRY_FIELDS},
        )


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``, read and checked: format, model, scheduler config, I/O declaration, artifacts."""

    path: Path
    model: dict[str, Any]
    scheduler_config: dict[str, Any]
    io: UNetIO
    artifacts: dict[str, ArtifactEntry]
    conditioning: dict[str, Any] = field(default_factory=dict)  # runtime.conditioning reads it (unconditional: {})
    decoder: dict[str, Any] = field(default_factory=dict)  # a latent model's decoder: artifact, io, source ({}: none)

    @property
    def decoder_io(self) -> UNetIO | None:
        """The latent decoder's I/O (checked when the manifest was read), or None for a pixel-space model."""
        return UNetIO.from_dict(self.decoder["io"], decoder=True) if self.decoder else None

    @property
    def decoder_artifact(self) -> str | None:
        return self.decoder.get("artifact")

    @property
    def timestep_domain(self) -> TimestepDomain:
        """The engine's timestep domain: the declared one, or (manifests written before domains were declared)
        the training steps of the manifest's scheduler config."""
        if self.io.timestep is not None:
            return self.io.timestep
        from .schedulers import SchedulerConfig, scheduler_name_for  # the samplers import the manifest's neighbours

        raw = self.scheduler_config
        return self.io.timestep_domain(SchedulerConfig.from_dict(raw, scheduler_name_for(raw)).num_train_timesteps)

    @property
    def domain_io(self) -> UNetIO:
        """The I/O declaration with :attr:`timestep_domain` filled in."""
        return replace(self.io, timestep=self.timestep_domain)

    def artifact(self, name: str) -> ArtifactEntry:
        try:
            return self.artifacts[name]
        except KeyError:
            raise ManifestError(
                f"{self.path} does not describe {name!r} (it lists: {', '.join(sorted(self.artifacts)) or 'nothing'}); "
                "rebuild the engine with `make engine` or `python -m export.onnx`"
            ) from None

    def base(self) -> dict[str, Any]:
        """The sections every artifact shares (model, scheduler config, I/O, conditioning), for :func:`update_artifact`."""
        base = {"model": self.model, "scheduler_config": self.scheduler_config, "io": self.io.to_dict()}
        for name in ("conditioning", "decoder"):
            if getattr(self, name):
                base[name] = getattr(self, name)
        return base


_REQUIRED = ("format", "model", "scheduler_config", "io", "artifacts")


def manifest_path_for(engine: str | Path) -> Path:
    return Path(engine).parent / MANIFEST_NAME


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    data = read_json_object(
        path,
        missing=lambda: ManifestError(
            f"no manifest at {path}; engines must be used from the folder export wrote them to "
            "(rebuild with `python -m export.onnx --model MODEL --out DIR`)"
        ),
        unreadable=lambda why: ManifestError(f"cannot read manifest {path}: {why}; rebuild the engine"),
    )
    if any(k not in data for k in _REQUIRED):
        raise ManifestError(f"manifest {path} is incomplete (needs {', '.join(_REQUIRED)}); rebuild the engine")
    if data["format"] != FORMAT_VERSION:
        raise ManifestError(
            f"manifest {path} has format {data['format']!r}, this runtime reads format {FORMAT_VERSION}; "
            "rebuild the engine with this version of ddpm-deploy"
        )
    try:
        io = UNetIO.from_dict(data["io"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"manifest {path} has a malformed io section ({exc}); rebuild the engine") from None
    if not isinstance(data["artifacts"], dict) or not isinstance(data["scheduler_config"], dict) \
            or not isinstance(data.get("conditioning", {}), dict):
        raise ManifestError(f"manifest {path} has malformed artifacts, scheduler_config or conditioning; rebuild the engine")
    artifacts = {name: ArtifactEntry.from_dict(raw, f"manifest {path}, artifact {name!r}") for name, raw in data["artifacts"].items()}
    decoder = data.get("decoder", {})
    if decoder:
        try:
            UNetIO.from_dict(decoder["io"], decoder=True)
            if decoder["artifact"] not in artifacts:
                raise ValueError(f"its artifact {decoder['artifact']!r} is not listed")
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest {path} has a malformed decoder section ({exc}); rebuild the engine") from None
    return Manifest(path=path, model=data["model"], scheduler_config=data["scheduler_config"], io=io, artifacts=artifacts,
                    conditioning=data.get("conditioning", {}), decoder=decoder)


def artifact_entry(engine: str | Path) -> tuple[Manifest, ArtifactEntry]:
    """The manifest beside ``engine`` and its entry for it (no hashing)."""
    engine = Path(engine)
    manifest = read_manifest(manifest_path_for(engine))
    return manifest, manifest.artifact(engine.name)


def check_hashes(engine: str | Path, manifest: Manifest, entry: ArtifactEntry) -> None:
    """The engine (and its external weight files) against the sha256 the manifest records."""
    engine = Path(engine)
    actual = sha256_file(engine)
    if actual != entry.sha256:
        raise ManifestError(
            f"{engine} does not match its manifest (sha256 {actual[:12]}... vs {entry.sha256[:12]}... "
            f"in {manifest.path}): the engine or manifest is stale or was replaced; rebuild with `make engine`"
        )
    for name, digest in entry.external_data.items():
        data = engine.parent / name
        if not file_matches(data, digest):
            raise ManifestError(f"{engine}'s weight file {data} is missing or does not match the manifest; rebuild the engine")


def verify_artifact(engine: str | Path) -> tuple[Manifest, ArtifactEntry]:
    """Reads the manifest beside ``engine`` and checks the engine's sha256 against it."""
    manifest, entry = artifact_entry(engine)
    check_hashes(engine, manifest, entry)
    return manifest, entry


def update_artifact(directory: str | Path, base: dict[str, Any], name: str, entry: ArtifactEntry,
                    more: dict[str, ArtifactEntry] | None = None) -> Path:
    """Writes ``directory/manifest.json`` atomically with ``base``'s sections and ``entry`` for ``name`` (and
    the entries of ``more``: artifacts built together, such as a latent model's UNet and decoder).

    Entries of other artifacts are kept only when they were built from the same model and I/O
    declaration, their file is still there, and (for derived artifacts, which name their ``source``)
    the source entry still has the hash they were built from: a rebuilt FP32 model makes the old
    FP16 model and plan stale, and the runtime then refuses them.
    """
    path = Path(directory) / MANIFEST_NAME
    artifacts: dict[str, ArtifactEntry] = {}
    if path.exists():
        try:
            old = read_manifest(path)
        except ManifestError:
            old = None
        if old and old.model == base["model"] and old.io.to_dict() == base["io"] \
                and old.conditioning == base.get("conditioning", {}) and old.decoder == base.get("decoder", {}):
            artifacts = {k: v for k, v in old.artifacts.items() if (Path(directory) / k).exists()}
    artifacts[name] = entry
    artifacts.update(more or {})
    changed = True
    while changed:
        changed = False
        for key, value in list(artifacts.items()):
            source = value.source
            if source and (source not in artifacts or artifacts[source].sha256 != value.source_sha256):
                del artifacts[key]
                changed = True
    data = {"format": FORMAT_VERSION, **base, "artifacts": {k: v.to_dict() for k, v in artifacts.items()}}
    atomic_write_json(path, data)
    return path
