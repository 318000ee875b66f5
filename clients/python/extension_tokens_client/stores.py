"""Token storage.

A store keeps one record (a dict) per key:

  {access_token, refresh_token, token_type, expires_at, refresh_expires_at,
   session_id, scopes, obtained_at}          a session
  {"signed_out": {"reason", "at"}}           a tombstone: the session ended

and offers lock(key), a context manager: while it is held nobody else (no
other thread, and for a shared store no other process) holds the same lock.
The client refreshes only under that lock, after reading the store again:
whoever got the lock second finds the new pair and uses it.

Interface: get(key) -> dict | None; set(key, record); delete(key); lock(key).
"""

import contextlib
import json
import os
import string
import tempfile
import threading
import time

from .errors import LockTimeoutError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None
try:  # Windows
    import msvcrt
except ImportError:
    msvcrt = None


class MemoryStore(object):
    """Tokens in memory, for tests and for an add-in that signs in at each start."""

    def __init__(self):
        self._data = {}
        self._guard = threading.Lock()
        self._locks = {}

    def get(self, key):
        with self._guard:
            v = self._data.get(key)
            return json.loads(json.dumps(v)) if v is not None else None

    def set(self, key, record):
        with self._guard:
            self._data[key] = json.loads(json.dumps(record))

    def delete(self, key):
        with self._guard:
            self._data.pop(key, None)

    def lock(self, key):
        with self._guard:
            lk = self._locks.setdefault(key, threading.Lock())
        return lk


_SAFE = frozenset(string.ascii_letters + string.digits + "_-")


def file_name_of(key):
    """A file name for a key: letters, digits, '_' and '-' kept, the rest %-escaped."""
    out = []
    for c in str(key):
        if c in _SAFE:
            out.append(c)
        else:
            out.extend("%%%02x" % b for b in c.encode("utf-8"))
    return "".join(out)


class FileStore(object):
    """Tokens in <directory>/<key>.json (mode 0600, replaced atomically), shared by
    every process that opens the same directory, locked across processes with
    <directory>/<key>.flock: fcntl.flock on POSIX, msvcrt.locking on Windows.
    The operating system releases the lock when its process ends, so a crashed
    holder never leaves it stale.

    Tokens on disk are as safe as the directory: put it in the user's private
    application-data folder (the add-in's own, not a shared one).
    """

    def __init__(self, directory, wait=60.0, poll=0.02):
        self.directory = directory
        self.wait = wait
        self.poll = poll
        self._thread_locks = {}
        self._guard = threading.Lock()

    def _path(self, key, ext):
        return os.path.join(self.directory, file_name_of(key) + ext)

    def get(self, key):
        try:
            with open(self._path(key, ".json"), "r", encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return None  # unreadable: as if empty

    def set(self, key, record):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=file_name_of(key) + ".", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(key, ".json"))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def delete(self, key):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key, ".json"))

    @contextlib.contextmanager
    def lock(self, key):
        # Threads of this process first, then the file lock against other
        # processes.  Not re-entrant: the client never nests it.
        with self._guard:
            tl = self._thread_locks.setdefault(key, threading.Lock())
        if not tl.acquire(timeout=self.wait):
            raise LockTimeoutError("could not lock %s within %s s" % (key, self.wait))
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            path = self._path(key, ".flock")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                self._lock_fd(fd, path)
                try:
                    yield
                finally:
                    self._unlock_fd(fd)
            finally:
                os.close(fd)
        finally:
            tl.release()

    def _lock_fd(self, fd, path):
        deadline = time.monotonic() + self.wait
        while True:
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:  # pragma: no cover - Windows
                    os.lseek(fd, 0, os.SEEK_SET)
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise LockTimeoutError("could not lock %s within %s s" % (path, self.wait))
                time.sleep(self.poll)

    def _unlock_fd(self, fd):
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:  # pragma: no cover - Windows
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
