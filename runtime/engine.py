"""Opening an engine file: existence, manifest and hash checks, then the runner for its format."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from .errors import EngineError
from .reuse import ROLES, CacheGraph
from .manifest import ArtifactEntry, Manifest, artifact_entry, check_hashes
from .runners import Runner, RunnerOptions, runner_class

ENGINE_SUFFIXES = (".onnx", ".plan", ".xml")


def open_engine(
    path: str | Path, device: str = "auto", threads: int | None = None, cache_dir: Path | None = None, role: str = "unet",
    like: ArtifactEntry | None = None,
) -> tuple[Runner, Manifest, ArtifactEntry]:
    """Checks ``path`` against its manifest and returns its active runner, the manifest and the
    artifact's entry. ``cache_dir``: the per-machine cache of optimized engines (None: off). ``role``:
    "unet", "decoder" for a latent model's decoder (its own I/O declaration, from the manifest), or "full" /
    "shallow" for a feature-reuse graph (:mod:`runtime.reuse`). ``like``: run the artifact with this
    entry's backend and precision instead of its own (OpenVINO running the ONNX feature-reuse graphs).

    The sha256 of the engine is computed on a helper thread while the backend loads it (both release
    the GIL), which takes the hash off the cold-start path; the runner is handed out only once the hash
    matches, and is released again when it does not.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not an engine file" if path.is_dir() else "does not exist"
        raise EngineError(f"engine {path} {what}; build one with `make engine` (or `python -m export.onnx`) and pass its path")
    if path.suffix not in ENGINE_SUFFIXES:
        raise EngineError(f"engine {path} must end in {' or '.join(ENGINE_SUFFIXES)} (an ONNX model, a TensorRT plan or an OpenVINO model)")
    manifest, entry = artifact_entry(path)
    if role in ROLES:
        graph = CacheGraph.from_entry(entry, f"manifest {manifest.path}, artifact {path.name!r}")
        io = manifest.io.with_feature(role, graph.feature_shape)
    else:
        io = manifest.io if role == "unet" else manifest.decoder_io
    run_as = entry if like is None else replace(entry, kind=like.kind, precision=like.precision)
    backend = runner_class(run_as.kind)
    runner = backend(path, io, run_as, RunnerOptions(device=device, threads=threads, cache_dir=cache_dir))
    cache = runner.cache
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as pool:
        # A cache entry made from this very file (the same size, mtime, ctime and inode as when it was hashed) stands in
        # for the file; should it not be used after all, the file is hashed below.
        trusted = cache is not None and cache.trusts_engine_file()
        hashed = None if trusted else pool.submit(check_hashes, path, manifest, entry)
        try:
            runner.activate()
        except BaseException:
            if hashed is not None:
                hashed.result()  # a stale engine is the better explanation of a load failure
            raise
        try:
            if hashed is not None:
                hashed.result()
            elif not cache.engine_file_verified:
                check_hashes(path, manifest, entry)
            if cache is not None:
                cache.commit()  # the engine file matches its manifest: what was built from it may be cached
        except BaseException:
            runner.deactivate()
            raise
    return runner, manifest, entry
