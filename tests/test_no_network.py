"""The device path never touches the network: every connection attempt fails and is recorded."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgemeta.runtime import Bundle, FewShotClassifier

# Installed in this process by the fixture, and verbatim at the start of the subprocess below.
GUARD = """
import socket

ATTEMPTS = []


class NetworkBlocked(OSError):
    pass


def _blocked(name):
    def fail(*args, **kwargs):
        ATTEMPTS.append([name, repr(args)[:200]])
        raise NetworkBlocked(f"network access attempted: {name}")
    return fail


socket.socket.connect = _blocked("socket.connect")
socket.socket.connect_ex = _blocked("socket.connect_ex")
socket.socket.sendto = _blocked("socket.sendto")
socket.create_connection = _blocked("create_connection")
socket.getaddrinfo = _blocked("getaddrinfo")
socket.gethostbyname = _blocked("gethostbyname")
"""


@pytest.fixture
def no_network(monkeypatch):
    """Every way out through Python's socket module raises; returns the list of attempts."""
    attempts: list[tuple[str, str]] = []

    def blocked(name):
        def fail(*args, **kwargs):
            attempts.append((name, repr(args)[:200]))
            raise OSError(f"network access attempted: {name}")
        return fail

    for attr in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, attr, blocked(f"socket.{attr}"))
    for attr in ("create_connection", "getaddrinfo", "gethostbyname"):
        monkeypatch.setattr(socket, attr, blocked(attr))
    return attempts


def test_the_guard_blocks_and_records(no_network):
    with pytest.raises(OSError, match="network access attempted"):
        socket.create_connection(("example.com", 80), timeout=1)
    with pytest.raises(OSError, match="network access attempted"):
        socket.getaddrinfo("localhost", 80)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(OSError, match="network access attempted"):
            s.connect(("127.0.0.1", 9))
        with pytest.raises(OSError, match="network access attempted"):
            s.connect_ex(("127.0.0.1", 9))
    finally:
        s.close()
    assert [a[0] for a in no_network] == ["create_connection", "getaddrinfo", "socket.connect", "socket.connect_ex"]


def test_whole_runtime_path_without_network(no_network, bundle_dir, task, tmp_path):
    sx, sy, qx, qy = task
    b = Bundle.load(bundle_dir)
    classes = np.unique(sy)
    first = np.isin(sy, classes[:3])
    clf = FewShotClassifier(b).fit(sx[first], sy[first])
    clf.partial_fit(sx[~first], sy[~first])
    assert clf.classes_.tolist() == classes.tolist()
    pred = clf.predict(qx, reject_unknown=True)
    assert (pred == qy).mean() >= 0.6
    proba = clf.predict_proba(qx)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    clf.save(tmp_path / "state.bin")
    key = os.urandom(32)
    clf.save(tmp_path / "state.enc", key=key)
    back = FewShotClassifier.load(str(bundle_dir), tmp_path / "state.bin")
    np.testing.assert_array_equal(back.predict(qx), clf.predict(qx))
    enc = FewShotClassifier.load(b, tmp_path / "state.enc", key=key)
    enc.forget(classes[0])
    enc.save(tmp_path / "state.enc", key=key)
    assert classes[0] not in FewShotClassifier.load(b, tmp_path / "state.enc", key=key).class_counts()
    assert no_network == []


def test_runtime_in_a_fresh_interpreter_without_network_or_torch(bundle_dir, task, tmp_path):
    """Only ``edgemeta.runtime`` imported, sockets blocked before anything else is imported."""
    sx, sy, qx, qy = task
    np.savez(tmp_path / "task.npz", sx=sx, sy=sy, qx=qx, qy=qy)
    code = GUARD + textwrap.dedent(f"""
        import json, os, sys
        import numpy as np
        from edgemeta.runtime import Bundle, FewShotClassifier
        t = np.load({str(tmp_path / "task.npz")!r}, allow_pickle=False)
        sx, sy, qx, qy = t["sx"], t["sy"], t["qx"], t["qy"]
        b = Bundle.load({str(bundle_dir)!r})
        classes = np.unique(sy)
        first = np.isin(sy, classes[:3])
        clf = FewShotClassifier(b).fit(sx[first], sy[first]).partial_fit(sx[~first], sy[~first])
        pred = clf.predict(qx, reject_unknown=True)
        key = os.urandom(32)
        clf.save({str(tmp_path / "s.bin")!r}, key=key)
        clf = FewShotClassifier.load(b, {str(tmp_path / "s.bin")!r}, key=key)
        clf.forget(classes[0])
        clf.save({str(tmp_path / "s.bin")!r}, key=key)
        after = FewShotClassifier.load(b, {str(tmp_path / "s.bin")!r}, key=key).predict(qx).tolist()
        heavy = sorted(m for m in ("torch", "onnx", "tqdm", "requests", "urllib3", "http.client")
                       if m in sys.modules)
        attempts = list(ATTEMPTS)
        try:                                   # the guard itself works in this interpreter
            socket.create_connection(("example.com", 80), timeout=1)
            guard = False
        except NetworkBlocked:
            guard = len(ATTEMPTS) == len(attempts) + 1
        print(json.dumps({{"attempts": attempts, "guard": guard, "heavy": heavy, "torch": "torch" in sys.modules,
                          "acc": float((pred == qy).mean()), "after": after}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "no_proxy": "*"})
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["guard"] is True
    assert res["attempts"] == []
    assert res["torch"] is False
    assert res["heavy"] == [], res["heavy"]
    assert res["acc"] >= 0.6
    assert np.unique(sy)[0] not in res["after"]
