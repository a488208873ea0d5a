"""The per-machine engine cache (runtime.cache): used on the second load, bit-equal outputs, damaged or
foreign entries rebuilt, concurrent creation, bounded size, unwritable locations."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from runtime import Pipeline
from runtime import cache as cache_mod
from runtime.cache import ENTRY_FILE, MAX_ENTRIES, EngineCache
from tests.conftest import ROOT


def load(engine, cache_dir):
    with Pipeline.load(engine, device="cpu", cache_dir=cache_dir) as pipe:
        return pipe.runner.cache_status, pipe(steps=3, seed=1)


def entries(cache_dir):
    folder = cache_dir / "onnxruntime"
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []


def test_second_load_uses_the_cache_with_bit_equal_outputs(tiny_engine, tmp_path):
    """How the test knows: cache_status is "hit" only when the session was made from the cached optimized
    graph (with ONNX Runtime's optimizations off) after the entry's files matched their sha256."""
    status = [load(tiny_engine, None), load(tiny_engine, tmp_path), load(tiny_engine, tmp_path)]
    assert [s for s, _ in status] == ["off", "miss", "hit"]
    for _, images in status[1:]:
        np.testing.assert_array_equal(images, status[0][1])
    (entry,) = entries(tmp_path)
    assert sorted(p.name for p in entry.iterdir()) == [ENTRY_FILE, "model.onnx", "model.onnx.data"]


def damage(entry, how):
    record = entry / ENTRY_FILE
    data = json.loads(record.read_text())
    target = entry / ("model.onnx.data" if "weights" in how else "model.onnx")
    if how.startswith("truncated"):
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif how.startswith("bit-flipped"):
        raw = bytearray(target.read_bytes())
        raw[len(raw) // 2] ^= 0x10
        target.write_bytes(bytes(raw))
    elif how == "other CPU":
        data["fields"]["cpu"]["model"] = "another CPU"
        record.write_text(json.dumps(data))
    elif how == "other version":
        data["fields"]["backend_version"] = "0.0.1"
        record.write_text(json.dumps(data))
    else:  # unreadable record
        record.write_text("{not json")


@pytest.mark.parametrize("how", ["truncated graph", "truncated weights", "bit-flipped graph", "bit-flipped weights",
                                 "other CPU", "other version", "unreadable record"])
def test_damaged_or_foreign_entry_is_ignored_and_rebuilt(tiny_engine, tmp_path, how, caplog):
    _, reference = load(tiny_engine, tmp_path)
    (entry,) = entries(tmp_path)
    damage(entry, how)
    with caplog.at_level(logging.INFO, logger="runtime"):
        status, images = load(tiny_engine, tmp_path)
    assert status == "rebuilt" and "ignoring cache entry" in caplog.text
    np.testing.assert_array_equal(images, reference)
    assert load(tiny_engine, tmp_path)[0] == "hit" and len(entries(tmp_path)) == 1


def test_two_processes_creating_the_same_entry_both_succeed(tiny_engine, tmp_path):
    code = (f"from runtime import Pipeline; p = Pipeline.load({str(tiny_engine)!r}, device='cpu', cache_dir={str(tmp_path)!r}); "
            "print(p.runner.cache_status)")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert {out.strip() for out, _ in results} <= {"miss", "hit"}
    assert len(entries(tmp_path)) == 1
    assert not [p for p in (tmp_path / "onnxruntime").iterdir() if p.name.startswith(".")]  # no leftovers
    assert load(tiny_engine, tmp_path)[0] == "hit"


def test_cache_keeps_at_most_max_entries(tmp_path):
    cache = EngineCache(tmp_path, "test")
    made = []
    for i in range(MAX_ENTRIES + 2):
        entry = cache.entry({"n": i})
        staged = cache.staging()
        (staged / "blob").write_bytes(bytes([i]) * 10)
        cache.publish(entry, staged)
        made.append(entry)
    kept = {p.name for p in cache.dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert len(kept) == MAX_ENTRIES and made[-1].folder.name in kept


def test_recently_used_entry_survives_eviction(tmp_path):
    import os
    import time

    cache = EngineCache(tmp_path, "test")
    made = []
    for i in range(MAX_ENTRIES):
        entry = cache.entry({"n": i})
        staged = cache.staging()
        (staged / "blob").write_bytes(bytes([i]))
        cache.publish(entry, staged)
        os.utime(entry.record, (time.time() - 100 + i, time.time() - 100 + i))
        made.append(entry)
    assert cache.verify(made[0], cache.lookup(made[0]))  # use the oldest: it becomes the newest
    extra = cache.entry({"n": "new"})
    staged = cache.staging()
    (staged / "blob").write_bytes(b"x")
    cache.publish(extra, staged)
    kept = {p.name for p in cache.dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert made[0].folder.name in kept and made[1].folder.name not in kept and len(kept) == MAX_ENTRIES


def test_unwritable_location_falls_back_with_one_warning(tiny_engine, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(cache_mod, "_warned", set())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="runtime"):
        first = load(tiny_engine, blocker / "cache")
        second = load(tiny_engine, blocker / "cache")
    assert first[0] == second[0] == "off"
    np.testing.assert_array_equal(first[1], load(tiny_engine, None)[1])
    assert caplog.text.count("cannot be written") == 1


def test_cache_location_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DDPM_DEPLOY_CACHE_DIR", str(tmp_path))
    assert cache_mod.resolve_cache_dir() == tmp_path
    monkeypatch.setenv("DDPM_DEPLOY_CACHE_DIR", "off")
    assert cache_mod.resolve_cache_dir() is None
    monkeypatch.delenv("DDPM_DEPLOY_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_mod.resolve_cache_dir() == tmp_path / "ddpm-deploy"
    assert cache_mod.resolve_cache_dir(None) is None and cache_mod.resolve_cache_dir(tmp_path / "x") == tmp_path / "x"


def test_a_replaced_engine_file_is_hashed_and_refused_despite_the_cache(tiny_engine, tmp_path):
    """On a cache hit the engine file is not re-hashed while its size and mtime are those it had when
    hashed; a file changed since is hashed again, and a stale one refused as without the cache."""
    import shutil

    from runtime.errors import ManifestError

    folder = tmp_path / "engines"
    shutil.copytree(tiny_engine.parent, folder)
    engine = folder / "unet.onnx"
    assert load(engine, tmp_path / "cache")[0] == "miss"
    with Pipeline.load(engine, device="cpu", cache_dir=tmp_path / "cache") as pipe:
        assert pipe.runner.cache_status == "hit" and pipe.runner.cache.engine_file_verified
    raw = bytearray(engine.read_bytes())
    raw[-1] ^= 0x01
    engine.write_bytes(bytes(raw))
    with pytest.raises(ManifestError, match="does not match its manifest"):
        Pipeline.load(engine, device="cpu", cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("how", ["rewritten in place", "replaced by a copy"])
def test_a_replaced_engine_with_size_and_mtime_restored_is_still_hashed_and_refused(tiny_engine, tmp_path, how):
    """The size+mtime shortcut must not vouch for a file replaced since (a `cp -p`, or a write followed by
    `touch -r`): the status-change time and inode are part of what the cache entry recorded."""
    import os
    import shutil

    from runtime.errors import ManifestError

    folder = tmp_path / "engines"
    shutil.copytree(tiny_engine.parent, folder)
    engine = folder / "unet.onnx"
    assert load(engine, tmp_path / "cache")[0] == "miss"
    before = os.stat(engine)
    raw = bytearray(engine.read_bytes())
    raw[-1] ^= 0x01
    if how == "rewritten in place":
        engine.write_bytes(bytes(raw))
    else:
        (folder / "new.onnx").write_bytes(bytes(raw))
        os.replace(folder / "new.onnx", engine)
    os.utime(engine, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(engine).st_size == before.st_size and os.stat(engine).st_mtime_ns == before.st_mtime_ns
    with pytest.raises(ManifestError, match="does not match its manifest"):
        Pipeline.load(engine, device="cpu", cache_dir=tmp_path / "cache")


def test_nothing_is_cached_from_an_engine_that_fails_its_hash(tiny_engine, tmp_path):
    import shutil

    from runtime.errors import ManifestError

    folder = tmp_path / "engines"
    shutil.copytree(tiny_engine.parent, folder)
    engine = folder / "unet.onnx"
    raw = bytearray(engine.read_bytes())
    raw[-1] ^= 0x01
    engine.write_bytes(bytes(raw))
    with pytest.raises(ManifestError):
        Pipeline.load(engine, device="cpu", cache_dir=tmp_path / "cache")
    assert entries(tmp_path / "cache") == [] and not list((tmp_path / "cache" / "onnxruntime").glob(".tmp-*"))
