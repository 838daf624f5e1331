"""The login file: the bridge URL and token ``isthmus login`` stored, readable by its owner only.

``$XDG_CONFIG_HOME/isthmus/login.json`` (default ``~/.config/isthmus/login.json``), mode 600
in a mode-700 directory. It is written to a fresh temporary file (``O_EXCL``, ``O_NOFOLLOW``,
mode 600 from the start) and renamed over the old one, so it is never half-written, never
readable by others even for a moment, and a symlink planted at its name is not followed. It
is read with ``O_NOFOLLOW`` and refused when it is not a regular file of this user or when
group or others may read or write it.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from ..bridge.auth import write_private_json
from ..config import user_config_dir
from ..errors import IsthmusError

MAX_SIZE = 64 * 1024  # a login file is a few hundred bytes; anything bigger is not one


class LoginFileError(IsthmusError):
    """The login file exists but cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Login:
    url: str
    token: str
    name: str = ""
    role: str = ""


def login_path() -> Path:
    return user_config_dir() / "login.json"


def read_login(path: Path | None = None) -> Login | None:
    """The stored login, or None when there is none."""
    path = path or login_path()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LoginFileError(f"cannot read the login file {path}: {exc.strerror}; remove it and run "
                             "`isthmus login --bridge URL` again") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise LoginFileError(f"{path} is not a regular file of yours; remove it and run "
                                 "`isthmus login --bridge URL` again")
        if st.st_mode & 0o077:
            raise LoginFileError(f"{path} holds a token and others may read or write it (mode "
                                 f"{st.st_mode & 0o777:o}); run `chmod 600 {path}` (and consider the token "
                                 "compromised)")
        raw = fh.read(MAX_SIZE + 1)
    try:
        data = json.loads(raw) if len(raw) <= MAX_SIZE else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str) or not isinstance(data.get("token"), str):
        raise LoginFileError(f"{path} is not a login file; remove it and run `isthmus login --bridge URL` again")
    return Login(data["url"], data["token"], str(data.get("name", "")), str(data.get("role", "")))


def write_login(login: Login, path: Path | None = None) -> Path:
    """Store ``login`` atomically, mode 600; returns where."""
    path = path or login_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private_json(path, {"url": login.url, "token": login.token, "name": login.name, "role": login.role,
                              "saved": time.time()})
    return path


def remove_login(path: Path | None = None) -> bool:
    """Forget the stored login; False if there was none."""
    path = path or login_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
