"""The audit log's file handling and the rate limiter's arithmetic, without a bridge."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from isthmus.bridge.audit import AuditLog, parse_since, read_entries
from isthmus.bridge.limits import MAX_ADDRESSES, Buckets, Limits, retry_after
from isthmus.logs import correlation_label


def test_audit_log_rotates_by_size_and_reads_back_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_bytes=4096, backups=2)
    for i in range(200):
        log.write({"action": "x", "principal": f"p{i % 3}", "edge": "e1" if i % 2 else "e2", "n": i})
    log.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.log", "audit.log.1", "audit.log.2"]
    assert all(p.stat().st_size <= 4096 for p in tmp_path.iterdir())
    numbers = [e["n"] for e in read_entries(path)]
    assert numbers == sorted(numbers) and numbers[-1] == 199 and numbers[0] > 0  # the oldest rotated away
    assert all(e["principal"] == "p1" for e in read_entries(path, principal="p1"))
    assert all(e["edge"] == "e1" for e in read_entries(path, edge="e1"))


def test_audit_log_skips_bad_lines_and_refuses_a_symlink(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b'{"action": "ok", "time": "2026-01-01T00:00:00.000Z"}\nnot json\n[1]\n')
    assert [e["action"] for e in read_entries(path)] == ["ok"]
    assert list(read_entries(path, since=parse_since("2026-06-01T00:00:00Z"))) == []
    (tmp_path / "target").write_text("")
    link = tmp_path / "link.log"
    link.symlink_to(tmp_path / "target")
    with pytest.raises(OSError):
        AuditLog(link).write({"action": "x"})


def test_parse_since() -> None:
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("1.5d", now=200_000.0) == 200_000.0 - 1.5 * 86400
    assert parse_since("2026-11-23T10:00:00Z") == parse_since("2026-11-23T10:00:00+00:00")
    with pytest.raises(ValueError, match="--since takes"):
        parse_since("yesterday")


def test_buckets_refill_and_say_how_long_to_wait() -> None:
    b = Buckets(rate=2.0, burst=4)
    assert [b.take("a", now=0.0) for _ in range(4)] == [0.0] * 4
    assert b.take("a", now=0.0) == pytest.approx(0.5)
    assert b.take("a", now=0.5) == 0.0  # one token back after half a second
    assert b.take("b", now=0.5) == 0.0  # another key has its own bucket
    assert retry_after(0.01) == b"1" and retry_after(2.2) == b"3"


def test_failure_table_is_capped_and_blocks_after_the_burst() -> None:
    limits = Limits(rate=0, burst=1, failures_per_minute=3)
    assert limits.request("anyone") == 0.0  # rate 0: no per-principal limit
    for _ in range(3):
        assert limits.address_blocked("10.0.0.1") == 0.0
        limits.failed("10.0.0.1")
    assert limits.address_blocked("10.0.0.1") > 0
    assert limits.address_blocked("10.0.0.2") == 0.0
    assert limits.failures is not None
    for i in range(MAX_ADDRESSES + 10):
        limits.failed(f"addr-{i}")
    assert len(limits.failures) <= MAX_ADDRESSES


def test_correlation_labels_are_kept_only_when_well_formed() -> None:
    assert correlation_label(b"trace-1:abc/2") == "trace-1:abc/2"
    assert correlation_label(b"x" * 129) is None
    assert correlation_label(b"bad value\r\n") is None
    assert correlation_label(None) is None
