"""Several real processes saving one state path (and a sibling ``.bak``) at once: no save fails,
the file is always one writer's complete state, no temporary is left behind."""

from __future__ import annotations

import fcntl
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from edgemeta.contract.atomic_files import atomic_write_bytes, remove_stale_temporaries
from edgemeta.runtime.state import StateData, read_state, write_state

BUNDLE_ID = "ab" * 32
SAVES = 300


def _state(writer: int) -> StateData:
    """A distinct, valid state per writer: its embeddings are filled with the writer's number."""
    return StateData(BUNDLE_ID, [f"w{writer}-a", f"w{writer}-b"], np.full((4, 8), writer, np.float32),
                     np.array([0, 0, 1, 1]), {}, {"ink": "high"})


def _save_many(path: str, writer: int, saves: int, start, failures) -> None:
    """Child process: save this writer's state ``saves`` times; count failed saves."""
    start.wait()
    state = _state(writer)
    for _ in range(saves):
        try:
            write_state(path, state)
        except Exception:  # noqa: BLE001 - any failure of a save is what is counted
            with failures.get_lock():
                failures.value += 1


def _run_writers(targets: list[tuple[Path, int]], saves: int) -> int:
    """Start one process per ``(path, writer)``, all saving at once; the number of failed saves."""
    ctx = mp.get_context("spawn")
    start, failures = ctx.Event(), ctx.Value("i", 0)
    procs = [ctx.Process(target=_save_many, args=(str(p), w, saves, start, failures)) for p, w in targets]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0
    return failures.value


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "tmp" in p.name)


def test_two_processes_saving_one_path_and_its_bak_sibling(tmp_path):
    """2 writers on me.state and 1 on me.state.bak, 300 saves each, all at once: 0 of 900 fail."""
    me, bak = tmp_path / "me.state", tmp_path / "me.state.bak"
    failed = _run_writers([(me, 1), (me, 2), (bak, 3)], SAVES)
    assert failed == 0, f"{failed} failed saves out of {3 * SAVES}"
    got = read_state(me)
    assert got.labels in (["w1-a", "w1-b"], ["w2-a", "w2-b"])
    assert np.unique(got.embeddings).tolist() == [int(got.labels[0][1])]       # one writer's, never a mix
    assert read_state(bak).labels == ["w3-a", "w3-b"]
    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.state", "me.state.bak"]


def test_cleanup_deletes_only_dead_temporaries_of_its_own_target(tmp_path):
    """A locked temporary (a live writer) and a sibling's temporary survive; an unlocked one
    (its writer died) is deleted; nothing else in the folder is touched."""
    target = tmp_path / "me.state"
    target.write_bytes(b"current")
    dead = tmp_path / ".me.state.edgemeta-tmp-0123456789abcdef"
    live = tmp_path / ".me.state.edgemeta-tmp-fedcba9876543210"
    sibling = tmp_path / ".me.state.bak.edgemeta-tmp-0123456789abcdef"
    others = [tmp_path / ".me.state.swp", tmp_path / ".me.state.edgemeta-tmp-short", tmp_path / "me.state.old"]
    for p in (dead, live, sibling, *others):
        p.write_bytes(b"old private state")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)               # held the way a writer in another process holds it
    try:
        assert remove_stale_temporaries(target) == [dead]
    finally:
        os.close(fd)
    assert not dead.exists() and live.exists() and sibling.exists() and all(p.exists() for p in others)
    assert remove_stale_temporaries(target) == [live]          # its writer gone, now it is stale
    assert target.read_bytes() == b"current"


def test_atomic_write_bytes_sets_the_mode_and_leaves_no_temporary(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "f.json", b"{}", mode=0o600)
    atomic_write_bytes(tmp_path / "a" / "g.json", b"[]")
    assert (tmp_path / "a" / "f.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "a" / "g.json").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["f.json", "g.json"]


def test_training_checkpoints_still_write_through_atomic_files(tmp_path):
    """checkpoint.save_weights / save_json use atomic_write_bytes: they round-trip and leave no temporary."""
    import torch

    from edgemeta.train.checkpoint import load_json, load_weights, save_json, save_weights

    weights = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    save_weights(tmp_path / "best.pt", weights)
    save_json(tmp_path / "meta.json", {"epoch": 3})
    assert torch.equal(load_weights(tmp_path / "best.pt")["w"], weights["w"])
    assert load_json(tmp_path / "meta.json") == {"epoch": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "meta.json"]
