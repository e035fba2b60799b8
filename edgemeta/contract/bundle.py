"""The bundle contract: read, verify and write a bundle (numpy + json only, never torch).

A bundle is a directory (or a ``.zip`` of one) holding ``manifest.json`` plus the files the
manifest lists with their sha256 and size. ``docs/bundle-format.md`` is the specification;
this module is its only implementation (field rules: :mod:`~edgemeta.contract.manifest_schema`;
JSON reading: :mod:`~edgemeta.contract.strict_json`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
from pathlib import Path
from typing import Any, Mapping

from edgemeta.contract.manifest_schema import (FORMAT_NAME, FORMAT_VERSION, GRAPH_FILES, MANIFEST, MAX_BUNDLE_BYTES,  # noqa: F401 - re-exported
                                               READABLE_VERSIONS, graph_files, validate_manifest, writer_version)
from edgemeta.contract.strict_json import MAX_BYTES as MAX_MANIFEST_BYTES
from edgemeta.contract.strict_json import loads_strict
from edgemeta.errors import BundleError

REQUIRED_KEYS = (
    "format", "format_version", "method", "input", "preprocess", "embedding",
    "head", "graphs", "files", "provenance", "validation", "integrity",
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    """The manifest minus its ``integrity`` field, as canonical JSON bytes."""
    body = {k: v for k, v in manifest.items() if k != "integrity"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of the canonical manifest body: detects edits of the manifest itself."""
    return sha256_bytes(_canonical(manifest))


def parse_manifest(raw: bytes, source: str = "bundle") -> dict[str, Any]:
    """Parse and check ``manifest.json`` bytes: strict JSON, format, version, integrity digest, then
    the schema of :mod:`edgemeta.contract.manifest_schema`. Raises :class:`BundleError` naming the rule."""
    manifest = loads_strict(raw, f"{source}: {MANIFEST}")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{source}: format is {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                          f"expected {FORMAT_NAME!r}")
    version = manifest.get("format_version")
    if not (type(version) is int and version in READABLE_VERSIONS):     # the integer 1, 2 or 3: not 1.0, not true
        reads = ", ".join(map(str, READABLE_VERSIONS[:-1])) + f" and {READABLE_VERSIONS[-1]}"
        raise BundleError(
            f"{source}: bundle format version {version!r} is not supported by this edgemeta "
            f"(it reads versions {reads}); re-export the bundle with this edgemeta version")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{source}: manifest lacks required fields {missing}")
    for key in ("integrity", "graphs", "files", "head", "preprocess", "input", "embedding"):
        if not isinstance(manifest[key], dict):
            raise BundleError(f"{source}: manifest field {key!r} must be an object, got {type(manifest[key]).__name__}")
    for name, meta in manifest["files"].items():
        if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str) and type(meta.get("bytes")) is int):
            raise BundleError(f"{source}: manifest entry for {name!r} must be {{'sha256': str, 'bytes': int}}")
    if manifest["integrity"].get("manifest_sha256") != manifest_digest(manifest):
        raise BundleError(f"{source}: manifest.json was altered after export (its integrity digest "
                          f"does not match); use the bundle as exported")
    for role, name in graph_files(manifest).items():
        if manifest["graphs"].get(role) != name or name not in manifest["files"]:
            raise BundleError(f"{source}: manifest must list graph {role!r} as {name!r}")
    manifest = validate_manifest(manifest, source)
    total = sum(meta["bytes"] for meta in manifest["files"].values())
    if total > MAX_BUNDLE_BYTES:
        raise BundleError(f"{source}: the manifest lists {total} bytes of files; a bundle holds at most "
                          f"{MAX_BUNDLE_BYTES} bytes")
    return manifest


def check_file(name: str, meta: Mapping[str, Any], data: bytes, source: str = "bundle") -> bytes:
    """``data`` as the manifest lists ``name``: its size and sha256; returns ``data``. Called as soon as
    each file is read, so a mismatch stops loading before the next file is read."""
    if len(data) != meta["bytes"]:
        got = f"{len(data)} bytes" if len(data) <= meta["bytes"] else f"more than {meta['bytes']} bytes"
        raise BundleError(f"{source}: {name} is {got}, the manifest says {meta['bytes']} (truncated or replaced)")
    if sha256_bytes(data) != meta["sha256"]:
        raise BundleError(f"{source}: sha256 of {name} does not match the manifest (the file was altered)")
    return data


def check_files(manifest: Mapping[str, Any], files: Mapping[str, bytes], source: str = "bundle") -> None:
    """Every file the manifest lists is in ``files`` with the listed size and sha256."""
    for name, meta in manifest["files"].items():
        if name not in files:
            raise BundleError(f"{source}: file {name!r} listed in the manifest is missing")
        check_file(name, meta, files[name], source)


def verify(files: Mapping[str, bytes], source: str = "bundle") -> dict[str, Any]:
    """Check a bundle held in memory (name -> bytes): manifest, format version, integrity digest,
    schema and every listed file's size and sha256. Returns the parsed manifest."""
    if MANIFEST not in files:
        raise BundleError(f"{source}: no {MANIFEST}; is this an edgemeta bundle?")
    manifest = parse_manifest(files[MANIFEST], source)
    check_files(manifest, files, source)
    return manifest


def _refuse(source: str, msg: str) -> BundleError:
    return BundleError(f"{source}: {msg}")


def _read_fd(fd: int, limit: int) -> bytes:
    """At most ``limit + 1`` bytes from ``fd`` (one more than allowed shows that a file grew)."""
    chunks, left = [], limit + 1
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_listed_file(folder: Path, name: str, limit: int, source: str) -> bytes | None:
    """The bytes of regular file ``folder/name`` (at most ``limit + 1``); None if it does not exist.

    Refuses a symlink or anything that is not a regular file without reading it: ``lstat`` first,
    then ``open`` with ``O_NOFOLLOW | O_NONBLOCK`` and ``fstat`` of what was opened.
    """
    path = folder / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _refuse(source, f"cannot read {name} ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(source, f"{name} is a symbolic link; a bundle's files must be regular files in the folder")
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(source, f"{name} is not a regular file; a bundle's files must be regular files")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _refuse(source, f"cannot read {name} ({exc.strerror}); expected a readable regular file") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse(source, f"{name} is not a regular file; a bundle's files must be regular files")
        return _read_fd(fd, limit)
    except OSError as exc:
        raise _refuse(source, f"cannot read {name} ({exc.strerror})") from None
    finally:
        os.close(fd)


def _folder_manifest(path: Path, source: str) -> dict[str, Any]:
    """A bundle folder's ``manifest.json``, read and checked by :func:`parse_manifest`."""
    raw = _read_listed_file(path, MANIFEST, MAX_MANIFEST_BYTES, source)
    if raw is None:
        raise _refuse(source, f"no {MANIFEST}; is this an edgemeta bundle?")
    return parse_manifest(raw, source)


def _read_folder(path: Path, source: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``manifest.json`` and the files it lists, nothing else (unlisted files are never opened)."""
    manifest = _folder_manifest(path, source)
    files: dict[str, bytes] = {}
    for name, meta in manifest["files"].items():
        data = _read_listed_file(path, name, meta["bytes"], source)
        if data is None:
            raise _refuse(source, f"file {name!r} listed in the manifest is missing")
        files[name] = check_file(name, meta, data, source)
    return manifest, files


def _read_zip(fh: Any, source: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``manifest.json`` and the entries it lists from a zip, each inflated only up to its listed size.

    The central directory is checked first (:func:`edgemeta.contract.bundle_zip.checked_entries`:
    entry count, duplicate names, overlapping entries, one manifest); unlisted entries are never inflated.
    """
    import zipfile

    from edgemeta.contract.bundle_zip import checked_entries, read_zip_entry

    with zipfile.ZipFile(fh) as zf:
        root, by_name = checked_entries(zf, fh, source)
        manifest = parse_manifest(read_zip_entry(zf, by_name[root + MANIFEST], MAX_MANIFEST_BYTES, source), source)
        files: dict[str, bytes] = {}
        for name, meta in manifest["files"].items():
            info = by_name.get(root + name)
            if info is None or info.is_dir():
                raise _refuse(source, f"file {name!r} listed in the manifest is missing")
            if info.file_size != meta["bytes"]:
                raise _refuse(source, f"{name} is {info.file_size} bytes, the manifest says {meta['bytes']} "
                                      f"(truncated or replaced); refused without inflating it")
            files[name] = check_file(name, meta, read_zip_entry(zf, info, meta["bytes"], source), source)
    return manifest, files


def read_bundle(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Read and verify a bundle. Returns ``(manifest, files)`` where files maps listed name -> bytes.

    Only ``manifest.json`` (at most 1 MiB) and the files it lists are read, each at most to its
    listed size; a listed file that is a symlink or not a regular file is refused.
    """
    path = Path(path)
    source = str(path)
    if not os.path.exists(path):
        raise BundleError(f"bundle not found: {path} (expected a bundle directory or .zip)")
    if path.is_dir():
        return _read_folder(path, source)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise BundleError(f"cannot read {path} ({exc.strerror}); expected a bundle directory or .zip") from None
    import zipfile  # zip bundles only: loading a bundle folder never imports them
    import zlib

    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not zipfile.is_zipfile(fh):
            raise BundleError(f"{path} is neither a bundle directory nor a .zip bundle")
        try:
            return _read_zip(fh, source)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
                NotImplementedError, struct.error) as exc:
            raise _refuse(source, f"the zip is damaged ({type(exc).__name__}: {exc})") from None


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """A bundle's checked manifest (strict JSON, format, version, integrity digest, schema). Of a
    folder only ``manifest.json`` is read (its listed files are neither read nor hashed); a ``.zip``
    is read and verified whole, as by :func:`read_bundle`."""
    if Path(path).is_dir():
        return _folder_manifest(Path(path), str(Path(path)))
    return read_bundle(path)[0]


def seal_manifest(manifest: Mapping[str, Any], files: Mapping[str, bytes]) -> dict[str, Any]:
    """A copy of ``manifest`` completed for ``files``: format, version (the lowest that expresses it,
    :func:`~edgemeta.contract.manifest_schema.writer_version`: :data:`FORMAT_VERSION` unless a version-3
    section is present), every file's sha256 and size, and the integrity digest (what
    :func:`write_bundle` writes; also for a bundle held in memory)."""
    sealed = dict(manifest)
    sealed["format"] = FORMAT_NAME
    sealed["format_version"] = writer_version(manifest)
    sealed["files"] = {name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in sorted(files.items())}
    sealed["integrity"] = {}
    sealed["integrity"] = {"manifest_sha256": manifest_digest(sealed)}
    return sealed


def write_bundle(directory: str | os.PathLike, manifest: dict[str, Any],
                 files: Mapping[str, bytes]) -> Path:
    """Write ``files`` plus a completed manifest (checksums, integrity) to ``directory`` atomically.

    The bundle is assembled in a sibling temporary directory and renamed into place, so a
    reader sees either the previous bundle or the complete new one. Files of the old directory
    that are not part of a bundle (a model card, say) are carried over.
    """
    import shutil
    import tempfile

    directory = Path(directory)
    manifest = seal_manifest(manifest, files)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        read_bundle(tmp)
        if directory.is_dir():
            old_listed: set[str] = set()
            try:
                old_listed = set(json.loads((directory / MANIFEST).read_text()).get("files", {}))
            except (OSError, ValueError, AttributeError):
                pass
            for p in directory.iterdir():
                if p.is_file() and p.name not in files and p.name != MANIFEST and p.name not in old_listed:
                    shutil.copy2(p, tmp / p.name)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def zip_bundle(directory: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Pack a verified bundle directory into one ``.zip`` file (written atomically)."""
    import zipfile

    from edgemeta.contract.atomic_files import atomic_write_bytes

    manifest, files = read_bundle(directory)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for name, data in files.items():
            zf.writestr(name, data)
    out = Path(out)
    atomic_write_bytes(out, buf.getvalue())
    return out
