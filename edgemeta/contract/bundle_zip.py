"""Zip bundles: the central-directory checks and the reading of one entry (zipfile only).

A zip is refused from its central directory alone, before anything is inflated, when it has more than
``MAX_ZIP_ENTRIES`` entries, names an entry twice, has entries whose stored ranges overlap or run past
the directory (zip bombs), or does not hold exactly one ``manifest.json`` at its top or in one folder.
An entry is inflated only up to the size the manifest lists (:func:`read_zip_entry`);
:func:`edgemeta.contract.bundle.read_bundle` reads a zip through these, as ``docs/bundle-format.md`` says.
"""

from __future__ import annotations

import os
import struct
import zipfile
from typing import Any

from edgemeta.contract.manifest_schema import MANIFEST, plain_file_name
from edgemeta.errors import BundleError

MAX_ZIP_ENTRIES = 256


def _refuse(source: str, msg: str) -> BundleError:
    return BundleError(f"{source}: {msg}")


def checked_entries(zf: zipfile.ZipFile, fh: Any, source: str) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    """``(root, entries by name)`` of zip ``zf`` opened on file ``fh``, once its central directory passes
    every check; ``root`` is the folder prefix of ``manifest.json`` (``""`` or ``"<folder>/"``)."""
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise _refuse(source, f"the zip has {len(infos)} entries; a bundle has at most {MAX_ZIP_ENTRIES}")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise _refuse(source, f"the zip holds entries named {dup} more than once; expected each name once")
    end = getattr(zf, "start_dir", os.fstat(fh.fileno()).st_size)     # where the central directory starts
    _zip_entry_ranges_disjoint(fh, infos, end, source)
    root = _zip_root(infos, source)
    return root, {i.filename: i for i in infos}


def _zip_entry_ranges_disjoint(fh: Any, infos: list[zipfile.ZipInfo], end: int, source: str) -> None:
    """Refuse entries whose local header + data ranges overlap (one stream shared by many entries)
    or run past the central directory at offset ``end``."""
    spans = []
    for info in infos:
        fh.seek(info.header_offset)
        head = fh.read(30)
        if len(head) != 30 or head[:4] != b"PK\x03\x04":
            raise _refuse(source, f"zip entry {info.filename!r} has no local header where the directory says; "
                                  f"the zip is damaged")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        stop = info.header_offset + 30 + name_len + extra_len + info.compress_size + (12 if info.flag_bits & 8 else 0)
        spans.append((info.header_offset, stop, info.filename))
    spans.sort()
    for (_, stop, name), (start, _, nxt) in zip(spans, spans[1:]):
        if start < stop:
            raise _refuse(source, f"zip entries {name!r} and {nxt!r} overlap; expected each entry stored once "
                                  f"(an overlapping-entry zip bomb looks like this)")
    if spans and max(s[1] for s in spans) > end:
        raise _refuse(source, "a zip entry runs past the zip's central directory; the zip is damaged")


def _zip_root(infos: list[zipfile.ZipInfo], source: str) -> str:
    """The folder prefix of ``manifest.json`` in a zip: ``""`` (flat) or ``"<folder>/"`` (one level)."""
    found = [i.filename for i in infos if i.filename.rsplit("/", 1)[-1] == MANIFEST and not i.is_dir()]
    if not found:
        raise _refuse(source, f"no {MANIFEST}; is this an edgemeta bundle?")
    if len(found) > 1:
        raise _refuse(source, f"the zip holds several manifests {found[:4]}; expected one bundle per zip")
    root = found[0][: -len(MANIFEST)]
    if root and not plain_file_name(root[:-1]):
        raise _refuse(source, f"{found[0]!r}: expected {MANIFEST} at the top of the zip or in one folder "
                              f"(nested folders are not supported)")
    return root


def read_zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, source: str) -> bytes:
    """One entry's bytes, refused before inflating if it declares more than ``limit`` bytes."""
    if info.flag_bits & 1:
        raise _refuse(source, f"zip entry {info.filename!r} is encrypted; expected a plain zip")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _refuse(source, f"zip entry {info.filename!r} uses compression method {info.compress_type}; "
                              f"expected stored or deflated")
    if info.file_size > limit:
        raise _refuse(source, f"zip entry {info.filename!r} declares {info.file_size} bytes, more than the "
                              f"{limit} expected; refused without inflating it")
    with zf.open(info) as entry:
        return entry.read(limit + 1)
