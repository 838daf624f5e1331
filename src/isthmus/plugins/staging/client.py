"""Python client of the staging plugin: streaming put/get with SHA-256 checks and resume."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from ...errors import ClientError
from ...sdk.client import PluginClient

CHUNK = 1024 * 1024
Progress = Callable[[int, int], None]  # (bytes done, total)
LONG = {"X-Isthmus-Deadline": "3600"}


class StagingClient(PluginClient):
    plugin_name = "staging"

    def list(self, remote_path: str = "~") -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"list/{self._require_sid()}", path=remote_path))

    def stat(self, path: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"stat/{self._require_sid()}", path=path))

    def mkdir(self, path: str, parents: bool = False, exist_ok: bool = False) -> dict[str, Any]:
        body = {"path": path, "parents": parents, "exist_ok": exist_ok}
        return cast(dict[str, Any], self._post(f"mkdir/{self._require_sid()}", json=body))

    def remove(self, path: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._post(f"remove/{self._require_sid()}", json={"path": path}))

    def checksum(self, path: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._get(f"checksum/{self._require_sid()}", path=path))

    def put(self, local_src: str | os.PathLike[str], remote_dst: str, overwrite: bool = False, resume: bool = False,
            progress: Progress | None = None) -> dict[str, Any]:
        """Upload a file; resumes an interrupted upload when ``resume``. Returns {path, size, sha256}."""
        src = Path(local_src)
        total = src.stat().st_size
        sid = self._require_sid()
        offset = self._get(f"partial/{sid}", path=remote_dst)["partial_size"] if resume else 0
        if offset > total:
            offset = 0
        hasher = hashlib.sha256()
        with open(src, "rb") as fh:
            if offset:
                left = offset
                while left:
                    data = fh.read(min(CHUNK, left))
                    hasher.update(data)
                    left -= len(data)

            def body() -> Iterator[bytes]:
                done = offset
                while data := fh.read(CHUNK):
                    hasher.update(data)
                    done += len(data)
                    if progress is not None:
                        progress(done, total)
                    yield data

            resp = self._http.put(self._url(f"upload/{sid}"), content=body(),
                                  params={"path": remote_dst, "offset": offset, "overwrite": str(overwrite).lower()},
                                  headers={**LONG, "content-length": str(total - offset)}, timeout=None)
            self._raise(resp, f"upload {src} → {remote_dst}")
        digest = hasher.hexdigest()
        commit = {"path": remote_dst, "size": total, "sha256": digest, "overwrite": overwrite}
        return cast(dict[str, Any], self._post(f"commit/{sid}", json=commit))

    def abort(self, remote_dst: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._post(f"abort/{self._require_sid()}", json={"path": remote_dst}))

    def get(self, remote_src: str, local_dst: str | os.PathLike[str], overwrite: bool = False,
            progress: Progress | None = None) -> dict[str, Any]:
        """Download a file; it lands at ``local_dst`` only complete and verified."""
        dst = Path(local_dst)
        if dst.is_dir():
            dst = dst / Path(remote_src).name
        if dst.exists() and not overwrite:
            raise ClientError(f"{dst} exists; pass overwrite=True", status_code=409)
        tmp = dst.parent / f".{dst.name}.isthmus-partial"
        sid = self._require_sid()
        hasher = hashlib.sha256()
        size = 0
        try:
            with self._http.stream("GET", self._url(f"download/{sid}"), params={"path": remote_src},
                                   headers=LONG, timeout=None) as resp:
                if not resp.is_success:
                    resp.read()
                    self._raise(resp, f"download {remote_src}")
                total = int(resp.headers.get("x-isthmus-size", 0))
                with open(tmp, "wb") as out:
                    for data in resp.iter_bytes(CHUNK):
                        out.write(data)
                        hasher.update(data)
                        size += len(data)
                        if progress is not None:
                            progress(size, total)
            remote = self.checksum(remote_src)
            if size != remote["size"] or hasher.hexdigest() != remote["sha256"]:
                raise ClientError(f"download of {remote_src} is damaged: got {size} bytes, "
                                  f"expected {remote['size']} with another checksum", status_code=502)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        return {"path": str(dst), "size": size, "sha256": hasher.hexdigest()}
