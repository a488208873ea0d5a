"""A per-machine cache of optimized engines, so that a new process is ready in a fraction of a second.

ONNX Runtime re-optimizes the graph every time it opens a model (constant folding, fusions, and
layouts chosen for this CPU's vector width); the optimized graph can be saved and reopened with
optimizations off, at the same step time. It holds CPU-specific layouts, so it cannot ship as an
artifact: it is cached on the machine that made it.

An entry is a folder ``<cache dir>/<backend>/<key>/`` holding the optimized model and ``entry.json``.
The key is the sha256 of everything that shapes the optimized graph: the engine's sha256, the
backend and its version, the session options that change the graph, and the CPU (model and flags).
``entry.json`` repeats those fields and records the sha256 of every 32 MiB chunk of every file in the
entry (hashed on all cores); an entry is used only when its fields equal the key's and its files hash
to what it records. A stale, corrupt or
foreign entry is ignored with a log line and rebuilt; never trusted. Entries are written into a
temporary folder and renamed into place, so two processes creating the same entry both succeed and
leave one valid entry. A cache location that cannot be written (read-only, full) falls back to the
uncached path with one warning per process.

Bound: at most :data:`MAX_ENTRIES` entries per backend; when a new one is added the least recently
used beyond that are removed (use touches ``entry.json``).

Location: ``--cache-dir`` / ``cache_dir=``; else ``$DDPM_DEPLOY_CACHE_DIR``; else
``$XDG_CACHE_HOME/ddpm-deploy`` (``~/.cache/ddpm-deploy``). ``--no-cache`` / ``cache_dir=None`` (or
``DDPM_DEPLOY_CACHE_DIR=off``) turns it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import platform
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar


from .errors import first_line

log = logging.getLogger(__name__)
T = TypeVar("T")

ENV = "DDPM_DEPLOY_CACHE_DIR"
CACHE_FORMAT = 1
MAX_ENTRIES = 4
ENTRY_FILE = "entry.json"
AUTO = "auto"

_warned_lock = threading.Lock()
_warned: set[str] = set()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ddpm-deploy"


def resolve_cache_dir(cache_dir: str | Path | None = AUTO) -> Path | None:
    """``cache_dir`` as given; ``"auto"``: the environment variable, else the per-user default; None: off."""
    if cache_dir is None:
        return None
    if str(cache_dir) != AUTO:
        return Path(cache_dir)
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    return default_cache_dir()


def cpu_identity() -> dict[str, str]:
    """The CPU's model name and a digest of its feature flags (what a kernel's layout choice depends on)."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.processor() or platform.machine()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return {"model": model, "flags_sha256": hashlib.sha256(flags.encode()).hexdigest()}


CHUNK = 32 << 20  # entry files are hashed in chunks, in parallel: verification is on the cold-start path


def chunk_hashes(path: Path) -> list[str]:
    """The sha256 of each CHUNK-sized piece of the file, computed on all cores (hashlib releases the GIL)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return [hashlib.sha256(b"").hexdigest()]
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                pieces = [view[i : i + CHUNK] for i in range(0, size, CHUNK)]
                with ThreadPoolExecutor(max_workers=min(len(pieces), os.cpu_count() or 1)) as pool:
                    return list(pool.map(lambda piece: hashlib.sha256(piece).hexdigest(), pieces))
            finally:
                pieces = None
                view.release()


def file_stat(path: Path) -> dict[str, int]:
    """What a file hashed once and unchanged since still has: its size and modification time, and (what no
    copy or ``touch -r`` can set back) its status-change time, inode and device. A file replaced or
    rewritten since, even with its size and mtime restored, differs in one of them."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino, "dev": st.st_dev}


def _warn_once(key: str, message: str, *args: Any) -> None:
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(message, *args)


@dataclass(frozen=True)
class CacheEntry:
    """Where one key's entry lives, and what its entry.json must say."""

    folder: Path
    fields: dict[str, Any]

    @property
    def record(self) -> Path:
        return self.folder / ENTRY_FILE

    def files_ok(self, recorded: dict[str, Any]) -> bool:
        files = recorded.get("files")
        if not isinstance(files, dict) or not files:
            return False
        try:
            return all(chunk_hashes(self.folder / name) == digests for name, digests in files.items())
        except (OSError, ValueError):
            return False


class EngineCache:
    """One backend's entries under a cache directory."""

    def __init__(self, root: Path, backend: str):
        self.root = Path(root)
        self.backend = backend
        self.dir = self.root / backend

    def entry(self, fields: dict[str, Any]) -> CacheEntry:
        fields = {"format": CACHE_FORMAT, "backend": self.backend, **fields}
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
        return CacheEntry(self.dir / key, fields)

    def lookup(self, entry: CacheEntry) -> dict[str, Any] | None:
        """The entry's record if it exists and its fields match (files are checked by :meth:`verify`)."""
        if not entry.record.is_file():
            return None
        try:
            recorded = json.loads(entry.record.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.info("ignoring cache entry %s: unreadable record (%s); rebuilding", entry.folder, exc)
            return None
        if not isinstance(recorded, dict) or recorded.get("fields") != entry.fields:
            log.info("ignoring cache entry %s: made for another engine, backend version or CPU; rebuilding", entry.folder)
            return None
        return recorded

    def verify(self, entry: CacheEntry, recorded: dict[str, Any]) -> bool:
        if entry.files_ok(recorded):
            try:
                os.utime(entry.record)  # least recently used is evicted first
            except OSError:
                pass
            return True
        log.info("ignoring cache entry %s: its files do not match their recorded sha256; rebuilding", entry.folder)
        return False

    def staging(self) -> Path | None:
        """A fresh temporary folder inside the cache, or None (with one warning) where it cannot be written."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.dir))
        except OSError as exc:
            _warn_once(str(self.root), "engine cache %s cannot be written (%s); loading without it", self.root, exc.strerror or exc)
            return None

    def publish(self, entry: CacheEntry, staged: Path, extra: dict[str, Any] | None = None) -> None:
        """Records the staged files (and ``extra``) and renames the folder into place; a concurrent
        winner's valid entry is kept."""
        try:
            files = {p.name: chunk_hashes(p) for p in sorted(staged.iterdir())}
            record = {**(extra or {}), "fields": entry.fields, "files": files}
            with open(staged / ENTRY_FILE, "w") as f:
                json.dump(record, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            if entry.folder.exists():
                recorded = self.lookup(entry)
                if recorded is not None and entry.files_ok(recorded):
                    return  # another process published a valid entry first: keep it
                # a stale or corrupt entry: move it aside, then replace it
                trash = Path(tempfile.mkdtemp(prefix=".old-", dir=self.dir))
                try:
                    os.replace(entry.folder, trash / "entry")
                except OSError:
                    pass
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(staged, entry.folder)
        except OSError as exc:
            if entry.folder.is_dir() and (entry.folder / ENTRY_FILE).is_file():
                log.debug("cache entry %s was created by another process first", entry.folder)
            else:
                _warn_once(str(self.root), "engine cache %s cannot be written (%s); loading without it", self.root, exc.strerror or exc)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        self.evict()

    def evict(self) -> None:
        try:
            entries = [p for p in self.dir.iterdir() if p.is_dir() and (p / ENTRY_FILE).is_file()]
            entries.sort(key=lambda p: (p / ENTRY_FILE).stat().st_mtime, reverse=True)
        except OSError:
            return
        for old in entries[MAX_ENTRIES:]:
            log.debug("engine cache: removing least recently used entry %s", old)
            shutil.rmtree(old, ignore_errors=True)
        for leftover in self.dir.glob(".old-*"):
            shutil.rmtree(leftover, ignore_errors=True)


class RunnerCache:
    """One runner's cache entry, and the one way every backend goes through it (:meth:`load_or_build`):
    trusted? → verify (while the backend loads) → hit, else build into a staging folder → publish once
    the engine file has been verified (:meth:`commit`; never before: a cache must not hold what was built
    from a stale engine). ``status``: off, miss, hit or rebuilt (an entry was found, not trusted).
    ``engine_file_verified``: a hit on an entry made from this very engine file (the same :func:`file_stat` as
    when it was hashed), which then need not be hashed again."""

    def __init__(self, root: Path, backend: str, fields: dict[str, Any], engine_path: Path):
        self.cache = EngineCache(root, backend)
        self.entry = self.cache.entry(fields)
        self.engine_path = Path(engine_path)
        self.status = "off"
        self.staged: Path | None = None
        self.engine_file_verified = False

    def load_or_build(self, load: Callable[[Path], T], build: Callable[[Path | None], T]) -> T:
        """``load(entry folder)`` from a verified entry (its files are hashed while it loads), else
        ``build(staging folder)``: the backend builds and writes what the entry should hold into the folder
        (None: the cache cannot be written, build without saving). A ``load`` that raises is logged and
        the entry rebuilt, like a corrupt one."""
        recorded = self.trusted()
        if recorded is not None:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-sha256") as pool:
                verified = pool.submit(self.verify, recorded)
                try:
                    loaded = load(self.entry.folder)
                except Exception as exc:  # backends raise their own exception types
                    log.info("ignoring cache entry %s: the backend cannot load it (%s); rebuilding", self.entry.folder,
                             first_line(exc))
                    loaded = None
                if verified.result() and loaded is not None:
                    self.hit(recorded)
                    return loaded
        staged = self.stage()
        if staged is None:
            return build(None)
        try:
            return build(staged)
        except Exception as exc:  # writing the entry failed (a full disk), or the build itself: try without the cache
            self.discard()
            self.status = "off"
            built = build(None)  # a build that fails on its own raises its own error here
            _warn_once(str(self.cache.root), "engine cache %s cannot be written (%s); loading without it", self.cache.root,
                       first_line(exc))
            return built

    def trusted(self) -> dict[str, Any] | None:
        """The entry's record when its fields match (its files are checked with :meth:`verify`)."""
        return self.cache.lookup(self.entry)

    def trusts_engine_file(self) -> bool:
        """Whether the entry was made from this very engine file (the same file_stat as when hashed)."""
        recorded = self.trusted()
        return recorded is not None and recorded.get("source_stat") == file_stat(self.engine_path)

    def verify(self, recorded: dict[str, Any]) -> bool:
        return self.cache.verify(self.entry, recorded)

    def hit(self, recorded: dict[str, Any]) -> None:
        """Marks a hit, and whether the entry vouches for the engine file too."""
        self.status = "hit"
        self.engine_file_verified = recorded.get("source_stat") == file_stat(self.engine_path)

    def stage(self) -> Path | None:
        """A folder for the runner to build into (None, status off: the cache cannot be written)."""
        self.status = "rebuilt" if self.entry.folder.exists() else "miss"
        self.staged = self.cache.staging()
        if self.staged is None:
            self.status = "off"
        return self.staged

    def commit(self) -> None:
        if self.staged is not None:
            self.cache.publish(self.entry, self.staged, {"source_stat": file_stat(self.engine_path)})
            self.staged = None

    def discard(self) -> None:
        if self.staged is not None:
            shutil.rmtree(self.staged, ignore_errors=True)
            self.staged = None
