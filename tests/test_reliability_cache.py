"""The cache, made safe (issue 14, items 3, 8, 9, 11 and 13): a damaged cached model is trained
again, names never lead outside the cache, two writers of one chapter's results keep every key,
an unwritable cache names BERTMINI_CACHE, and the sentiment archive's hash is checked by pip
before any of its code runs."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bertmini import data, runtime
from bertmini import pretraining as P


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTMINI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_names_that_leave_the_cache_are_refused(cache):
    for bad in ("../../x", "/etc/passwd", "a/b", "..", ""):
        with pytest.raises(ValueError, match="cannot name a file in the cache"):
            runtime.save_results(bad, {"a": 1})
        with pytest.raises(ValueError, match="cannot name a file in the cache"):
            runtime.load_results(bad)
        with pytest.raises(ValueError, match="cannot name a file in the cache"):
            P.load_or_pretrain(bad, progress=False)
    assert not (cache.parent / "x.json").exists()
    runtime.save_results("05a_classification", {"a": 1})
    assert runtime.load_results("05a_classification") == {"a": 1}


def test_two_writers_of_one_chapter_keep_every_key(cache, monkeypatch):
    real_write, others = runtime.atomic_write_bytes, []

    def write_after_another_process_saved(path, payload):
        # between this writer's read and its write, a second one saves another key
        if not others:
            other = threading.Thread(target=runtime.save_results, args=("ch", {"b": 2}))
            others.append(other)
            other.start()
            other.join(0.5)  # with the lock it waits for us; without it, it is done by now
        return real_write(path, payload)

    monkeypatch.setattr(runtime, "atomic_write_bytes", write_after_another_process_saved)
    runtime.save_results("ch", {"a": 1})
    others[0].join()
    assert runtime.load_results("ch") == {"a": 1, "b": 2}


def test_an_unwritable_cache_names_bertmini_cache(cache, monkeypatch):
    cache.parent.mkdir(exist_ok=True)
    cache.write_text("not a folder")
    with pytest.raises(OSError, match="BERTMINI_CACHE"):
        runtime.cache_dir()

    cache.unlink()
    runtime.cache_dir()

    def refuse(*args, **kwargs):  # a read-only cache, as it answers a non-root user
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runtime.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=r"cannot write .*ch\.json.*set BERTMINI_CACHE"):
        runtime.save_results("ch", {"a": 1})
    with pytest.raises(PermissionError, match="write to a folder you may write to") as outside:
        runtime.atomic_write_bytes(cache.parent / "elsewhere.txt", b"x")
    assert "BERTMINI_CACHE" not in str(outside.value)  # outside the cache: no cache hint


def test_cache_files_get_the_umask_mode(cache):
    import os
    old = os.umask(0o022)
    try:
        path = runtime.save_results("ch", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert path.parent.stat().st_mode & 0o777 == 0o755


def test_a_truncated_cached_model_is_trained_again(cache, monkeypatch, tmp_path):
    from test_pretraining import _toy_tokenizer

    from bertmini import nsp

    tok = _toy_tokenizer()
    docs = [[[5 + (d * 7 + s * 3 + p) % 60 for p in range(4)] for s in range(4)] for d in range(30)]
    train_data = nsp.PretrainingData.from_pairs(nsp.make_nsp_pairs(docs, max_length=16, seed=0), tok,
                                                max_length=16)
    rcp = P.recipe("smoke", max_length=16, batch_size=8, max_steps=6, eval_every=3, amp=None)
    evals = P.fixed_masked_batches(train_data, tok, batch_size=32)
    run = P.pretrain(rcp, tokenizer=tok, train_data=train_data, eval_batches=evals, progress=False)
    directory = P.pretrained_dir("book")
    P.save_pretrained(run, directory)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:7])  # "invalid header length" to safetensors
    calls = []
    monkeypatch.setattr(P, "pretrain", lambda *a, **k: calls.append(1) or run)
    model, _ = P.load_or_pretrain("book", progress=False)
    assert calls == [1]  # trained again instead of stopping the chapter
    P.load_saved(directory)  # and the cache is whole again


def test_the_sentiment_archive_hash_is_checked_before_pip_builds_it(cache, monkeypatch, tmp_path):
    seen = []

    def pip(args, check):
        seen.append(args)
        requirement = Path(args[args.index("-r") + 1]).read_text()
        assert f"--hash=sha256:{data.VADER_SDIST_SHA256}" in requirement
        (Path(args[args.index("-d") + 1]) / data.VADER_SDIST).write_bytes(b"not the archive")

    monkeypatch.setattr(data.subprocess, "run", pip)
    with pytest.raises(data.DataError, match="does not match its checksum"):
        data.fetch_sources(tmp_path / "sources")
    assert "--require-hashes" in seen[0] and data.VADER_SPEC not in seen[0]
