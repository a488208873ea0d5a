"""Export stages as declarations, run by one driver.

A derived artifact's stage (``export.fp16``, ``bf16``, ``int8``, ``deepcache``, ``trt``) declares which
artifact it builds from, what must be true before any work (a missing backend exits 4 first), and how it
builds and gates its files in a staging folder; :func:`run_stage` does the rest the same way for each:

1. the source artifact is verified against the manifest (missing: one line naming the command that makes it);
2. the stage's preflight runs (``Stage.preflight``);
3. leftovers of killed builds are removed (:func:`export.artifacts.remove_leftovers`);
4. the stage builds and gates in a fresh staging folder (``Stage.build`` returns a :class:`Built`);
5. its files go live in the declared order (the one a reader looks for last), each renamed into place;
6. the manifest records every artifact it built in one atomic update;
7. one summary line: ``wrote FOLDER/MAIN (SIZE) in S s; ...``.

A gate that fails raises :class:`runtime.errors.GateError` inside step 4: nothing is published and the
staging folder goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.atomic import publish
from runtime.errors import DeployError
from runtime.manifest import ArtifactEntry, Manifest, update_artifact, verify_artifact

from .artifacts import FP16_NAME, ONNX_NAME, remove_leftovers, staging

# The command that makes each artifact a stage can build from (for the one-line refusal when it is missing).
MADE_BY = {ONNX_NAME: "python -m export.onnx --out {folder}", FP16_NAME: "python -m export.fp16 --engines {folder}"}


@dataclass(frozen=True)
class Source:
    """The verified artifact a stage builds from, with its folder and manifest."""

    folder: Path
    path: Path
    manifest: Manifest
    entry: ArtifactEntry


@dataclass
class Built:
    """What a stage built in its staging folder."""

    main: str  # the stage's artifact, named by the summary line
    artifacts: dict[str, ArtifactEntry]  # every artifact to record in the manifest, ``main`` included
    summary: str  # the summary line's rest, after "wrote FOLDER/MAIN (SIZE) in S s; "
    files: list[str] = field(default_factory=list)  # files in the staging folder, in the order they go live
    # (default: the artifacts with ``main`` last); name external data (OpenVINO's weights) here, before its graph


@dataclass(frozen=True)
class Stage:
    """One export stage, declared: ``name`` (its staging folder's), ``source`` (the artifact it builds from),
    ``preflight(source)`` (checks before any work; its result is handed to ``build``), ``build(source, work,
    ready) -> Built``."""

    name: str
    build: Callable[[Source, Path, Any], Built]
    source: str = ONNX_NAME
    preflight: Callable[[Source], Any] | None = None


def verified_source(folder: Path, name: str = ONNX_NAME) -> Source:
    """The artifact ``name`` in ``folder``, checked against its manifest."""
    path = folder / name
    if not path.is_file():
        made_by = MADE_BY.get(name, "the export stage that writes it").format(folder=folder)
        raise DeployError(f"{path} does not exist; run `{made_by}` first")
    manifest, entry = verify_artifact(path)
    return Source(folder, path, manifest, entry)


def run_stage(stage: Stage, folder: Path) -> int:
    """Runs ``stage`` in the engines ``folder`` (steps 1-7 above); returns the CLI's exit status 0."""
    source = verified_source(folder, stage.source)
    ready = stage.preflight(source) if stage.preflight is not None else None
    remove_leftovers(folder)
    started = time.perf_counter()
    with staging(folder, stage.name) as work:
        built = stage.build(source, work, ready)
        order = built.files or [*(n for n in built.artifacts if n != built.main), built.main]
        for name in order:
            publish(work / name, folder / name)
    main = built.artifacts[built.main]
    update_artifact(folder, source.manifest.base(), built.main, main,
                    {name: entry for name, entry in built.artifacts.items() if name != built.main})
    print(f"wrote {folder / built.main} ({main.bytes / 1e6:.1f} MB) in {time.perf_counter() - started:.1f} s; {built.summary}")
    return 0
