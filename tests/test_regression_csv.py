"""Regression samples from CSV files and the CLI's regression paths (adapt/predict/forget --csv, eval):
well-formed files read exactly; ragged rows, non-numbers, NaN/inf, huge files and binary data refused
with an InputError naming the row; the CLI writes JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgemeta.cli import app
from edgemeta.contract import regression_csv
from edgemeta.contract.regression_csv import read_samples
from edgemeta.errors import InputError

MODELS = Path(__file__).resolve().parents[1] / "models"
BUNDLES = [MODELS / f"sinusoid-{m}" for m in ("alpaca", "metasgd") if (MODELS / f"sinusoid-{m}" / "manifest.json").exists()]


def _write(tmp_path: Path, text: str | bytes, name: str = "s.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_reads_rows_with_a_header_blank_lines_and_spaces(tmp_path):
    p = _write(tmp_path, "x,y\n1, 2.5\n\n-3e-1,+4\r\n.5,6.\n")
    np.testing.assert_array_equal(read_samples(p, 2), [[1, 2.5], [-0.3, 4], [0.5, 6]])


@pytest.mark.parametrize("text, row", [
    ("1,2\n3\n", "row 2 has 1 fields"),
    ("1,2\n3,4,5\n", "row 2 has 3 fields"),
    ("1,2\n3,abc\n", "row 2 column 2: 'abc' is not a number"),
    ("1,nan\n", "row 1 column 2: 'nan'"),
    ("1,inf\n", "row 1 column 2: 'inf'"),
    ("1,1_000\n", "not a number"),
    ("1,0x10\n", "not a number"),
    ("1,1e39\n", "beyond"),
    ("1,2\n3,1e99999\n", "row 2"),
    ("", "no rows"),
    ("x,y\n", "no rows"),
    ('1,"2\n', "not valid CSV"),
])
def test_hostile_csv_is_refused_naming_the_row(tmp_path, text, row):
    with pytest.raises(InputError, match=row.replace("(", r"\(")):
        read_samples(_write(tmp_path, text), 2)


def test_binary_and_non_utf8_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="UTF-8"):
        read_samples(_write(tmp_path, b"1,2\n\xff\xfe,3\n"), 2)
    with pytest.raises(InputError):
        read_samples(_write(tmp_path, b"1,2\n3,\x004\n"), 2)


def test_oversized_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(regression_csv, "MAX_BYTES", 100)
    p = _write(tmp_path, "1,2\n" * 100)
    with pytest.raises(InputError, match="at most 100 bytes"):
        read_samples(p, 2)
    monkeypatch.setattr(regression_csv, "MAX_ROWS", 3)
    monkeypatch.setattr(regression_csv, "MAX_BYTES", 1 << 20)
    with pytest.raises(InputError, match="more than 3 rows"):
        read_samples(p, 2)


def test_folder_and_missing_file_are_refused(tmp_path):
    with pytest.raises(InputError, match="not a regular file"):
        read_samples(tmp_path, 2)
    with pytest.raises(InputError, match="cannot read"):
        read_samples(tmp_path / "none.csv", 2)


@pytest.mark.skipif(not BUNDLES, reason="no shipped sinusoid bundle in models/")
@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_cli_adapt_predict_forget_write_json(tmp_path, bundle):
    rng = np.random.default_rng(0)
    x = rng.uniform(-5, 5, 16)
    y = 3 * np.sin(x - 0.5)
    a = _write(tmp_path, "x,y\n" + "".join(f"{u},{v}\n" for u, v in zip(x[:8], y[:8])), "a.csv")
    b = _write(tmp_path, "".join(f"{u},{v}\n" for u, v in zip(x[8:], y[8:])), "b.csv")
    q = _write(tmp_path, "x\n-2\n0.5\n3\n", "q.csv")
    state = tmp_path / "me.state"
    run = CliRunner().invoke
    r = run(app, ["adapt", str(bundle), "--csv", str(a), "--state", str(state), "--group", "sensor-a"])
    assert r.exit_code == 0, r.output
    r = run(app, ["adapt", str(bundle), "--csv", str(b), "--state", str(state), "--group", "sensor-b"])
    assert json.loads(r.output) == {"state": str(state), "added": 8, "group": "sensor-b",
                                    "groups": {"sensor-a": 8, "sensor-b": 8}, "samples": 16}
    r = run(app, ["predict", str(bundle), "--csv", str(q), "--state", str(state)])
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [o["row"] for o in rows] == [1, 2, 3]
    truth = 3 * np.sin(np.array([-2, 0.5, 3]) - 0.5)
    assert np.abs(np.array([o["prediction"] for o in rows]) - truth).max() < 0.3
    assert all(("std" in o) == ("alpaca" in bundle.name) for o in rows)
    r = run(app, ["forget", str(bundle), "sensor-b", "--state", str(state)])
    assert json.loads(r.output)["groups"] == ["sensor-a"] and json.loads(r.output)["samples"] == 8
    r = run(app, ["predict", str(bundle), "--csv", str(_write(tmp_path, "1,2\n", "bad.csv")), "--state", str(state)])
    assert r.exit_code == 2 and "row 1 has 2 fields; expected 1" in r.output
    r = run(app, ["adapt", str(MODELS / "omniglot-conv4-proto"), "--csv", str(a), "--state", str(tmp_path / "c.state")])
    assert r.exit_code == 2 and "--csv is for regression bundles" in r.output
    r = run(app, ["adapt", str(bundle), "--state", str(tmp_path / "c.state")])
    assert r.exit_code == 2 and "--csv FILE" in r.output


@pytest.mark.skipif(not BUNDLES, reason="no shipped sinusoid bundle in models/")
def test_cli_eval_reports_mse_per_support_size():
    r = CliRunner().invoke(app, ["eval", str(BUNDLES[0]), "--episodes", "20", "--support", "5", "--support", "10",
                                 "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["support"] == [5, 10] and set(out["mse"]) == {"5", "10"} and out["tasks"] == 20
    assert 0 < out["mse"]["10"] < 0.1 and out["queries"] == 100 and "test task stream" in out["split"]


@pytest.mark.skipif(not BUNDLES, reason="no shipped sinusoid bundle in models/")
def test_cli_regression_state_encrypted_with_key_env(tmp_path, monkeypatch):
    pytest.importorskip("cryptography")
    monkeypatch.setenv("EDGEMETA_TEST_KEY", "ab" * 32)
    s = _write(tmp_path, "".join(f"{v},{np.sin(v)}\n" for v in np.linspace(-4, 4, 9)), "s.csv")
    q = _write(tmp_path, "0.5\n", "q.csv")
    state, run = tmp_path / "me.state", CliRunner().invoke
    r = run(app, ["adapt", str(BUNDLES[0]), "--csv", str(s), "--state", str(state), "--key-env", "EDGEMETA_TEST_KEY"])
    assert r.exit_code == 0, r.output
    assert b'"encryption": "aes-256-gcm"' in state.read_bytes()
    r = run(app, ["predict", str(BUNDLES[0]), "--csv", str(q), "--state", str(state)])
    assert r.exit_code == 2 and "encrypted" in r.output
    r = run(app, ["predict", str(BUNDLES[0]), "--csv", str(q), "--state", str(state), "--key-env", "EDGEMETA_TEST_KEY"])
    assert r.exit_code == 0 and abs(json.loads(r.output)["prediction"] - np.sin(0.5)) < 0.3
