"""Official Omniglot zips (or their unzipped folders) -> the class-grouped files edgemeta reads.

Input: ``images_background.zip`` / ``images_evaluation.zip`` from ``github.com/brendenlake/omniglot``
(``python/`` folder), or the folders they unzip to, laid out as
``images_background/<Alphabet>/characterNN/XXXX_YY.png`` (105x105 1-bit PNG, black ink on white,
``XXXX`` the global character id, ``YY`` the drawing 01..20).

Output (``--out DIR``): ``background.npz`` / ``evaluation.npz`` with ``images`` uint8
``[n_chars, 20, 105, 105]`` (1 = ink), ``alphabet`` str, ``character`` int16 and ``char_id`` int16,
rows sorted by ``char_id``. Zips are checked against the md5 torchvision publishes for them first.
Members are read one at a time and each character is written as soon as it is decoded, so memory
stays at a few MB whatever the archive size.

    python -m edgemeta.data.prepare_omniglot images_background.zip images_evaluation.zip --out data/omniglot
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import stat
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from edgemeta.errors import EdgemetaError, InputError

PUBLISHED_MD5 = {"images_background": "68d2efa1b9178cc56df9314c21c6e718",
                 "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811"}
OUTPUT_FILE = {"images_background": "background.npz", "images_evaluation": "evaluation.npz"}
SIDE = 105                    # drawings are 105x105
DRAWINGS = 20                 # drawings per character
MAX_PNG_BYTES = 64 * 1024     # the official PNGs are a few hundred bytes each
MAX_MEMBERS = 100_000         # the two official zips hold 19,280 and 13,180 drawings
MEMBER = re.compile(r"(images_background|images_evaluation)/([^/]+)/character(\d\d)/(\d{4})_(\d\d)\.png")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OS_METADATA = ("__MACOSX", ".DS_Store", "Thumbs.db")   # archivers' own entries: skipped, never read


@dataclass
class Character:
    """One character's drawings: ``drawings[yy]`` opens drawing ``yy`` (1..20) as PNG bytes."""

    alphabet: str
    character: int
    drawings: dict[int, Callable[[], bytes]] = field(default_factory=dict)


def file_md5(path: Path) -> str:
    """md5 of a file, read 1 MiB at a time."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checked_name(name: str, where: str) -> re.Match[str]:
    """The parts of one member path, or an :class:`InputError` for anything outside the layout."""
    parts = name.split("/")
    if "\\" in name or name.startswith("/") or ":" in parts[0] or any(p in ("", ".", "..") for p in parts):
        raise InputError(f"{where}: unsafe member name {name!r} (absolute, '..' or backslash); "
                         f"expected images_background/<alphabet>/characterNN/XXXX_YY.png")
    m = MEMBER.fullmatch(name)
    if m is None:
        raise InputError(f"{where}: unexpected member {name!r}; expected "
                         f"images_background/<alphabet>/characterNN/XXXX_YY.png (or images_evaluation/...)")
    return m


def _add(groups: dict[str, dict[int, Character]], name: str, where: str, read: Callable[[], bytes]) -> None:
    """File one drawing under its character, refusing duplicates and inconsistent folders."""
    parts = name.split("/")
    if any(p in OS_METADATA for p in parts) and ".." not in parts and not name.startswith("/") and "\\" not in name:
        return
    kind, alphabet, character, char_id, drawing = _checked_name(name, where).groups()
    cid, yy = int(char_id), int(drawing)
    if not 1 <= yy <= DRAWINGS:
        raise InputError(f"{where}: {name!r} is drawing {yy}; expected drawings 01..{DRAWINGS}")
    chars = groups.setdefault(kind, {})
    c = chars.setdefault(cid, Character(alphabet, int(character)))
    if (c.alphabet, c.character) != (alphabet, int(character)):
        raise InputError(f"{where}: character id {cid:04d} appears in {c.alphabet}/character{c.character:02d} "
                         f"and in {alphabet}/character{character}; expected one folder per character id")
    if yy in c.drawings:
        raise InputError(f"{where}: drawing {name!r} appears twice")
    c.drawings[yy] = read


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with zf.open(info) as f:
                data = f.read(MAX_PNG_BYTES + 1)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, OSError, EOFError) as exc:
            raise InputError(f"{where}: {info.filename!r} cannot be unpacked ({type(exc).__name__}: {exc}); "
                             f"expected a plain stored or deflated PNG member (the zip is damaged or not "
                             f"Omniglot's)") from None
        if len(data) > MAX_PNG_BYTES:
            raise InputError(f"{where}: {info.filename!r} unpacks to more than {MAX_PNG_BYTES} bytes "
                             f"(its header said {info.file_size}); expected a small 105x105 1-bit PNG")
        return data
    return read


def _read_file(path: Path, name: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise InputError(f"{path}: cannot be opened ({exc.strerror}); expected a 105x105 1-bit PNG ({name})") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"{path}: not a regular file; expected a 105x105 1-bit PNG ({name})")
            if st.st_size > MAX_PNG_BYTES:
                raise InputError(f"{path}: {st.st_size} bytes; expected a small 105x105 1-bit PNG ({name})")
            return f.read(MAX_PNG_BYTES + 1)
    return read


def scan_zip(zf: zipfile.ZipFile, where: str, groups: dict[str, dict[int, Character]]) -> None:
    """Index every drawing of an open zip (names only; nothing is decompressed yet)."""
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) > MAX_MEMBERS:
        raise InputError(f"{where}: {len(infos)} members; an Omniglot zip holds at most {MAX_MEMBERS}")
    for info in infos:
        if info.file_size > MAX_PNG_BYTES:
            raise InputError(f"{where}: {info.filename!r} unpacks to {info.file_size} bytes, more than "
                             f"{MAX_PNG_BYTES}; expected a small 105x105 1-bit PNG")
        _add(groups, info.filename, where, _read_member(zf, info, where))


def scan_folder(root: Path, groups: dict[str, dict[int, Character]]) -> None:
    """Index every drawing under an unzipped ``images_background``/``images_evaluation`` folder
    (or a folder holding them). Symbolic links are refused, never followed."""
    top = root.parent if root.name in OUTPUT_FILE else root
    found = False
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                raise InputError(f"{Path(dirpath) / d}: a symbolic link; expected plain folders of PNG files")
        for fname in filenames:
            path = Path(dirpath) / fname
            if path.is_symlink():
                raise InputError(f"{path}: a symbolic link; expected a plain 105x105 1-bit PNG file")
            _add(groups, path.relative_to(top).as_posix(), str(root), _read_file(path, fname))
            found = True
    if not found:
        raise InputError(f"{root}: no drawings; expected images_background/<alphabet>/characterNN/XXXX_YY.png")


def decode_drawing(data: bytes, what: str) -> np.ndarray:
    """One official PNG -> uint8 ``[105, 105]`` with 1 = ink (the PNG's black pixels)."""
    from PIL import Image

    if not data.startswith(PNG_SIGNATURE):
        raise InputError(f"{what}: not a PNG file; expected a 105x105 1-bit PNG")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            if im.size != (SIDE, SIDE):
                raise InputError(f"{what}: a {im.size[0]}x{im.size[1]} image; expected {SIDE}x{SIDE}")
            grey = np.asarray(im.convert("L"))
    except InputError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputError(f"{what}: unreadable PNG ({exc}); expected a 105x105 1-bit PNG") from exc
    return (grey < 128).astype(np.uint8)


def _write_npy(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with zf.open(name, "w", force_zip64=True) as f:
        np.lib.format.write_array(f, array, allow_pickle=False)


def write_npz(out: Path, chars: Mapping[int, Character], where: str) -> int:
    """Stream ``chars`` (sorted by id) into ``out`` as the class-grouped layout; returns the count.

    Written to a temporary file beside ``out`` and renamed, so a reader never sees half a file.
    """
    ids = sorted(chars)
    for cid in ids:
        missing = sorted(set(range(1, DRAWINGS + 1)) - set(chars[cid].drawings))
        if missing:
            c = chars[cid]
            raise InputError(f"{where}: character {cid:04d} ({c.alphabet}/character{c.character:02d}) lacks "
                             f"drawings {missing}; expected {DRAWINGS} drawings per character")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            with zf.open("images.npy", "w", force_zip64=True) as f:
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                          "shape": (len(ids), DRAWINGS, SIDE, SIDE)}
                np.lib.format.write_array_header_1_0(f, header)
                for cid in ids:
                    c = chars[cid]
                    block = np.stack([decode_drawing(c.drawings[yy](), f"{where}: {cid:04d}_{yy:02d}.png of "
                                                                       f"{c.alphabet}/character{c.character:02d}")
                                      for yy in range(1, DRAWINGS + 1)])
                    f.write(block.tobytes())
            _write_npy(zf, "alphabet.npy", np.array([chars[i].alphabet for i in ids], dtype=str))
            _write_npy(zf, "character.npy", np.array([chars[i].character for i in ids], dtype=np.int16))
            _write_npy(zf, "char_id.npy", np.array(ids, dtype=np.int16))
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(ids)


def prepare(sources: Sequence[str | Path], out_dir: str | Path, verify: bool = True,
            published: Mapping[str, str] = PUBLISHED_MD5) -> dict[str, int]:
    """Convert official zips / folders into ``out_dir``; returns ``{written file: n_characters}``.

    ``verify``: each zip's md5 must be one of ``published`` (``{"images_background": md5, ...}``);
    folders cannot be checked, so they need ``verify=False``.
    """
    if not sources:
        raise InputError("no input given; expected images_background.zip and/or images_evaluation.zip (or folders)")
    out_dir = Path(out_dir)
    written: dict[str, int] = {}
    groups: dict[str, dict[int, Character]] = {}
    open_zips: list[zipfile.ZipFile] = []
    try:
        for src in map(Path, sources):
            if src.is_dir():
                if verify:
                    raise InputError(f"{src} is a folder, which cannot be checked against the published md5 of "
                                     f"the zips; give the zip, or pass --no-verify to convert the folder as it is")
                scan_folder(src, groups)
            elif src.is_file():
                if verify:
                    md5 = file_md5(src)
                    if md5 not in published.values():
                        known = ", ".join(f"{k}.zip {v}" for k, v in published.items())
                        raise InputError(f"{src}: md5 {md5} is not the published one ({known}); download it "
                                         f"again, or pass --no-verify to convert it anyway")
                try:
                    zf = zipfile.ZipFile(src)
                except (zipfile.BadZipFile, OSError) as exc:
                    raise InputError(f"{src}: not a readable zip ({exc}); expected images_background.zip or "
                                     f"images_evaluation.zip") from exc
                open_zips.append(zf)
                scan_zip(zf, str(src), groups)
            else:
                raise InputError(f"{src}: no such file or folder; expected a zip or an unzipped folder")
        for kind, chars in sorted(groups.items()):
            out = out_dir / OUTPUT_FILE[kind]
            written[str(out)] = write_npz(out, chars, kind)
    finally:
        for zf in open_zips:
            zf.close()
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgemeta.data.prepare_omniglot ZIP_OR_DIR... --out DIR [--no-verify]``."""
    ap = argparse.ArgumentParser(prog="python -m edgemeta.data.prepare_omniglot",
                                 description="Turn Omniglot's official images_background.zip / images_evaluation.zip "
                                             "(or their unzipped folders) into background.npz / evaluation.npz.")
    ap.add_argument("sources", nargs="+", metavar="ZIP_OR_DIR")
    ap.add_argument("--out", required=True, metavar="DIR", help="folder to write background.npz / evaluation.npz to")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip the md5 check of the zips (needed for unzipped folders)")
    args = ap.parse_args(argv)
    try:
        written = prepare(args.sources, args.out, verify=not args.no_verify)
    except EdgemetaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:       # e.g. --out names a file, or a folder that cannot be written
        where = exc.filename or args.out
        print(f"error: {where}: {exc.strerror or exc}; expected --out to be a folder that can be written",
              file=sys.stderr)
        return 2
    for path, n in written.items():
        print(f"{path}: {n} characters x {DRAWINGS} drawings")
    missing = [f for f in OUTPUT_FILE.values() if not (Path(args.out) / f).is_file()]
    if missing:
        print(f"note: {args.out} has no {', '.join(missing)} yet; edgemeta reads both files", file=sys.stderr)
    else:
        print(f"use it with --omniglot {args.out} or EDGEMETA_OMNIGLOT={args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
