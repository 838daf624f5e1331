"""Paths must resolve inside configured roots; nothing escapes, nothing surprising is opened.

* ``..`` in a path is refused outright; ``~`` expands to the edge user's home.
* The parent directory is resolved (symlinks followed) and must lie inside a root; the
  final component is opened with ``O_NOFOLLOW``, so a symlink there is refused, whatever
  it points to — checked at open, not before, so it cannot be swapped in between.
* Dot-names (``.ssh``, ``.gnupg``...) anywhere under a root are refused unless configured.
* Only regular files are read or written: devices, FIFOs and sockets are refused.
* A file operation must name a file: a root itself, a path ending in ``/`` or ``.``, or a
  bare ``~`` is refused before anything is opened (the partial upload lives beside its
  destination, so a root as destination would put it *outside* the root).
* ``deny`` paths (the plugin's own state) are never served, whatever the roots say.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ...errors import PluginError


def names_directory(user_path: str) -> bool:
    """Does the path's spelling say "directory" (``x/``, ``x/.``, ``.``, ``~``, ``~user``)?"""
    expanded = os.path.expanduser(user_path)
    last = expanded.rsplit("/", 1)[-1]
    return last in ("", ".") or (user_path.startswith("~") and "/" not in user_path)


class Sandbox:
    def __init__(self, roots: list[str], allow_dot_dirs: list[str] | None = None,
                 deny: list[Path] | None = None) -> None:
        resolved = []
        for root in roots:
            path = Path(os.path.expanduser(os.path.expandvars(root))).resolve()
            path.mkdir(parents=True, exist_ok=True)
            resolved.append(path)
        self.roots = resolved
        self.allow_dot = set(allow_dot_dirs or ())
        self.home = Path(os.path.expanduser("~")).resolve()
        self.deny = [Path(os.path.realpath(p)) for p in deny or ()]

    def _root_of(self, path: Path) -> Path | None:
        best = None
        for root in self.roots:
            if path == root or root in path.parents:
                if best is None or len(root.parts) > len(best.parts):
                    best = root
        return best

    def is_root(self, path: Path) -> bool:
        return path in self.roots

    def inside(self, path: Path) -> bool:
        """Is ``path`` a root or below one (no symlink resolution: give a resolved path)?"""
        return self._root_of(path) is not None

    def resolve(self, user_path: str, *, file: bool = False) -> Path:
        """The absolute path ``user_path`` names; 403 when it is not allowed.

        With ``file`` the path must name a file: a root or a directory spelling is a 422.
        """
        if not user_path or "\x00" in user_path:
            raise PluginError("give a path", 422)
        if file and names_directory(user_path):
            raise PluginError(f"{user_path} names a directory (it ends in '/' or '.', or is a home); "
                              "give the path of a file", 422)
        raw = Path(os.path.expanduser(user_path))
        if ".." in raw.parts:
            raise PluginError(f"'..' is not allowed in paths: {user_path}", 403)
        if not raw.is_absolute():
            raw = self.home / raw
        parent = Path(os.path.realpath(raw.parent))
        target = parent / raw.name if raw.name else parent
        root = self._root_of(target if target in self.roots else parent)
        if root is None:
            raise PluginError(f"{user_path} is outside the allowed roots ({', '.join(map(str, self.roots))})", 403)
        for part in target.relative_to(root).parts:
            if part.startswith(".") and part not in self.allow_dot:
                raise PluginError(f"{user_path}: hidden entries such as {part!r} are not served here "
                                  "(allow_dot_dirs in the staging config)", 403)
        for denied in self.deny:
            if target == denied or denied in target.parents:
                raise PluginError(f"{user_path}: Isthmus keeps its own state there; it is not served", 403)
        if file and target in self.roots:
            raise PluginError(f"{user_path} is an allowed root, a directory; give the path of a file inside it", 422)
        return target

    @staticmethod
    def open(path: Path, flags: int, mode: int = 0o644) -> int:
        """Open with O_NOFOLLOW; refuse symlinks and anything but regular files."""
        try:
            # O_NONBLOCK: opening a FIFO must not hang waiting for a writer; cleared below for files
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PluginError(f"{path} is a symbolic link; links are not followed here", 403) from exc
            if exc.errno == errno.ENOENT:
                raise PluginError(f"{path} does not exist", 404) from exc
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise PluginError(f"{path}: permission denied", 403) from exc
            if exc.errno == errno.EISDIR:
                raise PluginError(f"{path} is a directory", 409) from exc
            raise PluginError(f"{path}: {exc.strerror}", 400) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PluginError(f"{path} is not a regular file (devices, pipes and sockets are refused)", 403)
        os.set_blocking(fd, True)
        return fd
