"""Read the host's facts with psutil and /proc; every function is blocking (run in a thread)."""

from __future__ import annotations

import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

import psutil

SHARED_FS = {"lustre": "Lustre", "gpfs": "GPFS", "nfs": "NFS", "nfs4": "NFS", "beegfs": "BeeGFS",
             "ceph": "CephFS", "fuse.ceph": "CephFS", "fuse.cephfs": "CephFS", "dvs": "DVS",
             "fuse.beegfs": "BeeGFS", "panfs": "PanFS", "wekafs": "WekaFS"}
PSEUDO_FS = {"proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "cgroup", "cgroup2", "securityfs",
             "pstore", "bpf", "debugfs", "tracefs", "mqueue", "hugetlbfs", "configfs", "fusectl",
             "autofs", "binfmt_misc", "overlay", "nsfs", "rpc_pipefs", "squashfs"}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_mounts(text: str) -> list[dict[str, str]]:
    """Shared filesystems from /proc/mounts text, labelled by kind."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        device, mountpoint, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        kind = SHARED_FS.get(fstype)
        if kind:
            out.append({"device": device, "mountpoint": mountpoint, "fstype": fstype, "kind": kind})
    return out


def shared_filesystems() -> list[dict[str, str]]:
    try:
        return parse_mounts(Path("/proc/mounts").read_text())
    except OSError:
        return []


def disks() -> list[dict[str, Any]]:
    out = []
    for part in psutil.disk_partitions(all=False):
        if part.fstype in PSEUDO_FS:
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        out.append({"mountpoint": part.mountpoint, "device": part.device, "fstype": part.fstype,
                    "total": usage.total, "used": usage.used, "free": usage.free, "percent": usage.percent})
    return out


def network() -> list[dict[str, Any]]:
    stats = psutil.net_if_stats()
    out = []
    for name, addrs in psutil.net_if_addrs().items():
        st = stats.get(name)
        out.append({
            "name": name,
            "up": bool(st and st.isup),
            "speed_mbps": st.speed if st else None,
            "mtu": st.mtu if st else None,
            "addresses": [a.address for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)],
        })
    return out


def gpus() -> list[dict[str, Any]]:
    """NVIDIA GPUs through NVML when nvidia-ml-py and a driver exist; [] otherwise, never a hang."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver: no GPUs
        return []
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            name = pynvml.nvmlDeviceGetName(h)
            out.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                        "memory_total": mem.total, "memory_used": mem.used, "utilization": util.gpu})
        return out
    finally:
        pynvml.nvmlShutdown()


def system_info() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    uname = platform.uname()
    return {
        "host": socket.gethostname(),
        "fqdn": socket.getfqdn(),
        "os": {"system": uname.system, "release": uname.release, "version": uname.version,
               "machine": uname.machine, "python": platform.python_version()},
        "cpu": {"model": cpu_model(), "cores": psutil.cpu_count(logical=False) or 0,
                "threads": psutil.cpu_count(logical=True) or 0},
        "memory": {"total": vm.total, "available": vm.available},
        "boot_time": psutil.boot_time(),
        "disks": disks(),
        "network": network(),
        "gpus": gpus(),
        "filesystems": shared_filesystems(),
    }


def metrics() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    net = psutil.net_io_counters()
    return {
        "time": time.time(),
        "cpu_percent": psutil.cpu_percent(interval=None),
        "per_cpu": psutil.cpu_percent(interval=None, percpu=True),
        "memory_percent": vm.percent,
        "memory_used": vm.total - vm.available,
        "load": list(load),
        "net_bytes_sent": net.bytes_sent if net else 0,
        "net_bytes_recv": net.bytes_recv if net else 0,
        "gpus": gpus(),
    }
