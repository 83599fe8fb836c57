"""A full disk while the pseudo-label pass writes its cache: one error naming the cache file, no temp file left
behind, and a rerun after freeing space writes the labels of an uninterrupted pass, byte for byte. A rerun also
removes the temp files that a killed run left in the cache."""
import errno
import os
import re

import numpy as np
import pytest
import torch

from spcl.pseudo import generate_pseudo_labels

from test_pseudo_generation import KEY, CountingModel, DyingModel, Killed, _labelled_batches, _outputs

K, CPU = 4, torch.device("cpu")


def _temp_files(cache):
    return sorted(name for name in os.listdir(cache) if name.startswith(".tmp_"))


def _disk_full_at(monkeypatch, call):
    """Make `np.savez_compressed` fail from its call number `call` (1-based) on, as on a full disk: it writes a
    few bytes, then the write fails with ENOSPC."""
    real, calls = np.savez_compressed, [0]

    def savez_compressed(f, **arrays):
        calls[0] += 1
        if calls[0] < call:
            return real(f, **arrays)
        f.write(b"PK\x03\x04")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", savez_compressed)


def test_a_full_disk_names_the_cache_file_leaves_no_temp_file_and_a_rerun_resumes(tmp_path, monkeypatch):
    """6 images, one a batch: the 4th cache file does not fit. The error names it; the cache holds the 3 whole
    files (and the key), nothing else; with space again the rerun predicts the other 3 and its labels and
    thresholds.json are those of an uninterrupted pass."""
    batches = _labelled_batches(K, 8, 12, n=6)
    generate_pseudo_labels(CountingModel(K), list(batches), str(tmp_path / "ref"), K, CPU)
    out = tmp_path / "run"
    cache = out / ".cache" / "rank0"
    with monkeypatch.context() as full:
        _disk_full_at(full, 4)
        with pytest.raises(OSError) as raised:
            generate_pseudo_labels(CountingModel(K), list(batches), str(out), K, CPU, resume_key=KEY)
    path = os.path.join(str(cache), batches[3]["name"][0] + ".npz")
    assert raised.value.errno == errno.ENOSPC
    assert re.match(rf"cannot write pseudo-label cache file {re.escape(path)}: No space left on device",
                    raised.value.strerror), raised.value.strerror
    assert _temp_files(cache) == []
    assert sorted(os.listdir(cache)) == sorted([b["name"][0] + ".npz" for b in batches[:3]] + ["key.json"])
    rerun = CountingModel(K)  # space freed
    generate_pseudo_labels(rerun, list(batches), str(out), K, CPU, resume_key=dict(KEY))
    assert rerun.calls == 3
    assert _outputs(out) == _outputs(tmp_path / "ref")


def test_a_rerun_removes_the_temp_files_a_killed_run_left_in_its_cache(tmp_path):
    """A run killed in the middle of a cache write leaves a temp file (here one of this pid, as a rerun in a fresh
    container gets the killed run's pid back, one of a dead pid, one of an older version): a rerun with the same
    key removes them as it opens the cache, and keeps the whole cache files."""
    batches = _labelled_batches(K, 8, 12, n=6)
    out = tmp_path / "run"
    cache = out / ".cache" / "rank0"
    with pytest.raises(Killed):
        generate_pseudo_labels(DyingModel(K, at=4), list(batches), str(out), K, CPU, resume_key=KEY)
    whole = sorted(os.listdir(cache))
    pid = os.getpid()
    left = [f".tmp_{pid}_abc123.npz", ".tmp_999999999_def456.npz", f".tmp_{pid}_{batches[3]['name'][0]}.npz"]
    for name in left:
        (cache / name).write_bytes(b"")
    with pytest.raises(Killed):  # killed again at once: the cache as the rerun opened it
        generate_pseudo_labels(DyingModel(K, at=1), list(batches), str(out), K, CPU, resume_key=dict(KEY))
    assert _temp_files(cache) == []
    assert sorted(os.listdir(cache)) == whole
