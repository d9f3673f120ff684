"""Atomic file writes shared by every writer of run folders and model exports (tmp file + fsync + rename).

A write goes to a temporary sibling `<path>.tmp<pid>`, which is flushed and fsynced, then renamed
onto `path` with os.replace, and the folder is fsynced so the rename itself survives a power cut.
Readers therefore see the old file or the new one, never half of one. If the write fails (a full
disk, a permission problem) the temporary file is removed and an OSError naming `path` is raised;
a writer killed outright (kill -9) leaves its temporary file behind, which no reader looks at and
`remove_stale_temp_files` deletes at the next start.

Test hook: with the environment variable T2I_TEST_SLOW_SAVE=SECONDS set, every atomic_torch_save
(checkpoints, exports) sleeps that long after the temporary file is written and before it is
fsynced and renamed, so a test can kill -9 a trainer in the middle of a checkpoint write
deterministically (tests/test_killresume.py). Unset, as always outside the tests, it costs one
environment lookup per save.
"""

import contextlib
import os
import re
import time

import torch

__all__ = ["atomic_write_bytes", "atomic_torch_save", "temp_path", "is_temp_file", "remove_stale_temp_files", "pid_alive"]

SLOW_SAVE_ENV = "T2I_TEST_SLOW_SAVE"
_TEMP_RE = re.compile(r"^(?P<target>.+)\.tmp(?P<pid>\d+)$")


def temp_path(path):
    """The temporary sibling `<path>.tmp<pid>` an atomic write of `path` goes through."""
    return f"{os.fspath(path)}.tmp{os.getpid()}"


def is_temp_file(name):
    """True if file name `name` is an atomic writer's temporary file (`<target>.tmp<pid>`)."""
    return _TEMP_RE.match(os.path.basename(os.fspath(name))) is not None


def pid_alive(pid):
    """True if a process with id `pid` exists (this one included): its temporary files may still be in use."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: a process of another user has that id
        return True
    return True


def remove_stale_temp_files(folder):
    """Delete the temporary files in `folder` left by atomic writers that are no longer running (killed
    mid-write). Files of a live process are left alone. Returns the list of removed paths."""
    folder = os.fspath(folder)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in sorted(names):
        m = _TEMP_RE.match(name)
        if m is None or pid_alive(int(m.group("pid"))):
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            os.remove(path)
            removed.append(path)
    return removed


def _fsync_dir(path):
    """fsync a folder so that a rename inside it is durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_temp(tmp):
    """Open the temporary file for writing (one place, so a test can stand in a failing disk)."""
    return open(tmp, "wb")


class _RecordingFile:
    """A write-only view of a file that remembers the first OSError of write().

    torch.save turns an OSError raised by the file (ENOSPC...) into an opaque RuntimeError
    ("unexpected pos ..."); the recorded error lets atomic_torch_save report the real cause.
    """

    def __init__(self, f):
        self.f = f
        self.error = None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self):
        return self.f.flush()


def _atomic_write(path, write):
    """Run write(file) on the temporary sibling of `path`, fsync, rename onto `path`, fsync the folder.

    On any failure the temporary file is removed; an OSError is re-raised naming `path`.
    """
    path = os.fspath(path)
    tmp = temp_path(path)
    try:
        with _open_temp(tmp) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror or str(exc), path) from exc
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
    return path


def atomic_write_bytes(path, data):
    """Write `data` to `path` via a temporary sibling, fsync and os.replace: readers never see half a file.

    Raises OSError (filename = path) if it cannot be written; `path` is then unchanged.
    """
    return _atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj, path):
    """torch.save `obj` to `path` atomically (tmp file + fsync + os.replace + folder fsync).

    Raises OSError (filename = path, errno of the cause, e.g. ENOSPC) if it cannot be written;
    `path` is then unchanged and no temporary file is left.
    """

    def write(f):
        rec = _RecordingFile(f)
        try:
            torch.save(obj, rec)
        except RuntimeError:
            if rec.error is not None:  # the file failed, not torch: report the file's error
                raise rec.error from None
            raise
        seconds = os.environ.get(SLOW_SAVE_ENV)
        if seconds:  # test hook (module doc): a window to kill -9 the writer between write and rename
            f.flush()
            time.sleep(float(seconds))

    return _atomic_write(path, write)
