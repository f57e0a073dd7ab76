"""Finding a dataset's files in a folder, downloading them with an MD5 check, and the one error when neither works.

A download goes through :func:`~diffusion_playground.atomic_files.atomic_write` (a hidden ``.<name>.tmp-<pid>``
in the target folder) and is ``os.replace``d under its real name only after its size and MD5 match, so an
interrupted or corrupted download never leaves a file that looks valid; the partial file is removed on every
failure, and the ones of killed downloads when the next one starts.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from diffusion_playground.atomic_files import atomic_write, remove_stale_temporary_files

_CHUNK = 1 << 20


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing, truncated or corrupt, and could not be downloaded. The message names
    the expected files, where to download them, and the folder to put them in."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset as published: its name in the dataset folder, its MD5, and mirrors tried in order."""

    name: str
    md5: str
    urls: tuple[str, ...]


def dataset_error(
    dataset: str,
    root: str | Path,
    files: Sequence[RemoteFile],
    reason: str,
    *,
    expected: str | None = None,
    download_tried: bool = False,
) -> DatasetNotFoundError:
    """The one error of every loader: what went wrong, which files are expected, the URLs, and the folder."""
    folder = Path(root).expanduser().resolve()
    expected = expected or ", ".join(remote.name for remote in files)
    urls = " ".join(remote.urls[0] for remote in files)
    hint = "" if download_tried else " (or pass download=True where the network allows)"
    return DatasetNotFoundError(
        f"{dataset}: {reason}. Expected {expected} in the folder {folder}. Download {urls}{hint} "
        "and put the files in that folder."
    )


def md5_of_file(path: str | Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _BadDownload(Exception):
    """A download arrived truncated or with the wrong checksum."""


def download_file(remote: RemoteFile, root: str | Path, *, timeout: float = 60.0) -> Path:
    """Fetch ``remote`` into ``root`` (trying each mirror), check its size and MD5, then move it into place.

    Raises:
        OSError: every mirror failed; the message lists each URL with its reason.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporary_files(root)
    destination = root / remote.name
    failures = []
    for url in remote.urls:
        print(f"downloading {url} -> {destination}")
        try:
            digest = hashlib.md5(usedforsecurity=False)
            size = 0
            with urllib.request.urlopen(url, timeout=timeout) as response, atomic_write(destination) as handle:
                announced = getattr(response, "headers", {}).get("Content-Length")
                while chunk := response.read(_CHUNK):
                    handle.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                if announced is not None and size != int(announced):  # raised inside: nothing is moved into place
                    raise _BadDownload(f"truncated: received {size} of {announced} bytes")
                if digest.hexdigest() != remote.md5:
                    raise _BadDownload(f"checksum mismatch: MD5 {digest.hexdigest()}, expected {remote.md5}")
            return destination
        except (OSError, http.client.HTTPException, _BadDownload) as error:  # URLError and timeouts are OSErrors
            failures.append(f"{url}: {error}")
    raise OSError("; ".join(failures))


def find_or_download(
    dataset: str,
    root: str | Path,
    files: Sequence[RemoteFile],
    *,
    download: bool,
    find: Callable[[Path, RemoteFile], Path | None],
    expected: str | None = None,
) -> list[Path]:
    """The local path of every file (``find(root, remote)``), downloading the missing ones if allowed.

    Raises:
        DatasetNotFoundError: a file is missing and download is False, or its download failed.
    """
    root = Path(root).expanduser()
    missing = [remote for remote in files if find(root, remote) is None]
    if missing and not download:
        names = ", ".join(remote.name for remote in missing)
        raise dataset_error(dataset, root, files, f"{names} not found (download=False)", expected=expected)
    for remote in missing:
        try:
            download_file(remote, root)
        except OSError as error:
            reason = f"downloading {remote.name} failed ({error})"
            raise dataset_error(dataset, root, files, reason, expected=expected, download_tried=True) from error
    return [find(root, remote) for remote in files]


__all__ = ["DatasetNotFoundError", "RemoteFile", "dataset_error", "download_file", "find_or_download", "md5_of_file"]
