"""staging: put and get files through the bridge, streamed both ways, checksummed, atomic.

Upload: ``PUT upload/{sid}?path=&offset=`` streams into ``.<name>.isthmus-partial`` beside
the destination (resuming at ``offset`` = the partial's size), hashing as it writes; then
``POST commit/{sid}`` with the client's size and SHA-256 renames it into place only if
they match — the destination never holds a truncated file. ``POST abort/{sid}`` removes
the partial.

Download: ``GET download/{sid}?path=`` streams the file, hashing as it sends;
``GET checksum/{sid}?path=`` then answers from that hash (or computes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.responses import StreamingResponse

from ...errors import PluginError
from ...sdk.menu import MenuItem, MenuSection
from ...sdk.plugin import Plugin
from ...sdk.session import PluginSession
from ...types import Role
from .config import StagingConfig
from .sandbox import Sandbox

PARTIAL = ".{name}.isthmus-partial"
DIGEST_MEMORY = 256


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

    @staticmethod
    def _sandbox(config: StagingConfig) -> Sandbox:
        roots = config.roots or ["~", os.environ.get("SCRATCH") or "/tmp"]
        return Sandbox(roots, config.allow_dot_dirs)

    async def on_config_reload(self, config: StagingConfig) -> None:
        self.sandbox = self._sandbox(config)

    def register_menu_sections(self) -> list[MenuSection]:
        return [MenuSection(id="data", label="Data", icon="folder", order=60,
                            items=[MenuItem(id="files", label="Files", path="/staging", icon="folder")])]

    def _path(self, request: Request, key: str = "path") -> Path:
        self._get_session(request.path_params["sid"])
        value = request.query_params.get(key)
        if value is None:
            raise PluginError(f"give ?{key}=<path>", 422)
        return self.sandbox.resolve(value)

    async def _body_path(self, request: Request) -> tuple[Path, dict[str, Any]]:
        self._get_session(request.path_params["sid"])
        body = await request.json()
        if not isinstance(body, dict) or not body.get("path"):
            raise PluginError("give {\"path\": ...}", 422)
        return self.sandbox.resolve(str(body["path"])), body

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def _entry(path: Path, st: os.stat_result) -> dict[str, Any]:
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else \
            "link" if stat.S_ISLNK(st.st_mode) else "other"
        return {"name": path.name, "type": kind, "size": st.st_size, "mtime": st.st_mtime,
                "mode": stat.filemode(st.st_mode)}

    async def list_dir(self, request: Request) -> dict[str, Any]:
        path = self._path(request)

        def scan() -> list[dict[str, Any]]:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError as exc:
                raise PluginError(f"{path}: {exc.strerror}", 404 if exc.errno == 2 else 403) from exc
            try:
                out = []
                for name in sorted(os.listdir(fd)):
                    if name.startswith(".") and name not in self.sandbox.allow_dot:
                        continue
                    try:
                        out.append(self._entry(path / name, os.stat(name, dir_fd=fd, follow_symlinks=False)))
                    except OSError:
                        continue
                return out
            finally:
                os.close(fd)

        return {"path": str(path), "entries": await asyncio.to_thread(scan)}

    async def stat(self, request: Request) -> dict[str, Any]:
        path = self._path(request)
        try:
            st = await asyncio.to_thread(os.lstat, path)
        except FileNotFoundError as exc:
            raise PluginError(f"{path} does not exist", 404) from exc
        return {"path": str(path), **self._entry(path, st)}

    async def download(self, request: Request) -> StreamingResponse:
        path = self._path(request)
        fd = await asyncio.to_thread(self.sandbox.open, path, os.O_RDONLY)
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
        path = self._path(request)

        def compute() -> tuple[int, str]:
            fd = self.sandbox.open(path, os.O_RDONLY)
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
        """How much of an interrupted upload to ``path`` is kept (0 when none)."""
        dest = self._path(request)
        async with self._settled(partial_of(dest), dest):
            try:
                size = (await asyncio.to_thread(os.lstat, partial_of(dest))).st_size
            except FileNotFoundError:
                size = 0
        return {"path": str(dest), "partial_size": size}

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
        dest = self._path(request)
        overwrite = _truthy(request.query_params.get("overwrite"))
        offset = int(request.query_params.get("offset", "0"))
        partial = partial_of(dest)
        async with self._settled(partial, dest):
            if await asyncio.to_thread(os.path.lexists, dest) and not overwrite:
                raise PluginError(f"{dest} exists; pass overwrite=true to replace it", 409)
            size, hasher = await asyncio.to_thread(self._resume_state, partial, offset)
            fd = await asyncio.to_thread(self.sandbox.open, partial, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            writer = _Writer(fd, hasher, size)
            try:
                await writer.consume(request.stream(), self.config.max_file_size, dest)
            finally:
                await writer.settle()
                os.close(fd)
                self._uploads[str(partial)] = (writer.size, hasher)
        return {"path": str(dest), "partial_size": writer.size, "sha256": hasher.hexdigest()}

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
        dest, body = await self._body_path(request)
        partial = partial_of(dest)
        overwrite = bool(body.get("overwrite"))

        def finish() -> dict[str, Any]:
            try:
                current = os.lstat(partial).st_size
            except FileNotFoundError as exc:
                raise PluginError(f"no upload in progress for {dest}", 404) from exc
            known = self._uploads.get(str(partial))
            digest = known[1].hexdigest() if known is not None and known[0] == current else \
                self._resume_state(partial, current)[1].hexdigest()
            if current != int(body.get("size", -1)) or digest != body.get("sha256"):
                raise PluginError({"message": "size or SHA-256 does not match what was received; the partial upload "
                                              "is kept: resume it or abort", "partial_size": current,
                                   "sha256": digest}, 409)
            if overwrite:
                os.replace(partial, dest)
            else:
                try:
                    os.link(partial, dest)  # atomic, and never clobbers
                except FileExistsError as exc:
                    raise PluginError(f"{dest} exists; pass overwrite=true to replace it", 409) from exc
                os.unlink(partial)
            self._uploads.pop(str(partial), None)
            return {"path": str(dest), "size": current, "sha256": digest}

        async with self._settled(partial, dest):
            return await asyncio.to_thread(finish)

    async def abort(self, request: Request) -> dict[str, Any]:
        self.require_role(Role.user)
        dest, _ = await self._body_path(request)
        partial = partial_of(dest)
        async with self._settled(partial, dest):
            existed = await asyncio.to_thread(os.path.lexists, partial)
            await asyncio.to_thread(partial.unlink, True)
            self._uploads.pop(str(partial), None)
        return {"path": str(dest), "removed_partial": existed}

    async def mkdir(self, request: Request) -> dict[str, Any]:
        self.require_role(Role.user)
        path, body = await self._body_path(request)
        try:
            await asyncio.to_thread(path.mkdir, 0o755, bool(body.get("parents")), bool(body.get("exist_ok")))
        except FileExistsError as exc:
            raise PluginError(f"{path} exists", 409) from exc
        except FileNotFoundError as exc:
            raise PluginError(f"{path.parent} does not exist (pass parents=true)", 404) from exc
        return {"path": str(path), "created": True}

    async def remove(self, request: Request) -> dict[str, Any]:
        """Remove a file or an empty directory: the edge user's own entries, or any entry for admins."""
        self.require_role(Role.user)
        path, _ = await self._body_path(request)
        who = self.principal()

        def rm() -> str:
            try:
                st = os.lstat(path)
            except FileNotFoundError as exc:
                raise PluginError(f"{path} does not exist", 404) from exc
            if st.st_uid != self.uid and not (who is None or who.is_admin):
                raise PluginError(f"{path} is not owned by {self.user}; only admins may remove it", 403)
            if stat.S_ISDIR(st.st_mode):
                try:
                    os.rmdir(path)
                except OSError as exc:
                    raise PluginError(f"{path} is not empty", 409) from exc
                return "dir"
            os.unlink(path)
            return "file"

        return {"path": str(path), "removed": await asyncio.to_thread(rm)}
