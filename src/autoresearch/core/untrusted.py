"""Reading files that an experiment could have planted: never hang, never follow, never exhaust memory.

Everything the harness reads from a worktree after (or while) an experiment ran goes through
`read_file`: each path component is opened with O_NOFOLLOW relative to the folder (a symlinked
file or parent folder is refused, so nothing outside the folder is read), the file is opened
O_NONBLOCK (a FIFO cannot block the open) and must be a regular file (a FIFO, socket or device is
refused before any read), and at most `max_bytes` are read (a 100 GB sparse file is refused by its
size, not loaded).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from autoresearch.core.errors import AutoresearchError


class UntrustedFileError(AutoresearchError, OSError):
    """A file an experiment left is not a plain, reasonably sized file inside its folder."""


def read_file(folder: Path | str, relpath: str, max_bytes: int) -> bytes:
    """The bytes of `folder/relpath`, read as untrusted. Raises FileNotFoundError when it is missing,
    UntrustedFileError when it is a symlink, not a regular file, or larger than `max_bytes`."""
    parts = [p for p in relpath.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UntrustedFileError(f"{relpath!r} is not a path inside the run's folder")
    nofollow = os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=fd)
            except NotADirectoryError:
                raise UntrustedFileError(f"{relpath}: {part} is not a folder (a symlink?)") from None
            os.close(fd)
            fd = nxt
        try:
            file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | nofollow, dir_fd=fd)
        except OSError as e:
            if e.errno == 40:  # ELOOP: the last component is a symlink
                raise UntrustedFileError(f"{relpath} is a symlink; only plain files are read") from None
            raise
    finally:
        os.close(fd)
    try:
        info = os.fstat(file_fd)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFileError(f"{relpath} is not a regular file (a FIFO, socket or device?)")
        if info.st_size > max_bytes:
            raise UntrustedFileError(f"{relpath} is {info.st_size} bytes, more than the {max_bytes} read")
        chunks, left = [], max_bytes + 1
        while left > 0 and (chunk := os.read(file_fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:  # it grew while we read
            raise UntrustedFileError(f"{relpath} grew past the {max_bytes} bytes read")
        return data
    finally:
        os.close(file_fd)
