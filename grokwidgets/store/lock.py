"""One writer per run directory: an OS lock the kernel releases when the writer dies.

Everything that writes a run — ``gw.train``, ``Monitor(dir=...)``, ``grokwidgets run`` and
``resume``, ``--overwrite`` — holds :class:`WriterLock` on ``RUN/.writer.lock`` for its whole
life. The lock is ``flock(2)`` on POSIX and ``msvcrt.locking`` on Windows: the kernel drops it
when the process exits or is killed, so a SIGKILLed writer never leaves a stale lock. The file
also holds, as information only, who holds the lock (pid, host, start time, command), so a
second writer is refused at once with a message that says who and what to do.

Readers (``gw.open_run``, the widgets, ``grokwidgets report``) never take the lock and never
wait for it. The values computed later at checkpoints (``computed/``) are written as atomic
entries and do not need it either.

Network file systems may not honour ``flock`` across machines (NFS, SMB/CIFS, sshfs, many FUSE
file systems): there two machines could both believe they hold the lock. :class:`WriterLock`
recognises such a mount from ``/proc/self/mounts`` (Linux) and warns with
:class:`NetworkFilesystemWarning`; elsewhere it cannot tell, and says so in this docstring only.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from grokwidgets.store.errors import RunLockedError

__all__ = ["LOCK_FILE", "NetworkFilesystemWarning", "RunLockedError", "WriterLock"]

LOCK_FILE = ".writer.lock"

#: File system types (as ``/proc/self/mounts`` names them) on which a lock taken on one machine
#: may not be seen by another.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "9p",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
        "fuse.juicefs",
    }
)


class NetworkFilesystemWarning(UserWarning):
    """The run directory is on a file system where the writer lock may not hold."""


def filesystem_type(path: str | os.PathLike[str], mounts: str = "/proc/self/mounts") -> str | None:
    """The type of the file system holding ``path`` (Linux), or ``None`` where unknown."""
    try:
        table = Path(mounts).read_text()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv) or sys.executable,
    }


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (it left no details)"
    here = holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid()
    who = (
        f"this process (pid {holder.get('pid')}): a Monitor or gw.train run in it was not "
        "closed; call mon.close() (or use `with gw.Monitor(...) as mon:`)"
        if here
        else f"pid {holder.get('pid')} on {holder.get('host')}"
    )
    return f"{who}, since {holder.get('started', '?')}, running `{holder.get('command', '?')}`"


class WriterLock:
    """The exclusive writer lock of a run directory (see the module's docstring).

    Parameters
    ----------
    run_dir : path-like
        The run directory; it is created if missing.

    Raises
    ------
    RunLockedError
        From :meth:`acquire` when another writer holds the lock, naming it.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> WriterLock:
        """Take the lock now or raise :class:`RunLockedError`; never waits."""
        if self._fd is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        kind = filesystem_type(self.run_dir)
        if kind in NETWORK_FILESYSTEMS:
            warnings.warn(
                f"{self.run_dir} is on a {kind} file system, where the writer lock may not be "
                "seen by other machines: make sure only one machine writes this run.",
                NetworkFilesystemWarning,
                stacklevel=3,
            )
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            holder = self._read_holder(fd)
            os.close(fd)
            msg = (
                f"{self.run_dir} is being written by {_describe(holder)}. One run directory has "
                "one writer: wait for it to finish, open it read-only with "
                f"gw.open_run({str(self.run_dir)!r}) (or a LiveMonitor), or choose another "
                "directory."
            )
            raise RunLockedError(msg) from None
        # Who holds it, for the message a second writer gets (information only).
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(_holder()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race with a new writer)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        _unlock(fd)
        os.close(fd)

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:  # an unclosed writer that is collected lets go
        self.release()

    @staticmethod
    def _read_holder(fd: int) -> dict[str, Any]:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            raw = os.read(fd, 4096)
            holder = json.loads(raw.decode() or "{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}


if sys.platform == "win32":  # pragma: no cover (the project's machines are Linux)
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
