"""staging: put and get files through the bridge, streamed both ways, checksummed, atomic.

Upload: ``PUT upload/{sid}?path=&offset=`` streams into ``.<name>.isthmus-partial`` beside
the destination (resuming at ``offset`` = the partial's size), hashing as it writes; then
``POST commit/{sid}`` with the client's size and SHA-256 renames it into place only if
they match — the destination never holds a truncated file. ``POST abort/{sid}`` removes
the partial.

Download: ``GET download/{sid}?path=`` streams the file, hashing as it sends;
``GET checksum/{sid}?path=`` then answers from that hash (or computes it).

Ownership: the edge writes every file as one Unix user, so the plugin records which
principal (by ``Principal.id``) uploaded each file, made each directory and started each
partial upload (``owners.py``). Someone else's entry is answered as if it did not exist
(404) when read, stat'ed, listed or removed, and refused (409/403) when written over.
Entries Isthmus did not put there are admin-only unless ``shared_read``. In-process callers
(no principal) are trusted, as everywhere in Isthmus.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.responses import StreamingResponse

from ...config import default_state_dir
from ...errors import PluginError
from ...sdk.menu import MenuItem, MenuSection
from ...sdk.plugin import Plugin
from ...sdk.session import PluginSession
from ...types import Principal, Role
from .config import StagingConfig
from .owners import OwnerStore
from .sandbox import Sandbox, names_directory

PARTIAL = ".{name}.isthmus-partial"
DIGEST_MEMORY = 256
LOCAL_OWNER = "local"  # the owner recorded for in-process callers (no principal), as psij does
OWNERS_FILE = "owners.sqlite"


def owner_id(who: Principal | None) -> str:
    return who.id if who is not None else LOCAL_OWNER


def trusted(who: Principal | None) -> bool:
    """In-process callers and admins see and act on every entry."""
    return who is None or who.is_admin


def may_change(owner: str | None, who: Principal | None) -> bool:
    """Replace, resume, abort or remove: only the recorded owner (or a trusted caller)."""
    return trusted(who) or (owner is not None and who is not None and owner == who.id)


def partial_of(dest: Path) -> Path:
    return dest.parent / PARTIAL.format(name=dest.name)


WRITE_SIZE = 4 * 1024 * 1024
LOCK_WAIT = 10.0


def _write_all(fd: int, hasher: Any, data: bytes) -> None:
    """Hash and write in a worker thread: both release the GIL for large buffers."""
    hasher.update(data)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Writer:
    """Writes an upload in large blocks off the event loop; ``size`` counts what reached the file.

    When the request is cancelled mid-write, the thread still owns the descriptor: ``settle``
    waits for it before the caller closes the file.
    """

    def __init__(self, fd: int, hasher: Any, size: int) -> None:
        self.fd = fd
        self.hasher = hasher
        self.size = size
        self._inflight: asyncio.Future[None] | None = None
        self._inflight_size = 0

    async def _write(self, data: bytes) -> None:
        self._inflight = asyncio.ensure_future(asyncio.to_thread(_write_all, self.fd, self.hasher, data))
        self._inflight_size = len(data)
        await asyncio.shield(self._inflight)
        self.size += self._inflight_size
        self._inflight = None

    async def consume(self, stream: AsyncIterator[bytes], limit: int | None, dest: Path) -> None:
        buffer = bytearray()
        received = self.size
        async for chunk in stream:
            received += len(chunk)
            if limit is not None and received > limit:
                raise PluginError(f"{dest}: larger than max_file_size ({limit} bytes)", 413)
            buffer += chunk
            if len(buffer) >= WRITE_SIZE:
                data, buffer = bytes(buffer), bytearray()
                await self._write(data)
        if buffer:
            await self._write(bytes(buffer))

    async def settle(self) -> None:
        if self._inflight is not None:
            try:
                await self._inflight
                self.size += self._inflight_size
            except Exception:  # noqa: BLE001 - the partial is re-hashed from disk on resume
                pass
            self._inflight = None


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


class StagingSession(PluginSession):
    """Staging keeps no per-client state; the session is the seed's handle."""


class PluginStaging(Plugin):
    plugin_name = "staging"
    title = "Files"
    description = "Move files between you and the cluster: streamed, checksummed, resumable, sandboxed."
    version = "0.1.0"
    session_class = StagingSession
    config_model = StagingConfig
    ui_config = {
        "icon": "📁",
        "title": "Files",
        "description": "Browse, upload and download files inside the edge's allowed roots.",
        "forms": [{"id": "list", "title": "List a directory", "fields": [
            {"name": "path", "type": "path", "default": "~"}], "submit": {"label": "List", "method": "GET",
                                                                         "endpoint": "list/{sid}"}}],
    }

    def __init__(self, app: Any = None, instance_name: str | None = None) -> None:
        super().__init__(app, instance_name)
        self._owners: OwnerStore | None = None  # opened on first use: tests set the config after construction
        self._owners_lock = threading.Lock()
        self.sandbox = self._sandbox(self.config)
        self.uid = os.geteuid()
        self.user = getpass.getuser()
        # (partial path) -> (size, hasher) of uploads in progress; (dev, ino, size, mtime) -> sha256 of files sent
        self._uploads: dict[str, tuple[int, Any]] = {}
        self._sent: dict[tuple[int, int, int, int], str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        for path, handler, method in (("list/{sid}", self.list_dir, "get"), ("stat/{sid}", self.stat, "get"),
                                      ("download/{sid}", self.download, "get"),
                                      ("checksum/{sid}", self.checksum, "get"),
                                      ("partial/{sid}", self.partial, "get"),
                                      ("upload/{sid}", self.upload, "put"), ("commit/{sid}", self.commit, "post"),
                                      ("abort/{sid}", self.abort, "post"), ("mkdir/{sid}", self.mkdir, "post"),
                                      ("remove/{sid}", self.remove, "post")):
            getattr(self, f"add_route_{method}")(path, handler)

    def state_dir(self, config: StagingConfig | None = None) -> Path:
        config = config or self.config
        if config.state_dir:
            return Path(config.state_dir).expanduser().resolve()
        app_config = getattr(self.host, "app_config", None)
        root = app_config.resolved_state_dir() if app_config is not None else default_state_dir()
        return (root / "staging").resolve()

    def _sandbox(self, config: StagingConfig) -> Sandbox:
        roots = config.roots or ["~", os.environ.get("SCRATCH") or "/tmp"]
        return Sandbox(roots, config.allow_dot_dirs, deny=[self.state_dir(config)])

    @property
    def owners(self) -> OwnerStore:
        """The ownership records, in the state directory of the config in force."""
        path = self.state_dir() / OWNERS_FILE
        with self._owners_lock:
            if self._owners is None or self._owners.path != path:
                if self._owners is not None:
                    self._owners.close()
                self._owners = OwnerStore(path)
            return self._owners

    async def on_config_reload(self, config: StagingConfig) -> None:
        self.sandbox = self._sandbox(config)

    async def on_shutdown(self) -> None:
        if self._owners is not None:
            self._owners.close()
            self._owners = None

    def register_menu_sections(self) -> list[MenuSection]:
        return [MenuSection(id="data", label="Data", icon="folder", order=60,
                            items=[MenuItem(id="files", label="Files", path="/staging", icon="folder")])]

    def _raw(self, request: Request, key: str = "path") -> str:
        self._get_session(request.path_params["sid"])
        value = request.query_params.get(key)
        if value is None:
            raise PluginError(f"give ?{key}=<path>", 422)
        return value

    def _path(self, request: Request, key: str = "path", file: bool = False) -> Path:
        return self.sandbox.resolve(self._raw(request, key), file=file)

    async def _body_path(self, request: Request, file: bool = False) -> tuple[Path, dict[str, Any]]:
        self._get_session(request.path_params["sid"])
        body = await request.json()
        if not isinstance(body, dict) or not body.get("path"):
            raise PluginError("give {\"path\": ...}", 422)
        return self.sandbox.resolve(str(body["path"]), file=file), body

    # -- who may see what ------------------------------------------------------------------------

    def _may_see(self, path: Path, is_dir: bool, who: Principal | None) -> bool:
        """Read access (list, stat, download): owner, trusted callers, or shared pre-existing data.

        A directory is also visible to whoever owns something below it, so each principal can
        walk down to their own files. Roots are always visible (their listing is filtered).
        """
        if trusted(who) or self.sandbox.is_root(path):
            return True
        assert who is not None
        owner = self.owners.owner(path)
        if owner == who.id:
            return True
        if is_dir and self.owners.owns_below(path, who.id):
            return True
        return owner is None and self.config.shared_read

    def _visible_stat(self, path: Path, who: Principal | None) -> os.stat_result:
        """lstat ``path``; 404 when it is missing or hidden from ``who`` (the same answer)."""
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise PluginError(f"{path} does not exist", 404) from exc
        if not self._may_see(path, stat.S_ISDIR(st.st_mode), who):
            raise PluginError(f"{path} does not exist", 404)
        return st

    def _check_parent(self, path: Path, who: Principal | None) -> None:
        """New entries go only into directories the caller may see (else it is a 404, as for reads)."""
        self._visible_dir(path.parent, who)

    def _visible_dir(self, path: Path, who: Principal | None) -> None:
        st = self._visible_stat(path, who)
        if not stat.S_ISDIR(st.st_mode):
            raise PluginError(f"{path} is not a directory", 409)

    def _check_replace(self, dest: Path, who: Principal | None, overwrite: bool) -> None:
        """May ``who`` put a file at ``dest``? Nothing there, or their own file and ``overwrite``."""
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise PluginError(f"{dest} is a directory; give the path of a file", 409)
        if not overwrite:
            raise PluginError(f"{dest} exists; pass overwrite=true to replace it", 409)
        if not may_change(self.owners.owner(dest), who):
            raise PluginError(f"{dest} exists and is not yours (another principal uploaded it, or it was not put "
                              "there through Isthmus); only its owner or an admin may replace it", 403)

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def _entry(path: Path, st: os.stat_result) -> dict[str, Any]:
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else \
            "link" if stat.S_ISLNK(st.st_mode) else "other"
        return {"name": path.name, "type": kind, "size": st.st_size, "mtime": st.st_mtime,
                "mode": stat.filemode(st.st_mode)}

    async def list_dir(self, request: Request) -> dict[str, Any]:
        """A directory's entries, only those the caller may see (own, or shared, or all for admins)."""
        path = self._path(request)
        who = self.principal()

        def scan() -> list[dict[str, Any]]:
            self._visible_stat(path, who)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError as exc:
                raise PluginError(f"{path}: {exc.strerror}", 404 if exc.errno == 2 else 403) from exc
            try:
                names = os.listdir(fd)
                visible = self._visible_names(path, who)
                out = []
                for name in sorted(names):
                    if name.startswith(".") and name not in self.sandbox.allow_dot:
                        continue
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        continue
                    if visible is None or visible(name, stat.S_ISDIR(st.st_mode)):
                        out.append(self._entry(path / name, st))
                return out
            finally:
                os.close(fd)

        return {"path": str(path), "entries": await asyncio.to_thread(scan)}

    def _visible_names(self, directory: Path, who: Principal | None) -> Callable[[str, bool], bool] | None:
        """A filter (name, is_dir) -> bool for the entries of ``directory``; None when all are visible."""
        if trusted(who):
            return None
        assert who is not None
        owners = self.owners.children(directory)
        leading = self.owners.names_leading_to(directory, who.id)
        shared = self.config.shared_read

        def visible(name: str, is_dir: bool) -> bool:
            owner = owners.get(name)
            if owner == who.id or (is_dir and name in leading):
                return True
            return owner is None and shared

        return visible

    async def stat(self, request: Request) -> dict[str, Any]:
        raw = self._raw(request)
        path = self.sandbox.resolve(raw)
        st = await asyncio.to_thread(self._visible_stat, path, self.principal())
        if names_directory(raw) and not stat.S_ISDIR(st.st_mode):
            raise PluginError(f"{path} is not a directory (the path ends in '/')", 409)
        return {"path": str(path), **self._entry(path, st)}

    def _open_for_read(self, path: Path, who: Principal | None) -> int:
        self._visible_stat(path, who)
        return self.sandbox.open(path, os.O_RDONLY)

    async def download(self, request: Request) -> StreamingResponse:
        path = self._path(request, file=True)
        fd = await asyncio.to_thread(self._open_for_read, path, self.principal())
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        chunk = self.config.chunk_size

        async def body() -> AsyncIterator[bytes]:
            hasher = hashlib.sha256()
            sent = 0
            try:
                while True:
                    data = await asyncio.to_thread(os.read, fd, chunk)
                    if not data:
                        break
                    hasher.update(data)
                    sent += len(data)
                    yield data
                if sent == st.st_size:
                    self._remember(key, hasher.hexdigest())
            finally:
                os.close(fd)

        return StreamingResponse(body(), media_type="application/octet-stream",
                                 headers={"content-length": str(st.st_size), "x-isthmus-size": str(st.st_size)})

    def _remember(self, key: tuple[int, int, int, int], digest: str) -> None:
        self._sent[key] = digest
        while len(self._sent) > DIGEST_MEMORY:
            self._sent.pop(next(iter(self._sent)))

    async def checksum(self, request: Request) -> dict[str, Any]:
        path = self._path(request, file=True)
        who = self.principal()

        def compute() -> tuple[int, str]:
            fd = self._open_for_read(path, who)
            try:
                st = os.fstat(fd)
                known = self._sent.get((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
                if known:
                    return st.st_size, known
                hasher = hashlib.sha256()
                while data := os.read(fd, 4 * 1024 * 1024):
                    hasher.update(data)
                return st.st_size, hasher.hexdigest()
            finally:
                os.close(fd)

        size, digest = await asyncio.to_thread(compute)
        return {"path": str(path), "size": size, "sha256": digest}

    async def partial(self, request: Request) -> dict[str, Any]:
        """How much of the caller's interrupted upload to ``path`` is kept (0 when none, or not theirs)."""
        dest = self._path(request, file=True)
        who = self.principal()

        def size() -> int:
            try:
                st = os.lstat(partial_of(dest))
            except (FileNotFoundError, NotADirectoryError):
                return 0
            return st.st_size if may_change(self.owners.owner(partial_of(dest)), who) else 0

        if await asyncio.to_thread(self._not_mine, partial_of(dest), who):
            return {"path": str(dest), "partial_size": 0}  # without waiting: that would tell an upload is running
        async with self._settled(partial_of(dest), dest):
            kept = await asyncio.to_thread(size)
        return {"path": str(dest), "partial_size": kept}

    def _not_mine(self, partial: Path, who: Principal | None) -> bool:
        """Is ``partial`` (if any) someone else's? Answered before taking its lock, so as not to reveal it."""
        return not may_change(self.owners.owner(partial), who)

    # -- writing -------------------------------------------------------------------------------

    def _lock(self, path: Path) -> asyncio.Lock:
        return self._locks.setdefault(str(path), asyncio.Lock())

    @contextlib.asynccontextmanager
    async def _settled(self, partial: Path, dest: Path) -> AsyncIterator[None]:
        """Hold the partial's lock; an upload still winding down after a broken connection finishes first."""
        lock = self._lock(partial)
        try:
            await asyncio.wait_for(lock.acquire(), LOCK_WAIT)
        except TimeoutError as exc:
            raise PluginError(f"an upload to {dest} is already running", 409) from exc
        try:
            yield
        finally:
            lock.release()

    async def upload(self, request: Request) -> dict[str, Any]:
        self.require_role(Role.user)
        dest = self._path(request, file=True)
        overwrite = _truthy(request.query_params.get("overwrite"))
        offset = int(request.query_params.get("offset", "0"))
        partial = partial_of(dest)
        who = self.principal()
        async with self._settled(partial, dest):
            size, hasher = await asyncio.to_thread(self._start_upload, dest, partial, offset, overwrite, who)
            fd = await asyncio.to_thread(self.sandbox.open, partial, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            writer = _Writer(fd, hasher, size)
            try:
                await writer.consume(request.stream(), self.config.max_file_size, dest)
            finally:
                await writer.settle()
                os.close(fd)
                self._uploads[str(partial)] = (writer.size, hasher)
        return {"path": str(dest), "partial_size": writer.size, "sha256": hasher.hexdigest()}

    def _start_upload(self, dest: Path, partial: Path, offset: int, overwrite: bool,
                      who: Principal | None) -> tuple[int, Any]:
        """Check the destination and the partial belong to the caller; claim the partial before it exists."""
        self._check_parent(dest, who)
        self._check_replace(dest, who, overwrite)
        record = self.owners.record(partial)
        if os.path.lexists(partial) and not may_change(record[0] if record else None, who):
            raise PluginError(f"another upload to {dest} is in progress (not yours); wait for it to finish or "
                              "choose another name", 409)
        state = self._resume_state(partial, offset)
        if record is None or record[0] != owner_id(who):
            self.owners.claim(partial, owner_id(who), "partial")
        return state

    def _resume_state(self, partial: Path, offset: int) -> tuple[int, Any]:
        """Size and running hash of the partial, after checking ``offset`` against it."""
        try:
            current = os.lstat(partial).st_size
        except FileNotFoundError:
            current = 0
        if offset != current:
            if offset == 0:  # a fresh upload replaces a stale partial
                partial.unlink(missing_ok=True)
                self._uploads.pop(str(partial), None)
                return 0, hashlib.sha256()
            raise PluginError({"message": f"resume offset {offset} does not match the partial upload's size "
                                          f"{current}", "partial_size": current}, 409)
        known = self._uploads.get(str(partial))
        if known is not None and known[0] == current:
            return current, known[1]
        hasher = hashlib.sha256()
        if current:
            fd = self.sandbox.open(partial, os.O_RDONLY)
            try:
                while data := os.read(fd, 4 * 1024 * 1024):
                    hasher.update(data)
            finally:
                os.close(fd)
        return current, hasher

    async def commit(self, request: Request) -> dict[str, Any]:
        self.require_role(Role.user)
        dest, body = await self._body_path(request, file=True)
        partial = partial_of(dest)
        overwrite = bool(body.get("overwrite"))
        who = self.principal()

        def finish() -> dict[str, Any]:
            try:
                current = os.lstat(partial).st_size
            except (FileNotFoundError, NotADirectoryError) as exc:
                raise PluginError(f"no upload in progress for {dest}", 404) from exc
            if not may_change(self.owners.owner(partial), who):
                raise PluginError(f"no upload in progress for {dest}", 404)
            known = self._uploads.get(str(partial))
            digest = known[1].hexdigest() if known is not None and known[0] == current else \
                self._resume_state(partial, current)[1].hexdigest()
            if current != int(body.get("size", -1)) or digest != body.get("sha256"):
                raise PluginError({"message": "size or SHA-256 does not match what was received; the partial upload "
                                              "is kept: resume it or abort", "partial_size": current,
                                   "sha256": digest}, 409)
            self._check_replace(dest, who, overwrite)
            # the record first: a crash before the rename leaves a stale record, never an unowned file
            previous = self.owners.record(dest)
            self.owners.claim(dest, owner_id(who), "file")
            try:
                if overwrite:
                    os.replace(partial, dest)
                else:
                    os.link(partial, dest)  # atomic, and never clobbers
            except FileExistsError as exc:
                self.owners.restore(dest, previous)
                raise PluginError(f"{dest} exists; pass overwrite=true to replace it", 409) from exc
            except OSError as exc:  # e.g. a directory made at dest meanwhile
                self.owners.restore(dest, previous)
                raise PluginError(f"{dest}: {exc.strerror}", 409) from exc
            partial.unlink(missing_ok=True)
            self.owners.forget(partial)
            self._uploads.pop(str(partial), None)
            return {"path": str(dest), "size": current, "sha256": digest}

        if await asyncio.to_thread(self._not_mine, partial, who):
            raise PluginError(f"no upload in progress for {dest}", 404)
        async with self._settled(partial, dest):
            return await asyncio.to_thread(finish)

    async def abort(self, request: Request) -> dict[str, Any]:
        """Remove the caller's partial upload; someone else's is left alone (and not revealed)."""
        self.require_role(Role.user)
        dest, _ = await self._body_path(request, file=True)
        partial = partial_of(dest)
        who = self.principal()

        def drop() -> bool:
            if not os.path.lexists(partial):
                return False
            if not may_change(self.owners.owner(partial), who):
                return False
            partial.unlink(missing_ok=True)
            self.owners.forget(partial)
            self._uploads.pop(str(partial), None)
            return True

        if await asyncio.to_thread(self._not_mine, partial, who):
            return {"path": str(dest), "removed_partial": False}
        async with self._settled(partial, dest):
            existed = await asyncio.to_thread(drop)
        return {"path": str(dest), "removed_partial": existed}

    async def mkdir(self, request: Request) -> dict[str, Any]:
        """Make a directory (and missing parents); each one made is recorded as the caller's."""
        self.require_role(Role.user)
        path, body = await self._body_path(request)
        parents, exist_ok = bool(body.get("parents")), bool(body.get("exist_ok"))
        who = self.principal()

        def make() -> bool:
            if os.path.lexists(path):
                if exist_ok and os.path.isdir(path) and not os.path.islink(path) \
                        and self._may_see(path, True, who):
                    return False
                raise PluginError(f"{path} exists", 409)
            missing = [path]
            while not os.path.lexists(missing[-1].parent):
                if not parents or not self.sandbox.inside(missing[-1].parent):
                    raise PluginError(f"{path.parent} does not exist (pass parents=true)", 404)
                missing.append(missing[-1].parent)
            self._visible_dir(missing[-1].parent, who)
            for level in reversed(missing):
                previous = self.owners.record(level)
                self.owners.claim(level, owner_id(who), "dir")
                try:
                    os.mkdir(level, 0o755)
                except FileExistsError as exc:
                    self.owners.restore(level, previous)
                    raise PluginError(f"{level} exists", 409) from exc
                except OSError as exc:
                    self.owners.restore(level, previous)
                    raise PluginError(f"{level}: {exc.strerror}", 409) from exc
            return True

        return {"path": str(path), "created": await asyncio.to_thread(make)}

    async def remove(self, request: Request) -> dict[str, Any]:
        """Remove a file or an empty directory the caller put there (admins: any entry but a root)."""
        self.require_role(Role.user)
        path, body = await self._body_path(request)
        who = self.principal()
        want_dir = names_directory(str(body["path"]))

        def rm() -> str:
            if self.sandbox.is_root(path):
                raise PluginError(f"{path} is an allowed root; it is never removed", 403)
            st = self._visible_stat(path, who)
            is_dir = stat.S_ISDIR(st.st_mode)
            if want_dir and not is_dir:
                raise PluginError(f"{path} is not a directory (the path ends in '/')", 409)
            if not may_change(self.owners.owner(path), who):
                raise PluginError(f"{path} was not put there by you through Isthmus; only its owner or an admin "
                                  "may remove it", 403)
            if st.st_uid != self.uid and not trusted(who):
                raise PluginError(f"{path} is not owned by {self.user}; only admins may remove it", 403)
            if is_dir:
                try:
                    os.rmdir(path)
                except OSError as exc:
                    raise PluginError(f"{path} is not empty", 409) from exc
                self.owners.forget(path, below=True)  # records below an emptied directory are stale
                return "dir"
            os.unlink(path)
            self.owners.forget(path)
            return "file"

        return {"path": str(path), "removed": await asyncio.to_thread(rm)}
