"""Saving where nothing can be written (a file in place of a folder, a folder in place of the file, a
name too long for its temporary, a folder that takes no files): the error names the target path,
never the temporary written beside it, and says what was expected. Failures made for real, as root too."""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemeta.cli_errors import describe_os_error
from edgemeta.contract.atomic_files import NAME_MAX, TEMPORARY_EXTRA_BYTES, atomic_write_bytes, file_in_the_way
from edgemeta.errors import StateError
from edgemeta.runtime import FewShotClassifier

TMP_TAG = ".edgemeta-tmp-"
A_TEMPORARY = re.compile(r"\.edgemeta-tmp-[0-9a-f]{16}")     # a real temporary's name


@pytest.fixture(scope="module")
def fitted(shipped_bundle) -> FewShotClassifier:
    x = np.zeros((2, 28, 28), np.uint8)
    x[1, 10:18, 10:18] = 255
    return FewShotClassifier(shipped_bundle).fit(x, ["a", "b"])


def unwritable(tmp_path: Path) -> list[tuple[Path, str]]:
    """``(target, what its message must say)`` for paths that fail for real, whoever runs the test."""
    blocker = tmp_path / "photo.png"
    blocker.write_bytes(b"not a folder")
    (tmp_path / "folder.state").mkdir()
    long_name = "n" * (NAME_MAX - TEMPORARY_EXTRA_BYTES + 1)
    cases = [(blocker / "me.state", f"{blocker} is a file, not a folder; expected a folder"),
             (blocker / "sub" / "me.state", f"{blocker} is a file, not a folder; expected a folder"),
             (tmp_path / "folder.state", "this is a folder; expected a file path"),
             (tmp_path / long_name, f"the file name is {len(long_name)} bytes; expected at most "
                                    f"{NAME_MAX - TEMPORARY_EXTRA_BYTES}")]
    if sys.platform.startswith("linux") and os.path.isdir("/proc/self"):
        cases.append((Path("/proc/me.state"), "cannot write a file in the folder /proc"))
    return cases


def test_atomic_write_names_the_target_and_what_was_expected(tmp_path):
    for target, says in unwritable(tmp_path):
        with pytest.raises(OSError) as info:
            atomic_write_bytes(target, b"data")
        assert info.value.filename == str(target)
        message = describe_os_error(info.value)
        assert message.startswith(f"{target}: ") and says in message, message
        assert not A_TEMPORARY.search(message), message
        assert not [p for p in tmp_path.iterdir() if TMP_TAG in p.name]       # no temporary left behind


def test_name_too_long_only_because_of_the_temporary_keeps_its_errno(tmp_path):
    target = tmp_path / ("n" * (NAME_MAX - 5))                  # a legal name; its temporary's is not
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"data")
    assert info.value.errno == errno.ENAMETOOLONG
    atomic_write_bytes(tmp_path / ("n" * (NAME_MAX - TEMPORARY_EXTRA_BYTES)), b"data")   # the longest that works


def test_saving_a_state_where_nothing_can_be_written(fitted, tmp_path):
    for target, says in unwritable(tmp_path):
        with pytest.raises(StateError) as info:
            fitted.save(target)
        message = str(info.value)
        assert message.startswith(f"cannot save the state to {target}: ") and says in message, message
        assert not A_TEMPORARY.search(message), message


def test_reading_a_state_under_a_file_says_the_file_is_in_the_way(fitted, tmp_path):
    blocker = tmp_path / "photo.png"
    blocker.write_bytes(b"x")
    assert file_in_the_way(blocker / "a" / "me.state") == blocker
    assert file_in_the_way(tmp_path / "a" / "me.state") is None
    with pytest.raises(StateError, match=f"no state file at {blocker}/me.state: {blocker} is a file, not a folder"):
        FewShotClassifier.load(fitted.bundle, blocker / "me.state")
