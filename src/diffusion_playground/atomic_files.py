"""Writing a file so that a crash never leaves part of it under its real name, and cleaning up after crashes.

Every file the package keeps (checkpoints, dataset downloads, the classifier cache, the MNIST sample's IDX
files) is written through :func:`atomic_write`: into a hidden ``.<name>.tmp-<pid>`` beside it, flushed to disk,
then ``os.replace``d under its name. A reader sees the old file or the new one, never a part. A process
killed mid-write leaves its temporary file behind; :func:`remove_stale_temporary_files`, run when a training
run or a download starts, removes those whose process is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# ".<name>.tmp-<pid>"; ".part-<pid>" is what downloads of earlier versions left
_TEMPORARY_NAME = re.compile(r"^\..+\.(?:tmp|part)-(\d+)$")


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """``with atomic_write(path) as handle: handle.write(...)``: the file appears under ``path`` only if the
    block ends without an exception (the temporary file is removed otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)


def ensure_writable_folder(folder: str | Path, what: str = "the output folder") -> Path:
    """Create ``folder`` if needed and check that a file can be written in it, before any long work is done;
    an OSError of the same kind otherwise, whose message names ``what`` the folder is for."""
    folder = Path(folder)
    probe = folder / ".write-test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(probe):
            pass
        probe.unlink()
    except OSError as error:  # a file in the way, no permission, a read-only disk
        raise type(error)(
            error.errno, f"{what} {folder} can't be written to ({error.strerror or error}); pass a folder you can write to"
        ) from error  # fmt: skip
    return folder


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories can't be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _process_is_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not writing yet when it cleans up: the file is a previous run's
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # it exists but belongs to someone else, or the OS can't tell
        return True
    return True


def remove_stale_temporary_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in ``folder``; return their paths.

    A temporary file whose writer is still running (another process writing there now) is left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        match = _TEMPORARY_NAME.match(path.name)
        if match and path.is_file() and not _process_is_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


__all__ = ["atomic_write", "ensure_writable_folder", "remove_stale_temporary_files"]
