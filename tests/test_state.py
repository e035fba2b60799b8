"""The private state file: round trip, no raw samples, forgetting on disk, damage, encryption, atomicity."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edgemeta.errors import StateError
from edgemeta.runtime import FewShotClassifier
from edgemeta.runtime.state import MAGIC, decode_state, encode_state

pytest.importorskip("cryptography")

SECRET = "private-label-{}"        # distinctive label strings, easy to look for in the file bytes


@pytest.fixture(scope="module")
def labelled(task):
    """The session task with distinctive string labels: ``(sx, labels, qx, qy)``."""
    sx, sy, qx, qy = task
    names = {n: SECRET.format(i) for i, n in enumerate(sorted(set(sy.tolist())))}
    return sx, np.array([names[n] for n in sy]), qx, np.array([names[n] for n in qy])


def per_class(bundle, sx, y) -> FewShotClassifier:
    """A classifier built class by class, so each class's embeddings come from one ``embed`` batch of
    exactly that class's images (``clf.embed(sx[y == c])`` then gives bit-identical rows)."""
    clf = FewShotClassifier(bundle)
    for c in np.unique(y):
        clf.partial_fit(sx[y == c], y[y == c])
    return clf


def assert_same_state(a: FewShotClassifier, b: FewShotClassifier, qx: np.ndarray) -> None:
    assert a.class_counts() == b.class_counts()
    if a.classes_ is None:
        assert b.classes_ is None
        return
    np.testing.assert_array_equal(a.classes_, b.classes_)
    assert a.classes_.dtype.kind == b.classes_.dtype.kind
    for name in a.params_:
        np.testing.assert_array_equal(a.params_[name], b.params_[name])
    np.testing.assert_array_equal(a.decision_function(qx), b.decision_function(qx))
    np.testing.assert_array_equal(a.predict(qx), b.predict(qx))


# ---- round trip ----------------------------------------------------------------------------------

def test_roundtrip_string_labels(bundle, bundle_dir, labelled, tmp_path):
    sx, y, qx, _ = labelled
    clf = FewShotClassifier(bundle).fit(sx, y)
    path = tmp_path / "state.bin"
    assert clf.save(path) is None
    assert path.read_bytes().startswith(MAGIC)
    back = FewShotClassifier.load(bundle, path)
    assert_same_state(clf, back, qx)
    assert back.classes_.dtype.kind == "U"
    assert all(type(k) is str for k in back.class_counts())
    assert all(type(v) is str for v in back.predict(qx).tolist())
    # from the bundle path as well, and load_or_new finds it
    assert_same_state(clf, FewShotClassifier.load(str(bundle_dir), path), qx)
    assert_same_state(clf, FewShotClassifier.load_or_new(bundle, path), qx)


def test_roundtrip_int_labels(bundle, task, tmp_path):
    sx, sy, qx, _ = task
    ids = {n: v for n, v in zip(sorted(set(sy.tolist())), [40, 3, 17, -2, 1000])}
    clf = FewShotClassifier(bundle).fit(sx, [ids[n] for n in sy])
    clf.save(tmp_path / "s")
    back = FewShotClassifier.load(bundle, tmp_path / "s")
    assert_same_state(clf, back, qx)
    assert back.classes_.tolist() == [-2, 3, 17, 40, 1000]
    assert back.classes_.dtype.kind == "i"
    assert all(type(k) is int for k in back.class_counts())
    assert all(type(v) is int for v in back.predict(qx).tolist())
    back.forget(17)                                     # int labels stay ints: forget by int works
    assert back.classes_.tolist() == [-2, 3, 40, 1000]


def test_roundtrip_non_ascii_labels(bundle, task, tmp_path):
    sx, sy, qx, _ = task
    names = dict(zip(sorted(set(sy.tolist())), ["猫", "chien", "é", "Ωmega", "emoji 🙂"]))
    clf = FewShotClassifier(bundle).fit(sx, [names[n] for n in sy])
    clf.save(tmp_path / "s")
    back = FewShotClassifier.load(bundle, tmp_path / "s")
    assert_same_state(clf, back, qx)
    back.forget("猫")
    assert "猫" not in back.class_counts()


def test_roundtrip_keeps_ink_and_partial_states(bundle, labelled, tmp_path):
    sx, y, qx, _ = labelled
    paper = FewShotClassifier(bundle, ink="low").fit(1.0 - sx, y)       # dark strokes on white paper
    paper.save(tmp_path / "paper")
    back = FewShotClassifier.load(bundle, tmp_path / "paper")
    assert back.ink == "low"
    np.testing.assert_array_equal(back.decision_function(1.0 - qx), paper.decision_function(1.0 - qx))
    # one class held (no head yet), then no class at all: both round-trip
    one = FewShotClassifier(bundle).partial_fit(sx[:5], y[:5])
    one.save(tmp_path / "one")
    back = FewShotClassifier.load(bundle, tmp_path / "one")
    assert back.classes_ is None and back.class_counts() == {y[0]: 5}
    back.partial_fit(sx[5:10], y[5:10])
    assert_same_state(back, FewShotClassifier(bundle).fit(sx[:10], y[:10]), qx)
    empty = FewShotClassifier(bundle)
    empty.save(tmp_path / "empty")
    assert FewShotClassifier.load(bundle, tmp_path / "empty").class_counts() == {}


def test_load_or_new_without_a_file(bundle, tmp_path):
    clf = FewShotClassifier.load_or_new(bundle, tmp_path / "absent.bin")
    assert clf.class_counts() == {} and clf.classes_ is None
    assert not (tmp_path / "absent.bin").exists()


# ---- no raw samples, forgetting reaches the disk -------------------------------------------------

def test_state_holds_no_raw_sample(bundle, labelled, tmp_path):
    sx, y, _, _ = labelled
    clf = FewShotClassifier(bundle).fit(sx, y)
    clf.save(tmp_path / "s")
    data = (tmp_path / "s").read_bytes()
    x = bundle.preprocess(sx)                                  # what the backbone saw: float32 [25, 1, 28, 28]
    for i in range(len(x)):
        assert x[i].tobytes() not in data, f"preprocessed support image {i} is in the state file"
        assert sx[i].astype(np.float32).tobytes() not in data
        assert (sx[i] * 255).astype(np.uint8).tobytes() not in data
    # the check can fail: the embeddings (which are stored) are found the same way
    emb = clf.embed(sx)
    assert sum(emb[i].tobytes() in data for i in range(len(emb))) == len(emb)


def test_forget_then_save_erases_label_and_embeddings_from_the_file(bundle, labelled, tmp_path):
    sx, y, qx, _ = labelled
    gone = y[7]
    clf = per_class(bundle, sx, y)
    own = clf.embed(sx[y == gone])                            # [5, D] the forgotten class's embeddings
    path = tmp_path / "state.bin"
    clf.save(path)
    before = path.read_bytes()
    assert gone.encode() in before                            # positive controls: the search finds them
    assert all(row.tobytes() in before for row in own)
    clf.forget(gone)
    clf.save(path)
    after = path.read_bytes()
    assert gone.encode() not in after
    for row in own:
        assert row.tobytes() not in after
        assert row[:8].tobytes() not in after                 # not even a fragment of a row
    # and its prototype (the mean of its embeddings) is gone as well
    proto = own.mean(0).astype(np.float32)
    assert proto[:4].tobytes() not in after
    back = FewShotClassifier.load(bundle, path)
    assert gone not in back.class_counts() and gone not in back.classes_.tolist()
    keep = y != gone
    np.testing.assert_allclose(back.decision_function(qx),
                               FewShotClassifier(bundle).fit(sx[keep], y[keep]).decision_function(qx),
                               rtol=1e-5, atol=1e-4)
    # nothing else in the folder holds it either
    for p in tmp_path.iterdir():
        assert gone.encode() not in p.read_bytes(), p


def test_state_file_is_private_to_its_user(bundle, labelled, tmp_path):
    """The state holds the user's private classes: like an SSH key, only its owner may read it
    (atomic_write_bytes makes every file it writes 0o644, world-readable)."""
    sx, y, _, _ = labelled
    path = tmp_path / "state.bin"
    FewShotClassifier(bundle).fit(sx, y).save(path)
    mode = path.stat().st_mode & 0o777
    assert mode & 0o077 == 0, f"state file mode is {oct(mode)}; group/others can read the private state"


# ---- refused files ---------------------------------------------------------------------------------

@pytest.fixture
def saved(bundle, labelled, tmp_path):
    """``(path, bytes)`` of a plain state of the 5-class task."""
    sx, y, _, _ = labelled
    path = tmp_path / "state.bin"
    FewShotClassifier(bundle).fit(sx, y).save(path)
    return path, path.read_bytes()


def test_state_of_another_bundle_is_refused(saved, shipped_bundle):
    path, _ = saved
    with pytest.raises(StateError, match=r"was saved for another bundle .*adapt again with this bundle"):
        FewShotClassifier.load(shipped_bundle, path)


def test_missing_state_file(bundle, tmp_path):
    with pytest.raises(StateError, match="no state file at"):
        FewShotClassifier.load(bundle, tmp_path / "nope.bin")


def _split(data: bytes) -> tuple[dict, bytes]:
    end = data.index(b"\n", len(MAGIC))
    return json.loads(data[len(MAGIC):end]), data[end + 1:]


def _join(header: dict, payload: bytes) -> bytes:
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


@pytest.mark.parametrize("keep", ["half", "minus_one", "header_only", "in_header", "in_magic", "empty"])
def test_truncated_file_is_refused(bundle, saved, keep):
    path, data = saved
    header_end = data.index(b"\n", len(MAGIC))
    cut = {"half": len(data) // 2, "minus_one": len(data) - 1, "header_only": header_end + 1,
           "in_header": header_end - 5, "in_magic": 5, "empty": 0}[keep]
    path.write_bytes(data[:cut])
    with pytest.raises(StateError, match=r"truncated|not an edgemeta state file") as err:
        FewShotClassifier.load(bundle, path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("where", [0, 100, -1, -50, "middle"])
def test_flipped_payload_byte_is_refused(bundle, saved, where):
    path, data = saved
    _, payload = _split(data)
    start = len(data) - len(payload)
    i = start + (len(payload) // 2 if where == "middle" else where % len(payload))
    bad = bytearray(data)
    bad[i] ^= 0x01
    path.write_bytes(bytes(bad))
    with pytest.raises(StateError, match="checksum mismatch, the file was altered or damaged"):
        FewShotClassifier.load(bundle, path)


@pytest.mark.parametrize("edit, message", [
    (lambda h: {**h, "version": 3}, r"version 3 is not supported \(this edgemeta reads edgemeta-state v1, v2\)"),
    (lambda h: {**h, "version": "1"}, "is not supported"),
    (lambda h: {**h, "format": "other"}, "format 'other' version 2 is not supported"),
    (lambda h: {**h, "payload_bytes": h["payload_bytes"] + 1}, "truncated or padded"),
    (lambda h: {**h, "payload_sha256": "0" * 64}, "checksum mismatch"),
])
def test_edited_header_is_refused(bundle, saved, edit, message):
    path, data = saved
    header, payload = _split(data)
    path.write_bytes(_join(edit(header), payload))
    with pytest.raises(StateError, match=message):
        FewShotClassifier.load(bundle, path)


@pytest.mark.parametrize("edit", ["encryption_unknown", "encryption_missing", "header_not_object",
                                  "header_not_utf8", "header_not_json"])
def test_malformed_header_is_refused_with_state_error(bundle, saved, edit):
    """Any damage to the header line is a StateError, never a KeyError / AttributeError / UnicodeError."""
    path, data = saved
    header, payload = _split(data)
    if edit == "encryption_unknown":
        raw = _join({**header, "encryption": "rot13"}, payload)
    elif edit == "encryption_missing":
        raw = _join({k: v for k, v in header.items() if k != "encryption"}, payload)
    elif edit == "header_not_object":
        raw = MAGIC + b"[1, 2]\n" + payload
    elif edit == "header_not_utf8":
        raw = MAGIC + json.dumps(header).encode()[:-1] + b"\xff}\n" + payload
    else:
        raw = MAGIC + b"{not json\n" + payload
    path.write_bytes(raw)
    with pytest.raises(StateError, match=str(path)):
        FewShotClassifier.load(bundle, path)


def _fake_payload(arrays: dict) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _meta(**kw) -> np.ndarray:
    return np.frombuffer(json.dumps(kw).encode(), np.uint8)


@pytest.mark.parametrize("case", ["not_npz", "no_meta", "meta_not_json", "meta_without_labels",
                                  "meta_without_bundle_id", "class_index_out_of_range", "embeddings_1d"])
def test_consistent_checksum_but_bad_payload_is_refused_with_state_error(bundle, saved, case):
    """A payload whose sha256 matches the header but whose content is not a valid state (a buggy
    writer, or a hand-edited file with the checksum recomputed) is a StateError naming the file."""
    path, data = saved
    header, _ = _split(data)
    ident = bundle.identity
    good = dict(bundle_id=ident, labels=["a", "b"], label_type="str", method="proto", ink="high")
    emb = np.zeros((2, bundle.embedding_dim), np.float32)
    arrays = {"embeddings": emb, "sample_class": np.array([0, 1]), "meta": _meta(**good)}
    if case == "not_npz":
        payload = b"definitely not a zip archive" * 10
    else:
        if case == "no_meta":
            del arrays["meta"]
        elif case == "meta_not_json":
            arrays["meta"] = np.frombuffer(b"{oops", np.uint8)
        elif case == "meta_without_labels":
            arrays["meta"] = _meta(**{k: v for k, v in good.items() if k != "labels"})
        elif case == "meta_without_bundle_id":
            arrays["meta"] = _meta(**{k: v for k, v in good.items() if k != "bundle_id"})
        elif case == "class_index_out_of_range":
            arrays["sample_class"] = np.array([0, 5])
        elif case == "embeddings_1d":
            arrays["embeddings"] = np.zeros(3, np.float32)
        payload = _fake_payload(arrays)
    header.update(payload_bytes=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest())
    path.write_bytes(_join(header, payload))
    with pytest.raises(StateError, match=str(path)):
        FewShotClassifier.load(bundle, path)


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"\x89PNG\r\n\x1a\n" + bytes(100), "npz", "bundle"])
def test_not_a_state_file_is_refused(bundle, bundle_dir, tmp_path, content):
    path = tmp_path / "x.bin"
    if content == "npz":
        np.savez(path.with_suffix(".npz"), embeddings=np.zeros((2, 64), np.float32))
        path = path.with_suffix(".npz")
    elif content == "bundle":
        path = bundle_dir / "manifest.json"
    else:
        path.write_bytes(content)
    with pytest.raises(StateError, match=r"is not an edgemeta state file \(bad magic\)"):
        FewShotClassifier.load(bundle, path)


def test_directory_is_not_a_state_file(bundle, tmp_path):
    with pytest.raises(StateError, match="is a folder; expected a state file"):
        FewShotClassifier.load(bundle, tmp_path)


def test_a_fifo_or_oversized_header_is_refused_without_blocking_or_reading(bundle, tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.state")
    with pytest.raises(StateError, match="not a regular file"):
        FewShotClassifier.load(bundle, tmp_path / "fifo.state")
    header = json.dumps({"encryption": "none", "format": "edgemeta-state", "payload_bytes": 2**31,
                         "payload_sha256": "0" * 64, "version": 2}, sort_keys=True).encode()
    big = tmp_path / "big.state"
    with open(big, "wb") as f:                       # a sparse 2 GiB file: costs nothing on disk
        f.write(MAGIC + header + b"\n")
        f.truncate(len(MAGIC) + len(header) + 1 + 2**31)
    with pytest.raises(StateError, match="a state holds at most"):
        FewShotClassifier.load(bundle, big)


def test_saving_through_a_symlink_updates_its_target(bundle, labelled, tmp_path):
    sx, y, qx, _ = labelled
    clf = FewShotClassifier(bundle).fit(sx, y)
    clf.save(tmp_path / "orig.state")
    (tmp_path / "link.state").symlink_to("orig.state")
    clf.forget(clf.classes_[0]).save(tmp_path / "link.state")
    assert (tmp_path / "link.state").is_symlink()
    again = FewShotClassifier.load(bundle, tmp_path / "orig.state")
    assert list(again.classes_) == list(clf.classes_)


# ---- encryption --------------------------------------------------------------------------------------

def test_encrypted_state(bundle, labelled, tmp_path):
    sx, y, qx, _ = labelled
    clf = per_class(bundle, sx, y)
    key = os.urandom(32)
    path = tmp_path / "state.enc"
    clf.save(path, key=key)
    data = path.read_bytes()
    header, payload = _split(data)
    assert header["encryption"] == "aes-256-gcm"
    # the ciphertext holds no plaintext: no labels, no embedding bytes, no npz member names
    for label in set(y.tolist()):
        assert label.encode() not in data
    assert b"private-label" not in data
    assert b"embeddings" not in data and b"sample_class" not in data and b"head." not in data
    assert b"PK\x03\x04" not in payload                      # not even the zip container's signature
    emb = np.concatenate([clf.embed(sx[y == c]) for c in np.unique(y)])
    for row in emb:
        assert row.tobytes() not in data and row[:4].tobytes() not in data
    assert clf.bundle.identity.encode() not in data          # which bundle (model) it is for is private too
    # right key
    back = FewShotClassifier.load(bundle, path, key=key)
    assert_same_state(clf, back, qx)
    # wrong key, no key
    with pytest.raises(StateError, match="wrong key"):
        FewShotClassifier.load(bundle, path, key=os.urandom(32))
    with pytest.raises(StateError, match="is encrypted; pass the key it was saved with"):
        FewShotClassifier.load(bundle, path)
    with pytest.raises(StateError, match="must be 32 bytes"):
        FewShotClassifier.load(bundle, path, key=key[:16])
    # every save draws a fresh nonce: the same state encrypts differently
    clf.save(tmp_path / "again.enc", key=key)
    assert (tmp_path / "again.enc").read_bytes() != data


def test_key_for_an_unencrypted_file_is_refused(bundle, saved):
    path, _ = saved
    with pytest.raises(StateError, match="is not encrypted but a key was given"):
        FewShotClassifier.load(bundle, path, key=os.urandom(32))


def test_altered_ciphertext_or_header_is_refused(bundle, labelled, tmp_path):
    sx, y, _, _ = labelled
    key = os.urandom(32)
    path = tmp_path / "state.enc"
    FewShotClassifier(bundle).fit(sx, y).save(path, key=key)
    header, payload = _split(path.read_bytes())
    # a flipped ciphertext byte with the checksum recomputed: the GCM tag catches it
    bad = bytearray(payload)
    bad[len(bad) // 2] ^= 0x80
    bad = bytes(bad)
    path.write_bytes(_join({**header, "payload_bytes": len(bad), "payload_sha256": hashlib.sha256(bad).hexdigest()}, bad))
    with pytest.raises(StateError, match="wrong key \\(or altered ciphertext\\)"):
        FewShotClassifier.load(bundle, path, key=key)
    # claiming the file is not encrypted does not get the ciphertext parsed as a state
    path.write_bytes(_join({**header, "encryption": "none"}, payload))
    with pytest.raises(StateError):
        FewShotClassifier.load(bundle, path)


def test_encode_decode_directly(bundle):
    """The pure functions round-trip a state, with and without encryption."""
    from edgemeta.runtime.state import StateData

    st = StateData(bundle.identity, ["a", "b"], np.ones((3, 4), np.float32), np.array([0, 1, 1]),
                   {"prototypes": np.zeros((2, 4), np.float32)}, {"ink": "high"})
    for key in (None, os.urandom(32)):
        back = decode_state(encode_state(st, key), key)
        assert back.bundle_id == st.bundle_id and back.labels == ["a", "b"]
        np.testing.assert_array_equal(back.embeddings, st.embeddings)
        np.testing.assert_array_equal(back.sample_class, st.sample_class)
        np.testing.assert_array_equal(back.head["prototypes"], st.head["prototypes"])
        assert back.meta["ink"] == "high"


# ---- atomicity under SIGKILL -------------------------------------------------------------------------

WRITER = """
    import sys
    from edgemeta.runtime import Bundle, FewShotClassifier
    bundle = Bundle.load(sys.argv[1])
    states = [FewShotClassifier.load(bundle, p) for p in sys.argv[2:4]]
    target = sys.argv[4]
    print("ready", flush=True)
    i = 0
    while True:
        states[i % 2].save(target)
        i += 1
"""


def _temp_files(folder: Path, name: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(f".{name}."))


def test_state_file_survives_sigkill_mid_save(bundle, bundle_dir, labelled, tmp_path):
    """A writer saving two different states to one path as fast as it can is SIGKILLed at random
    moments; every time, the file loads and is exactly one of the two states."""
    sx, y, qx, _ = labelled
    classes = np.unique(y)
    a_rows, b_rows = np.isin(y, classes[:3]), np.isin(y, classes[2:])
    a = FewShotClassifier(bundle).fit(sx[a_rows], y[a_rows])
    b = FewShotClassifier(bundle).fit(sx[b_rows], y[b_rows])
    pa, pb = tmp_path / "a.bin", tmp_path / "b.bin"
    a.save(pa)
    b.save(pb)
    folder = tmp_path / "device"
    folder.mkdir()
    target = folder / "state.bin"
    a.save(target)
    expected = {tuple(a.classes_.tolist()): a, tuple(b.classes_.tolist()): b}
    rng = random.Random(1)
    kills = 10
    for k in range(kills):
        before = (target.stat().st_ino, target.stat().st_mtime_ns)
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(bundle_dir), str(pa), str(pb),
                                 str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert line.strip() == "ready", proc.stderr.read() if proc.poll() is not None else line
            time.sleep(rng.uniform(0.05, 0.3))
            assert proc.poll() is None, proc.stderr.read()        # still writing when killed
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        assert (target.stat().st_ino, target.stat().st_mtime_ns) != before   # the writer did replace the file
        got = FewShotClassifier.load(bundle, target)              # never a mix, never damaged
        key = tuple(got.classes_.tolist())
        assert key in expected, key
        assert_same_state(got, expected[key], qx)
        # a kill can leave at most its own unfinished temporary file behind
        stray = _temp_files(folder, target.name)
        assert len(stray) <= k + 1, stray
        assert {p.name for p in folder.iterdir()} == {target.name, *(p.name for p in stray)}


def test_a_crash_mid_save_leaves_no_copy_of_a_forgotten_class(bundle, bundle_dir, labelled, tmp_path):
    """The user's right to be forgotten on disk: a save that died before its rename (power loss,
    SIGKILL, OOM kill) leaves its temporary file behind; a later forget + save must not leave the
    forgotten class's label or embeddings anywhere in the state's folder."""
    sx, y, _, _ = labelled
    gone = y[0]
    clf = per_class(bundle, sx, y)
    own = clf.embed(sx[y == gone])
    folder = tmp_path / "device"
    target = folder / "state.bin"
    clf.save(target)
    # a writer that dies exactly before os.replace, like a power cut after fsync
    code = f"""
        import os
        from edgemeta.runtime import FewShotClassifier
        clf = FewShotClassifier.load({str(bundle_dir)!r}, {str(target)!r})
        os.replace = lambda *a, **k: os._exit(137)
        clf.save({str(target)!r})
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 137, proc.stderr
    assert len(_temp_files(folder, target.name)) == 1            # the crashed save's leftover
    back = FewShotClassifier.load(bundle, target)
    back.forget(gone)
    back.save(target)
    for p in folder.iterdir():
        data = p.read_bytes()
        assert gone.encode() not in data, f"{p.name} still holds the forgotten label"
        assert not any(row.tobytes() in data for row in own), f"{p.name} still holds forgotten embeddings"


# ---- version-1 states users already have --------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures"


def _digits_task():
    """The scans tests/fixtures/make_v1_states.py adapted to (digits 0, 1, 7, first two each) and queries."""
    from edgemeta.demo import load_digits_images

    x, y = load_digits_images()
    rows = np.concatenate([np.flatnonzero(y == d)[:2] for d in (0, 1, 7)])
    query = x[np.concatenate([np.flatnonzero(y == d)[2:6] for d in (0, 1, 7)])]
    return x[rows], y[rows], query


def test_version1_states_still_load_and_resave_as_version2(shipped_bundle, tmp_path):
    """The fixtures were written by the version-1 writer (commit dac9698) with
    ``python tests/fixtures/make_v1_states.py``; they load as the same classifiers and save as v2."""
    sx, sy, qx = _digits_task()
    plain = FewShotClassifier.load(shipped_bundle, FIXTURES / "v1-plain.state")
    fresh = FewShotClassifier(shipped_bundle).fit(sx, [f"digit {d}" for d in sy])
    assert_same_state(plain, fresh, qx)
    enc = FewShotClassifier.load(shipped_bundle, FIXTURES / "v1-encrypted.state", key=bytes(range(32)))
    assert enc.ink == "low" and enc.classes_.tolist() == [0, 1, 7]
    assert_same_state(enc, FewShotClassifier(shipped_bundle, ink="low").fit(1 - sx, sy.tolist()), 1 - qx)
    with pytest.raises(StateError, match="wrong key"):
        FewShotClassifier.load(shipped_bundle, FIXTURES / "v1-encrypted.state", key=bytes(32))
    plain.save(tmp_path / "s")
    assert _split((tmp_path / "s").read_bytes())[0]["version"] == 2
    assert_same_state(FewShotClassifier.load(shipped_bundle, tmp_path / "s"), fresh, qx)


def _v1_with(members: dict, deflate: tuple[str, ...] = ()) -> bytes:
    """The v1 plain fixture with its npz members replaced (``None`` drops one) and the ``deflate``
    ones compressed, checksum recomputed."""
    import io
    import zipfile

    header, payload = _split((FIXTURES / "v1-plain.state").read_bytes())
    with zipfile.ZipFile(io.BytesIO(payload)) as zf:
        old = {i.filename: zf.read(i) for i in zf.infolist()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, raw in {**old, **members}.items():
            if raw is not None:
                zf.writestr(name, raw, compress_type=zipfile.ZIP_DEFLATED if name in deflate else None)
    body = buf.getvalue()
    return _join({**header, "payload_bytes": len(body), "payload_sha256": hashlib.sha256(body).hexdigest()}, body)


def _npy(descr: str, shape: str, data: bytes) -> bytes:
    head = "{'descr': %s, 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    head += " " * (63 - (len(head) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head.encode() + data


@pytest.mark.parametrize("case, message", [
    ("deflated", "is compressed or encrypted; edgemeta writes stored members only"),
    ("shape_lies", "does not match its"),
    ("huge_shape", "does not match its"),
    ("object_dtype", "unexpected .npy header"),
    ("not_npy", "is not a .npy array"),
])
def test_version1_payload_tricks_are_refused_before_reading_them(shipped_bundle, tmp_path, case, message):
    emb = _npy("'<f4'", "(6, 64)", bytes(6 * 64 * 4))
    members = {"deflated": {"embeddings.npy": emb},
               "shape_lies": {"embeddings.npy": _npy("'<f4'", "(7, 64)", bytes(6 * 64 * 4))},
               "huge_shape": {"embeddings.npy": _npy("'<f4'", "(1000000000000, 64)", bytes(6 * 64 * 4))},
               "object_dtype": {"embeddings.npy": _npy("'|O'", "(6, 64)", bytes(6 * 64 * 4))},
               "not_npy": {"notes.txt": b"hello"}}[case]
    (tmp_path / "s").write_bytes(_v1_with(members, deflate=("embeddings.npy",) if case == "deflated" else ()))
    with pytest.raises(StateError, match=message):
        FewShotClassifier.load(shipped_bundle, tmp_path / "s")


BOMB_RSS = """
    import hashlib, io, json, resource, sys, zipfile
    from edgemeta.runtime.state import MAGIC, read_state, StateError
    src = open(sys.argv[1], "rb").read()
    end = src.index(b"\\n", len(MAGIC)); header = json.loads(src[len(MAGIC):end])
    with zipfile.ZipFile(io.BytesIO(src[end + 1:])) as zf:
        old = {i.filename: zf.read(i) for i in zf.infolist()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, raw in old.items():
            if name != "embeddings.npy":
                zf.writestr(name, raw)
        with zf.open("embeddings.npy", "w", force_zip64=True) as fh:
            head = "{'descr': '<f4', 'fortran_order': False, 'shape': (4194304, 64), }"
            head += " " * (63 - (len(head) + 10) % 64) + "\\n"
            fh.write(b"\\x93NUMPY\\x01\\x00" + len(head).to_bytes(2, "little") + head.encode())
            for _ in range(1024):
                fh.write(bytes(1 << 20))
    body = buf.getvalue()
    header.update(payload_bytes=len(body), payload_sha256=hashlib.sha256(body).hexdigest())
    open(sys.argv[2], "wb").write(MAGIC + json.dumps(header).encode() + b"\\n" + body)
    del body, buf
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        read_state(sys.argv[2])
    except StateError as exc:
        print(json.dumps({"error": str(exc), "bytes": __import__("os").path.getsize(sys.argv[2]),
                          "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


@pytest.mark.slow
def test_a_state_inflating_to_1_gib_is_refused_without_inflating_it(tmp_path):
    """A version-1 state of about 1 MB whose embeddings member deflates to 1 GiB is refused from the
    zip's central directory: peak RSS grows by far less than 300 MB (the old reader took 2.1 GB)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(BOMB_RSS), str(FIXTURES / "v1-plain.state"),
                           str(tmp_path / "bomb.state")], capture_output=True, text=True, timeout=300)
    out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else proc.stderr
    assert isinstance(out, dict), out
    assert "compressed or encrypted" in out["error"]
    assert out["bytes"] < 3 << 20
    assert out["rss_growth_mb"] < 300, out


# ---- hostile but checksum-consistent version-2 contents -----------------------------------------------

def _v2(bundle, labels, emb, cls, meta=None, key=None, head=None) -> bytes:
    from edgemeta.runtime.state import StateData

    return encode_state(StateData(bundle.identity, labels, np.asarray(emb, np.float32), np.asarray(cls, np.int64),
                                  head or {}, {"method": bundle.method, "ink": "high", **(meta or {})}), key)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_are_refused(shipped_bundle, tmp_path, value):
    emb = np.ones((4, 64), np.float32)
    emb[2, 5] = value
    for key in (None, os.urandom(32)):
        (tmp_path / "s").write_bytes(_v2(shipped_bundle, ["a", "b"], emb, [0, 0, 1, 1], key=key))
        with pytest.raises(StateError, match="embeddings hold NaN or infinity"):
            FewShotClassifier.load(shipped_bundle, tmp_path / "s", key=key)


def test_more_classes_than_the_bundle_allows_are_refused(shipped_bundle, tmp_path):
    limit = shipped_bundle.manifest["limits"]["max_ways"]
    n = 2 * limit
    emb = np.random.default_rng(0).standard_normal((n, 64)).astype(np.float32)
    (tmp_path / "s").write_bytes(_v2(shipped_bundle, [f"c{i}" for i in range(n)], emb, np.arange(n)))
    with pytest.raises(StateError, match=f"holds {n} classes; this bundle's limit is {limit}"):
        FewShotClassifier.load(shipped_bundle, tmp_path / "s")


@pytest.mark.parametrize("labels, message", [
    (["a", "a"], "labels repeat a class"),
    ([1, 1], "labels repeat a class"),
    (["a", 1], "all strings or all 64-bit integers"),
    ([1.5, 2.5], "all strings or all 64-bit integers"),
    ([True, False], "all strings or all 64-bit integers"),
    ([2**64, 1], "all strings or all 64-bit integers"),
    (["a", "b", "c"], "1 labels have no embedding"),
])
def test_bad_labels_are_refused(shipped_bundle, tmp_path, labels, message):
    (tmp_path / "s").write_bytes(_v2(shipped_bundle, labels, np.ones((4, 64)), [0, 0, 1, 1]))
    with pytest.raises(StateError, match=message):
        FewShotClassifier.load(shipped_bundle, tmp_path / "s")


@pytest.mark.parametrize("cls", [[0, 0, 1, 2], [0, 0, 1, -1], [0, 1, 1]])
def test_sample_class_must_index_the_labels_once_per_embedding(shipped_bundle, tmp_path, cls):
    (tmp_path / "s").write_bytes(_v2(shipped_bundle, ["a", "b"], np.ones((4, 64)), cls))
    with pytest.raises(StateError, match="sample_class"):
        FewShotClassifier.load(shipped_bundle, tmp_path / "s")


def test_ink_must_be_an_allowed_value(shipped_bundle, tmp_path):
    (tmp_path / "s").write_bytes(_v2(shipped_bundle, ["a", "b"], np.ones((4, 64)), [0, 0, 1, 1], {"ink": "sideways"}))
    with pytest.raises(StateError, match=r"ink is 'sideways'; expected one of \['high', 'low', 'auto'\]"):
        FewShotClassifier.load(shipped_bundle, tmp_path / "s")
    for ink in ("high", "low", "auto"):
        st = decode_state(_v2(shipped_bundle, ["a", "b"], np.ones((4, 64)), [0, 0, 1, 1], {"ink": ink}))
        assert st.meta["ink"] == ink


def _with_body(data: bytes, body: bytes) -> bytes:
    header, _ = _split(data)
    return _join({**header, "payload_bytes": len(body), "payload_sha256": hashlib.sha256(body).hexdigest()}, body)


@pytest.mark.parametrize("edit, message", [
    (lambda ix, d: (dict(ix, arrays=[{**ix["arrays"][0], "shape": [2**30, 2**30 - 1]}] + ix["arrays"][1:]), d),
     "needs 4611686014132420608 bytes"),
    (lambda ix, d: (dict(ix, arrays=[{**ix["arrays"][0], "dtype": "object"}] + ix["arrays"][1:]), d), "dtype 'object'"),
    (lambda ix, d: (ix, d + b"\0"), "1 bytes follow the last array"),
    (lambda ix, d: (dict(ix, extra=1), d), "index has keys"),
    (lambda ix, d: (dict(ix, meta={**ix["meta"], "bundle_id": "0" * 63}), d), "bundle_id is not"),
])
def test_index_lies_are_refused_before_allocating(shipped_bundle, edit, message):
    import struct

    data = _v2(shipped_bundle, ["a", "b"], np.ones((4, 64)), [0, 0, 1, 1])
    _, body = _split(data)
    (n,) = struct.unpack_from("<I", body)
    index, arrays = edit(json.loads(body[4:4 + n]), body[4 + n:])
    blob = json.dumps(index).encode()
    with pytest.raises(StateError, match=message):
        decode_state(_with_body(data, len(blob).to_bytes(4, "little") + blob + arrays))


@pytest.mark.parametrize("line, message", [
    (b'{"encryption": "none", "encryption": "none", "format": "edgemeta-state", "payload_bytes": 0, '
     b'"payload_sha256": "", "version": 2}', "duplicate key 'encryption'"),
    (b'{"x": ' + b"[" * 1500 + b"]" * 1500 + b"}", "nests deeper than 8 levels"),
    (b'{"x": ' + b"[" * 20 + b"]" * 20 + b"}", "nests deeper than 8 levels"),
    (b'{"payload_bytes": ' + b"9" * 3000 + b"}", "an integer of 3000 digits"),
    (b'{"payload_bytes": NaN}', "the constant NaN"),
    (b'{"version": 2' + b" " * 5000 + b"}", "header line is longer than 4096 bytes"),
    (b'{"version": 2}', r"header has keys \['version'\]; expected"),
])
def test_header_must_be_strict_bounded_json(shipped_bundle, line, message):
    with pytest.raises(StateError, match=message):
        decode_state(MAGIC + line + b"\n" + b"x" * 10)


def test_tampered_encrypted_version2_body_is_refused(shipped_bundle, tmp_path):
    key = os.urandom(32)
    data = _v2(shipped_bundle, ["a", "b"], np.ones((4, 64)), [0, 0, 1, 1], key=key)
    header, payload = _split(data)
    bad = payload[:-1] + bytes([payload[-1] ^ 1])
    with pytest.raises(StateError, match=r"wrong key \(or altered ciphertext\)"):
        decode_state(_with_body(data, bad), key)
    with pytest.raises(StateError, match="shorter than nonce \\+ tag"):
        decode_state(_with_body(data, payload[:20]), key)


# ---- the fuzzer -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_state_fuzzer_500_mutants_none_escape():
    """500 hostile mutants of real saved states (plain, encrypted, version 1): every one is refused
    with a StateError or loads and predicts finite probabilities; `edgemeta predict` prints no traceback."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "tools/fuzz/state_fuzz.py"), "--mutants", "500", "--seed", "0",
                           "--cli", "3", "--json"], capture_output=True, text=True, timeout=1800, cwd=root)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["mutants"] == 500 and result["escaped"] == 0, result["escapes"]
    assert result["refused"] > 400 and result["cli_runs"] == 3 and not result["cli_tracebacks"]
