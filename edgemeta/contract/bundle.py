"""The bundle contract: read, verify and write a bundle (numpy + json only, never torch).

A bundle is a directory (or a ``.zip`` of one) holding ``manifest.json`` plus the files the
manifest lists with their sha256 and size. ``docs/bundle-format.md`` is the specification;
this module is its only implementation.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

from edgemeta.contract.atomic_files import atomic_write_bytes
from edgemeta.errors import BundleError

FORMAT_NAME = "edgemeta-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPH_FILES = {"backbone": "backbone.onnx", "adapt": "adapt.onnx", "classify": "classify.onnx"}
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


def _read_raw(path: Path) -> dict[str, bytes]:
    """All files of a bundle directory or zip, as name -> bytes (no code is executed)."""
    if not path.exists():
        raise BundleError(f"bundle not found: {path} (expected a bundle directory or .zip)")
    files: dict[str, bytes] = {}
    if path.is_dir():
        for p in sorted(path.iterdir()):
            if p.is_file():
                files[p.name] = p.read_bytes()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                name = Path(info.filename).name  # flat: ignore any folder inside the zip
                files[name] = zf.read(info)
    else:
        raise BundleError(f"{path} is neither a bundle directory nor a .zip bundle")
    return files


def verify(files: Mapping[str, bytes], source: str = "bundle") -> dict[str, Any]:
    """Check a bundle's manifest, format version, integrity digest and every file's checksum.

    Returns the parsed manifest; raises :class:`BundleError` naming what did not match.
    """
    if MANIFEST not in files:
        raise BundleError(f"{source}: no {MANIFEST}; is this an edgemeta bundle?")
    try:
        manifest = json.loads(files[MANIFEST].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{source}: {MANIFEST} is not valid JSON ({exc}); the file is damaged") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{source}: format is {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                          f"expected {FORMAT_NAME!r}")
    version = manifest.get("format_version")
    if not (type(version) is int and version == FORMAT_VERSION):     # the integer 1: not 1.0, not true
        raise BundleError(
            f"{source}: bundle format version {version!r} is not supported by this edgemeta "
            f"(it reads version {FORMAT_VERSION}); re-export the bundle with this edgemeta version")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{source}: manifest lacks required fields {missing}")
    for key in ("integrity", "graphs", "files", "head", "preprocess", "input", "embedding"):
        if not isinstance(manifest[key], dict):
            raise BundleError(f"{source}: manifest field {key!r} must be an object, got {type(manifest[key]).__name__}")
    for name, meta in manifest["files"].items():
        if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str) and isinstance(meta.get("bytes"), int)):
            raise BundleError(f"{source}: manifest entry for {name!r} must be {{'sha256': str, 'bytes': int}}")
    digest = manifest_digest(manifest)
    if manifest["integrity"].get("manifest_sha256") != digest:
        raise BundleError(f"{source}: manifest.json was altered after export (its integrity digest "
                          f"does not match); use the bundle as exported")
    listed = manifest["files"]
    for role, name in GRAPH_FILES.items():
        if manifest["graphs"].get(role) != name or name not in listed:
            raise BundleError(f"{source}: manifest must list graph {role!r} as {name!r}")
    for name, meta in listed.items():
        if name not in files:
            raise BundleError(f"{source}: file {name!r} listed in the manifest is missing")
        data = files[name]
        if len(data) != meta["bytes"]:
            raise BundleError(f"{source}: {name} is {len(data)} bytes, the manifest says {meta['bytes']}"
                              f" (truncated or replaced)")
        if sha256_bytes(data) != meta["sha256"]:
            raise BundleError(f"{source}: sha256 of {name} does not match the manifest (the file was altered)")
    return manifest


def read_bundle(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Read and verify a bundle. Returns ``(manifest, files)`` where files maps name -> bytes."""
    path = Path(path)
    files = _read_raw(path)
    manifest = verify(files, source=str(path))
    return manifest, {name: files[name] for name in manifest["files"]}


def write_bundle(directory: str | os.PathLike, manifest: dict[str, Any],
                 files: Mapping[str, bytes]) -> Path:
    """Write ``files`` plus a completed manifest (checksums, integrity) to ``directory`` atomically.

    The bundle is assembled in a sibling temporary directory and renamed into place, so a
    reader sees either the previous bundle or the complete new one. Files of the old directory
    that are not part of a bundle (a model card, say) are carried over.
    """
    directory = Path(directory)
    manifest = dict(manifest)
    manifest["format"] = FORMAT_NAME
    manifest["format_version"] = FORMAT_VERSION
    manifest["files"] = {name: {"sha256": sha256_bytes(data), "bytes": len(data)}
                         for name, data in sorted(files.items())}
    manifest["integrity"] = {}
    manifest["integrity"] = {"manifest_sha256": manifest_digest(manifest)}
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        verify(_read_raw(tmp), source=str(tmp))
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
    manifest, files = read_bundle(directory)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for name, data in files.items():
            zf.writestr(name, data)
    out = Path(out)
    atomic_write_bytes(out, buf.getvalue())
    return out
