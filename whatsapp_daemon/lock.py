"""One daemon at a time: an exclusive ``flock`` on the lock file.

The kernel releases the lock when its holder dies, even by ``kill -9``, so
a leftover file is harmless. The file is never deleted: deleting a held
lock file would let a second instance lock a new file beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .errors import AlreadyRunningError

LOCK_MODE = 0o644


class InstanceLock:
    """The instance lock, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our PID in it, or raise AlreadyRunningError."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, LOCK_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunningError(str(self.path), holder_pid(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock; the file stays."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def still_ours(self) -> bool:
        """Touch the file and check it is still the one we locked.

        macOS deletes files in /tmp that nobody accessed for three days; a
        daemon that runs for weeks touches its lock file every cycle. If the
        file was removed anyway, the lock is taken again on a new file.
        """
        if self._fd is None:
            return False
        try:
            os.utime(self.path)
            same = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return True
        self.release()
        try:
            self.acquire()
        except AlreadyRunningError:
            return False
        return True

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_pid(path: Path) -> int | None:
    """Return the PID written in the lock file, if that process still exists.

    Another program holding the lock (the old cron job) may not write its
    PID, leaving the one of an earlier daemon: a dead PID is no answer.
    """
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text().strip())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid
    return None


def is_locked(path: Path) -> bool:
    """Tell whether a live process holds the lock, without creating the file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
