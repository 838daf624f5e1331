"""SDK details: session TTL, _create_session kwargs, ui_config validation, sysinfo probes."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.testclient import TestClient

from isthmus import Plugin, PluginSession
from isthmus.plugins.sysinfo.probe import parse_mounts
from isthmus.sdk.ui import validate_ui_config


class Counting(PluginSession):
    closed = 0

    def __init__(self, sid: str, color: str = "red") -> None:
        super().__init__(sid)
        self.color = color

    async def close(self) -> dict:
        Counting.closed += 1
        return await super().close()


class PluginTTL(Plugin):
    plugin_name = "ttl"
    session_class = Counting
    session_ttl = 10.0


def test_register_session_kwargs_and_ttl_reaping() -> None:
    app = FastAPI()
    plugin = PluginTTL(app)
    client = TestClient(app)
    sid = client.post("/ttl/register_session", json={"color": "blue"}).json()["sid"]
    assert plugin._sessions[sid].color == "blue"
    bad = client.post("/ttl/register_session", json={"colour": "blue"})
    assert bad.status_code == 422 and "colour" in bad.json()["detail"]
    session = plugin._sessions[sid]
    assert asyncio.run(plugin.reap_sessions(session.last_used + 5)) == 0
    assert asyncio.run(plugin.reap_sessions(session.last_used + 11)) == 1
    assert Counting.closed == 1 and sid not in plugin._sessions
    assert client.get(f"/ttl/unregister_session/{sid}").status_code == 405
    assert client.post(f"/ttl/unregister_session/{sid}").status_code == 410


def test_ui_config_is_validated() -> None:
    ok = validate_ui_config({"title": "x", "forms": [{"id": "f", "fields": [{"name": "a", "type": "select",
                                                                            "options": ["x", "y"]}]}]})
    assert ok["forms"][0]["submit"]["method"] == "POST"
    with pytest.raises(ValidationError, match="typo"):
        validate_ui_config({"title": "x", "typo": 1})
    with pytest.raises(ValidationError):
        validate_ui_config({"monitors": [{"id": "m", "type": "pie"}]})
    with pytest.raises(ValidationError, match="duplicate"):
        validate_ui_config({"forms": [{"id": "f", "fields": [{"name": "a"}, {"name": "a"}]}]})


def test_bad_ui_config_fails_plugin_construction() -> None:
    class PluginBadUI(Plugin):
        plugin_name = "badui"
        ui_config = {"monitors": [{"id": "m", "type": "pie"}]}

    with pytest.raises(ValidationError):
        PluginBadUI(FastAPI())


def test_shared_filesystems_from_proc_mounts() -> None:
    text = "\n".join([
        "proc /proc proc rw 0 0",
        "10.1.1.1@o2ib:/scratch /lustre/scratch lustre rw,flock 0 0",
        "gpfs1 /gpfs/home gpfs rw 0 0",
        "nfs.site:/export/home /home nfs4 rw,vers=4.2 0 0",
        "beegfs_nodev /mnt/beegfs beegfs rw 0 0",
        "10.0.0.5:6789:/ /cephfs ceph rw 0 0",
        "dvs /opt/cray dvs rw 0 0",
        "/dev/sda1 / ext4 rw 0 0",
    ])
    kinds = {m["mountpoint"]: m["kind"] for m in parse_mounts(text)}
    assert kinds == {"/lustre/scratch": "Lustre", "/gpfs/home": "GPFS", "/home": "NFS",
                     "/mnt/beegfs": "BeeGFS", "/cephfs": "CephFS", "/opt/cray": "DVS"}


def test_sysinfo_response_shapes() -> None:
    """Contract of sysinfo's answers: keys the Explorer and clients rely on."""
    from isthmus.plugins.sysinfo.plugin import PluginSysinfo

    app = FastAPI()
    PluginSysinfo(app)
    client = TestClient(app)
    info = client.get("/sysinfo/info").json()
    assert {"host", "os", "cpu", "memory", "disks", "network", "gpus", "filesystems"} <= set(info)
    assert {"model", "cores", "threads"} <= set(info["cpu"])
    assert "swap" not in info  # not promised
    sid = client.post("/sysinfo/register_session").json()["sid"]
    metrics = client.get(f"/sysinfo/metrics/{sid}").json()
    assert {"time", "cpu_percent", "per_cpu", "memory_percent", "load", "gpus"} <= set(metrics)
    assert 0 <= metrics["memory_percent"] <= 100
    assert client.get("/sysinfo/homedir").json()["homedir"].startswith("/")
