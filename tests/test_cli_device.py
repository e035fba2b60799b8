"""The device commands of the CLI (`adapt`, `predict`, `forget`) on PNG folders, with and without a key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgemeta.cli import app
from edgemeta.runtime import FewShotClassifier
from edgemeta.runtime.state import MAGIC

NAMES = ["alpha", "beta", "gamma", "delta", "epsilon"]
KEY_HEX = "00112233445566778899aabbccddeeff" * 2


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def drawings(vinyals_test, task_drawer):
    """5 never-seen Vinyals test characters: 5 support + 3 query drawings each, as the labels NAMES."""
    sx, sy, qx, qy = task_drawer(vinyals_test, 5, 5, 3, seed=77)
    rename = {c: n for c, n in zip(dict.fromkeys(sy.tolist()), NAMES)}
    return sx, np.array([rename[c] for c in sy]), qx, np.array([rename[c] for c in qy])


def write_png(path: Path, img: np.ndarray) -> None:
    """Dark ink on white paper, upscaled 3x (84x84) like a scan; nearest resizing recovers the 28x28."""
    paper = ((1.0 - np.kron(img, np.ones((3, 3), np.float32))) * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(paper).save(path)


def support_folder(root: Path, x: np.ndarray, y: np.ndarray, names: list[str]) -> Path:
    for n in names:
        for i, img in enumerate(x[y == n]):
            write_png(root / n / f"{i:02d}.png", img)
    return root


@pytest.fixture(scope="module")
def files(drawings, tmp_path_factory):
    """``(support root of 3 classes, support root of 1 more class, {query png: true label})``."""
    sx, sy, qx, qy = drawings
    tmp = tmp_path_factory.mktemp("cli_device")
    first = support_folder(tmp / "support1", sx, sy, NAMES[:3])
    second = support_folder(tmp / "support2", sx, sy, NAMES[3:4])
    queries = {}
    for i, (img, lab) in enumerate(zip(qx, qy)):
        p = tmp / "queries" / f"q{i:02d}_{lab}.png"
        write_png(p, img)
        queries[p] = lab
    return first, second, queries


def predict_json(runner, bundle_dir, state, paths, *extra, env=None):
    res = runner.invoke(app, ["predict", str(bundle_dir), *map(str, paths), "--state", str(state), "--json", *extra],
                        env=env)
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == len(paths)
    return lines


def test_adapt_add_predict_forget(runner, shipped_bundle_dir, files, tmp_path):
    first, second, queries = files
    state = tmp_path / "me" / "state.bin"
    res = runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(first), "--state", str(state)])
    assert res.exit_code == 0, res.output
    assert state.is_file() and state.read_bytes().startswith(MAGIC)
    assert "3 classes" in res.stdout and "alpha (5)" in res.stdout
    clf = FewShotClassifier.load(shipped_bundle_dir, state)
    assert clf.class_counts() == {"alpha": 5, "beta": 5, "gamma": 5}
    assert clf.ink == "low"                                  # auto-detected: dark strokes on white paper

    # a second adapt adds a class to the same state
    res = runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(second), "--state", str(state)])
    assert res.exit_code == 0, res.output
    assert "4 classes" in res.stdout and "delta (5)" in res.stdout
    assert FewShotClassifier.load(shipped_bundle_dir, state).class_counts() == {n: 5 for n in NAMES[:4]}

    known = {p: lab for p, lab in queries.items() if lab in NAMES[:4]}
    out = predict_json(runner, shipped_bundle_dir, state, list(known))
    for row, (p, lab) in zip(out, known.items()):
        assert row["image"] == str(p)
        assert set(row) >= {"image", "label", "confidence", "max_logit"}
        assert isinstance(row["label"], str) and 0.0 < row["confidence"] <= 1.0
        assert row["label"] in NAMES[:4] + ["unknown"]
    right = sum(row["label"] == lab for row, lab in zip(out, known.values()))
    assert right >= 0.75 * len(known), out
    # without the unknown answer every label is a class
    closed = predict_json(runner, shipped_bundle_dir, state, list(known), "--no-unknown")
    assert all(row["label"] in NAMES[:4] for row in closed)
    assert sum(row["label"] == lab for row, lab in zip(closed, known.values())) >= 0.8 * len(known)
    # the plain text output: path, label, confidence per line
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), str(next(iter(known))), "--state", str(state)])
    assert res.exit_code == 0, res.output
    path, label, conf = res.stdout.strip().split("\t")
    assert path == str(next(iter(known))) and label in NAMES[:4] + ["unknown"] and 0 < float(conf) <= 1

    # forget a class
    res = runner.invoke(app, ["forget", str(shipped_bundle_dir), "delta", "--state", str(state)])
    assert res.exit_code == 0, res.output
    assert "forgot 'delta'" in res.stdout
    assert FewShotClassifier.load(shipped_bundle_dir, state).class_counts() == {n: 5 for n in NAMES[:3]}
    assert b"delta" not in state.read_bytes()
    after = predict_json(runner, shipped_bundle_dir, state, list(known))
    assert all(row["label"] != "delta" for row in after)

    # forgetting an unknown label: exit 2, a clear message, the state untouched
    before = state.read_bytes()
    res = runner.invoke(app, ["forget", str(shipped_bundle_dir), "zeta", "--state", str(state)])
    assert res.exit_code == 2
    assert "error:" in res.stderr and "cannot forget 'zeta': not a registered class" in res.stderr
    for n in NAMES[:3]:
        assert n in res.stderr
    assert state.read_bytes() == before


def test_predict_without_state_and_with_another_bundle(runner, shipped_bundle_dir, bundle_dir, files, tmp_path):
    first, _, queries = files
    q = [str(next(iter(queries)))]
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), *q, "--state", str(tmp_path / "none.bin")])
    assert res.exit_code == 2 and "no state file at" in res.stderr
    state = tmp_path / "s.bin"
    assert runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(first),
                               "--state", str(state)]).exit_code == 0
    res = runner.invoke(app, ["predict", str(bundle_dir), *q, "--state", str(state)])
    assert res.exit_code == 2 and "saved for another bundle" in res.stderr


def test_encrypted_state_round_trip(runner, shipped_bundle_dir, files, tmp_path):
    first, second, queries = files
    state = tmp_path / "state.enc"
    env = {"EDGEMETA_TEST_KEY": KEY_HEX}
    args = ["--state", str(state), "--key-env", "EDGEMETA_TEST_KEY"]
    res = runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(first), *args], env=env)
    assert res.exit_code == 0, res.output
    data = state.read_bytes()
    assert b'"encryption": "aes-256-gcm"' in data
    assert not any(n.encode() in data for n in NAMES)
    res = runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(second), *args], env=env)
    assert res.exit_code == 0, res.output
    assert "4 classes" in res.stdout
    assert FewShotClassifier.load(shipped_bundle_dir, state, key=bytes.fromhex(KEY_HEX)).class_counts() == \
        {n: 5 for n in NAMES[:4]}
    known = [p for p, lab in queries.items() if lab in NAMES[:4]]
    out = predict_json(runner, shipped_bundle_dir, state, known, *args[2:], env=env)
    assert sum(row["label"] == queries[p] for row, p in zip(out, known)) >= 0.75 * len(known)
    res = runner.invoke(app, ["forget", str(shipped_bundle_dir), "beta", *args], env=env)
    assert res.exit_code == 0, res.output
    assert FewShotClassifier.load(shipped_bundle_dir, state, key=bytes.fromhex(KEY_HEX)).class_counts() == \
        {n: 5 for n in ("alpha", "delta", "gamma")}

    q = [str(known[0])]
    # the wrong key
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), *q, *args], env={"EDGEMETA_TEST_KEY": "ff" * 32})
    assert res.exit_code == 2 and "wrong key" in res.stderr
    # no key at all
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), *q, "--state", str(state)])
    assert res.exit_code == 2 and "is encrypted; pass the key" in res.stderr
    # a malformed key, an unset variable
    for bad in ("not-hex" * 9, "abcd"):
        res = runner.invoke(app, ["predict", str(shipped_bundle_dir), *q, *args], env={"EDGEMETA_TEST_KEY": bad})
        assert res.exit_code == 2 and "must hold 64 hex digits" in res.stderr
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), *q, *args], env={"EDGEMETA_TEST_KEY": ""})
    assert res.exit_code == 2 and "EDGEMETA_TEST_KEY" in res.stderr and "not set" in res.stderr
    # a key for a plain state
    plain = tmp_path / "plain.bin"
    assert runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(first),
                               "--state", str(plain)]).exit_code == 0
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), *q, "--state", str(plain),
                              "--key-env", "EDGEMETA_TEST_KEY"], env=env)
    assert res.exit_code == 2 and "not encrypted but a key was given" in res.stderr
    # a wrong key does not let adapt overwrite (and so destroy) the encrypted state
    before = state.read_bytes()
    res = runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(second), *args],
                        env={"EDGEMETA_TEST_KEY": "ff" * 32})
    assert res.exit_code == 2 and "wrong key" in res.stderr
    assert state.read_bytes() == before


def test_adapt_on_a_bad_support_folder(runner, shipped_bundle_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(tmp_path / "empty"),
                              "--state", str(tmp_path / "s.bin")])
    assert res.exit_code == 2 and "holds no class folders with images" in res.stderr
    assert not (tmp_path / "s.bin").exists()
    res = runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(tmp_path / "missing"),
                              "--state", str(tmp_path / "s.bin")])
    assert res.exit_code == 2 and "is not a folder" in res.stderr


# ---- messages and folders, without Omniglot: synthetic drawings are enough to exercise the paths ----------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """``root/support/{bar,ring}/*.png`` (3 drawings each) and ``root/queries/*.png`` (4 drawings)."""
    root = tmp_path_factory.mktemp("synthetic")
    yy, xx = np.mgrid[:28, :28]
    for i in range(3):
        bar = np.zeros((28, 28), np.float32)
        bar[:, 10 + i:16 + i] = 1.0
        ring = ((np.hypot(yy - 14, xx - 14 - i) - 8).__abs__() < 2).astype(np.float32)
        write_png(root / "support" / "bar" / f"{i}.png", bar)
        write_png(root / "support" / "ring" / f"{i}.png", ring)
        write_png(root / "queries" / f"q{i}.png", bar if i % 2 else ring)
    write_png(root / "queries" / "q3.png", ring)
    return root


def test_predict_a_folder_classifies_every_image_in_it(runner, shipped_bundle_dir, synthetic, tmp_path):
    state = tmp_path / "s.bin"
    res = runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(synthetic / "support"),
                              "--state", str(state)])
    assert res.exit_code == 0, res.output
    (synthetic / "queries" / "notes.txt").write_text("not an image; skipped in a folder")
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), str(synthetic / "queries"), "--state", str(state),
                              "--json", "--no-unknown"])
    assert res.exit_code == 0, res.output
    out = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert [row["image"] for row in out] == [str(synthetic / "queries" / f"q{i}.png") for i in range(4)]
    assert [row["label"] for row in out] == ["ring", "bar", "ring", "ring"]


def test_predict_messages_name_what_is_wrong(runner, shipped_bundle_dir, synthetic, tmp_path):
    one = tmp_path / "one.bin"
    res = runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(synthetic / "support"),
                              "--state", str(one)])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["forget", str(shipped_bundle_dir), "bar", "--state", str(one)]).exit_code == 0
    q = str(synthetic / "queries" / "q0.png")
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), q, "--state", str(one)])
    assert res.exit_code == 2
    assert "holds 1 class (ring)" in res.stderr and "edgemeta adapt" in res.stderr and "--support" in res.stderr
    assert "fit(" not in res.stderr

    two = tmp_path / "two.bin"
    assert runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(synthetic / "support"),
                               "--state", str(two)]).exit_code == 0
    missing = tmp_path / "nope.png"
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), str(missing), "--state", str(two)])
    assert res.exit_code == 2 and f"{missing}: no such file or folder" in res.stderr
    text = tmp_path / "notes.png"
    text.write_text("hello")
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), str(text), "--state", str(two)])
    assert res.exit_code == 2 and f"{text} is not an image Pillow can read" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), str(empty), "--state", str(two)])
    assert res.exit_code == 2 and f"{empty} is a folder with no image files" in res.stderr
    assert "Traceback" not in res.output and "Errno" not in res.output


# ---- a colour bundle on folders of real photos (JPEG and PNG, mixed sizes, upper-case suffixes) ----------
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mini-imagenet" / "sample"


@pytest.fixture(scope="module")
def photo_folders(tmp_path_factory) -> Path:
    """``root/support/<synset>/`` (3 photos each of 3 classes) and ``root/queries/`` (2 more of each),
    re-saved from the mini-ImageNet sample as .JPG / .png / .jpeg at mixed sizes, one with an EXIF turn."""
    classes = sorted(d for d in (SAMPLE / "test").iterdir() if d.is_dir())[:3] if SAMPLE.is_dir() else []
    if not classes:
        pytest.skip(f"mini-ImageNet sample not found at {SAMPLE} (see ../shared/data/mini-imagenet/README.md)")
    root = tmp_path_factory.mktemp("photos")
    exif = Image.Exif()
    exif[0x0112] = 6
    for c, d in enumerate(classes):
        for k, f in enumerate(sorted(d.glob("*.jpg"))[:5]):
            with Image.open(f) as im:
                im = im.convert("RGB").resize((84 + 40 * k, 84 + 13 * c))
            folder = root / "support" / d.name if k < 3 else root / "queries"
            folder.mkdir(parents=True, exist_ok=True)
            suffix = (".JPG", ".png", ".jpeg")[(k + c) % 3]
            im.save(folder / f"{d.name}_{k}{suffix}", exif=exif if k == 4 else Image.Exif())
    (root / "queries" / "notes.txt").write_text("not an image; skipped in a folder")
    return root


def test_colour_bundle_adapts_and_predicts_photo_folders(runner, colour_bundle_dir, photo_folders, tmp_path):
    from edgemeta.contract.image_files import decode_image

    state = tmp_path / "photos.bin"
    res = runner.invoke(app, ["adapt", str(colour_bundle_dir), "--support", str(photo_folders / "support"),
                              "--state", str(state)])
    assert res.exit_code == 0, res.output
    clf = FewShotClassifier.load(colour_bundle_dir, state)
    support = sorted((photo_folders / "support").iterdir())
    assert clf.class_counts() == {d.name: 3 for d in support}
    queries = sorted(p for p in (photo_folders / "queries").iterdir() if p.suffix != ".txt")
    assert len(queries) == 6 and {p.suffix for p in queries} == {".JPG", ".png", ".jpeg"}
    res = runner.invoke(app, ["predict", str(colour_bundle_dir), str(photo_folders / "queries"), "--state",
                              str(state), "--json", "--no-unknown"])
    assert res.exit_code == 0, res.output
    out = [json.loads(line) for line in res.stdout.splitlines()]
    assert [row["image"] for row in out] == [str(p) for p in queries]
    # the same answers as the library on the decoder's arrays (the CLI has no decoder of its own)
    same = FewShotClassifier(colour_bundle_dir)
    files = [f for d in support for f in sorted(d.iterdir())]
    same.fit([decode_image(f, (84, 84), 3) for f in files], [f.parent.name for f in files])
    logits = same.decision_function([decode_image(q, (84, 84), 3) for q in queries])
    assert [row["label"] for row in out] == same.classes_[logits.argmax(1)].tolist()
    assert np.allclose([row["max_logit"] for row in out], logits.max(1), atol=1e-4)
    # files named one by one give the same lines as their folder
    res = runner.invoke(app, ["predict", str(colour_bundle_dir), *map(str, queries), "--state", str(state),
                              "--json", "--no-unknown"])
    assert res.exit_code == 0 and [json.loads(line) for line in res.stdout.splitlines()] == out


def test_text_output_cannot_be_forged_by_class_or_file_names(runner, shipped_bundle_dir, drawings, tmp_path):
    """A class folder named with a tab and a newline must not add fields or lines to `predict`'s output."""
    sx, sy, qx, _ = drawings
    forged = "alpha\tfake\nq99.png"
    root = tmp_path / "support"
    for name, real in ((forged, NAMES[0]), ("beta", NAMES[1])):
        for i, img in enumerate(sx[sy == real]):
            write_png(root / name / f"{i:02d}.png", img)
    queries = [tmp_path / f"q{i}.png" for i in range(3)]
    for p, img in zip(queries, qx[:3]):
        write_png(p, img)
    state = tmp_path / "s.state"
    assert runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(root), "--state", str(state)]).exit_code == 0
    res = runner.invoke(app, ["predict", str(shipped_bundle_dir), *map(str, queries), "--state", str(state)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 3 and all(len(line.split("\t")) == 3 for line in lines), lines


@pytest.mark.parametrize("args", [["--repeats", "0"], ["--threads", "0"]])
def test_bench_refuses_nonpositive_counts(runner, shipped_bundle_dir, args):
    res = runner.invoke(app, ["bench", str(shipped_bundle_dir), *args])
    assert res.exit_code == 2 and "nan" not in res.output


@pytest.mark.parametrize("command", [
    ["adapt", "", "--support", "{tmp}", "--state", "{tmp}/s.state"],
    ["adapt", "{bundle}", "--support", "", "--state", "{tmp}/s.state"],
    ["adapt", "{bundle}", "--support", "{tmp}", "--state", ""],
    ["predict", "{bundle}", "", "--state", "{tmp}/s.state"],
    ["predict", "{bundle}", "{tmp}/q.png", "", "--state", "{tmp}/s.state"],
    ["predict", "{bundle}", "{tmp}/q.png", "--state", ""],
    ["forget", "{bundle}", "a", "--state", ""],
])
def test_empty_path_arguments_are_refused(runner, shipped_bundle_dir, tmp_path, command):
    args = [a.format(bundle=shipped_bundle_dir, tmp=tmp_path) for a in command]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "an empty path was given; expected a file or folder path ('.' for the current folder)" in \
        " ".join(res.output.replace("│", " ").split())
    assert list(tmp_path.iterdir()) == []                    # nothing written, "." never read


def test_state_under_a_file_is_named_before_any_work(runner, shipped_bundle_dir, tmp_path):
    blocker = tmp_path / "photo.png"
    blocker.write_bytes(b"a file, not a folder")
    state = blocker / "me.state"
    res = runner.invoke(app, ["adapt", str(shipped_bundle_dir), "--support", str(tmp_path / "absent"),
                              "--state", str(state)])
    assert res.exit_code == 2, res.output
    assert f"--state {state}: {blocker} is a file, not a folder; expected a folder to keep the state in" in res.stderr
    res = runner.invoke(app, ["forget", str(shipped_bundle_dir), "a", "--state", str(state)])
    assert res.exit_code == 2 and f"no state file at {state}: {blocker} is a file, not a folder" in res.stderr
