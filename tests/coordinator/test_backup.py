"""Backup and restore on real servers: under load, into a fresh data dir, refusals."""

from __future__ import annotations

import base64
import json
import stat
import threading
import time
from datetime import date

import pytest
import redis
from click.testing import CliRunner

from coordinator import keys
from coordinator.backup import archive, snapshot
from coordinator.cli import main
from coordinator.exceptions import BackupRefused, NumberingNotInitialised
from coordinator.numbering import allocation, chain, iter_ledger, series
from coordinator.ops.embedded import ValkeyServer
from tests.support import require_tool
from tests.support import snapshot as store_contents

pytestmark = pytest.mark.integration

DAY = date(2026, 5, 5)


def _bytes_client(server: ValkeyServer) -> redis.Redis:
    return redis.Redis.from_url(server.url)


def _take_file(server: ValkeyServer, path, monkeypatch, *extra: str) -> None:
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", server.url)
    result = CliRunner().invoke(main, ["backup", "--output", str(path), *extra])
    assert result.exit_code == 0, result.output
    monkeypatch.delenv("INVOICE_SYNC_REDIS_URL")


def _number(allocation_id: str) -> int:
    return int(allocation_id.rsplit(":", 1)[1])


# (system, document): blue numbers in default, green in the series "eu"; both sequences.
STREAMS = (("blue", "invoice"), ("blue", "credit_note"), ("green", "invoice"),
           ("green", "credit_note"))
SERIES_OF = {"blue": "default", "green": "eu"}


def _two_series(client: redis.Redis) -> None:
    series.create_series(client, "eu", "EU entity")
    series.leave(client, "default", "green")
    series.join(client, "eu", "green")
    client.hset(keys.system("green"), mapping={"name": "green", "series": "eu"})


def _ledger(client: redis.Redis, name: str, sequence: str) -> list[dict]:
    return list(iter_ledger(client, sequence, "2026", series=name))


def test_backup_under_load_restores_into_fresh_data_dir_and_numbering_continues(
        valkey, redis_client, tmp_path, monkeypatch):
    _two_series(redis_client)
    issued: dict[tuple[str, str, str], str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def allocate_until_stopped(system: str, document: str) -> None:
        worker_client = redis.Redis.from_url(valkey.url, decode_responses=True)
        count = 0
        while not stop.is_set() or count < 10:
            reference = f"{system}-{document}-{count}"
            entry, _new = allocation.allocate(worker_client, system, document, reference, DAY)
            with lock:
                issued[(system, document, reference)] = entry["id"]
            count += 1
        worker_client.close()

    threads = [threading.Thread(target=allocate_until_stopped, args=stream)
               for stream in STREAMS]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # some numbers of every stream exist before the backup
        with lock:
            if len(issued) >= 20 and {(s, d) for s, d, _ in issued} == set(STREAMS):
                break
        time.sleep(0.01)
    before = dict(issued)
    path = tmp_path / "backup.json"
    _take_file(valkey, path, monkeypatch)
    stop.set()
    for thread in threads:
        thread.join()
    assert len(issued) > len(before)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    data_dir = tmp_path / "fresh"
    monkeypatch.delenv("INVOICE_SYNC_SECRET_KEYS", raising=False)
    result = CliRunner().invoke(main, ["restore", "--data-dir", str(data_dir), str(path)])
    assert result.exit_code == 0, result.output
    assert "numbering of series default, eu waits" in result.output

    with ValkeyServer(data_dir / "valkey", unixsocket=True) as restored:
        client = redis.Redis.from_url(restored.url, decode_responses=True)
        # Numbers issued after the backup may be in WHMCS: nothing new until recover ran.
        with pytest.raises(NumberingNotInitialised, match="waits after a restore"):
            allocation.allocate(client, "blue", "invoice", "after-restore", DAY)
        last = {}
        for system, document in STREAMS:
            name = SERIES_OF[system]
            ledger = _ledger(client, name, document)
            numbers = [entry["number"] for entry in ledger]
            assert numbers == list(range(1, len(numbers) + 1))  # no gap, no duplicate
            last[(system, document)] = numbers[-1]
            mine = {(e["system"], e["document"], e["reference"]): e["id"] for e in ledger}
            # Every reference taken before the backup started is in it, with its number.
            assert {k: v for k, v in before.items() if k[:2] == (system, document)}.items() \
                <= mine.items()
            for (sys_name, doc, reference), allocation_id in mine.items():
                assert issued[(sys_name, doc, reference)] == allocation_id
                # A replay answers even while new numbers wait.
                entry, new = allocation.allocate(client, sys_name, doc, reference, DAY)
                assert (entry["id"], new) == (allocation_id, False)
            verified = chain.verify(client, document, series=name)
            assert verified["ok"] and verified["unchained_numbers"] == 0, verified
        # No system is registered here (the streams used bare agent names): recover reads no
        # WHMCS, finds nothing above the counters and lets both series number again.
        result = CliRunner().invoke(main, ["recover", "--data-dir", str(data_dir),
                                           "--reason", "restore test"])
        assert result.exit_code == 0, result.output
        assert "numbering resumes in series: default, eu" in result.output
        for system, document in STREAMS:
            entry, new = allocation.allocate(client, system, document, "after-restore", DAY)
            assert new and entry["number"] == last[(system, document)] + 1
        client.close()


def test_restore_refuses_a_non_empty_store_and_changes_nothing(valkey, redis_client, tmp_path,
                                                               monkeypatch):
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    path = tmp_path / "backup.json"
    _take_file(valkey, path, monkeypatch)
    redis_client.flushall()
    redis_client.set("something", "else")
    body = archive.read(path)
    with pytest.raises(BackupRefused, match=r"^the store is not empty \(1 keys\)"):
        snapshot.restore(_bytes_client(valkey), body["snapshot"]["units"])
    assert redis_client.keys("*") == ["something"]


def test_restore_refuses_a_truncated_file_and_a_non_empty_store_with_clear_errors(
        valkey, redis_client, tmp_path, monkeypatch):
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    path = tmp_path / "backup.json"
    _take_file(valkey, path, monkeypatch)
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    data_dir = tmp_path / "fresh"
    result = CliRunner().invoke(main, ["restore", "--data-dir", str(data_dir), str(truncated)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {truncated} is not a readable backup file (")
    assert not (data_dir / "valkey").exists()

    before = store_contents(redis_client)
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    result = CliRunner().invoke(main, ["restore", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: the store is not empty (")
    assert "nothing was changed" in result.output
    assert store_contents(redis_client) == before


def test_a_changed_backup_file_is_refused(valkey, redis_client, tmp_path, monkeypatch):
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    path = tmp_path / "backup.json"
    _take_file(valkey, path, monkeypatch)
    document = json.loads(path.read_text())
    document["body"]["created_at"] = "2020-01-01T00:00:00Z"
    path.write_text(json.dumps(document))
    with pytest.raises(BackupRefused, match="checksum mismatch"):
        archive.read(path)


def test_rate_limit_counters_rq_keys_and_dashboard_logins_are_left_out(
        valkey, redis_client, tmp_path, monkeypatch):
    redis_client.flushall()
    redis_client.set(keys.rate_limit("0" * 64, 1), 3)
    redis_client.set("rq:queue:syncs", "x")
    redis_client.hset(keys.ui_session("0" * 64), "kind", "admin")
    redis_client.hset(keys.TOKENS, "digest", "{}")
    taken = snapshot.take(_bytes_client(valkey))
    names = {name for unit in taken["units"] for name, _ttl, _payload in unit["keys"]}
    assert {base64.b64decode(name).decode() for name in names} == {keys.TOKENS}


def test_secret_keys_are_encrypted_and_restored_with_the_passphrase(
        valkey, redis_client, tmp_path, monkeypatch):
    from cryptography.fernet import Fernet

    secret = Fernet.generate_key().decode()
    redis_client.set("k", "v")
    monkeypatch.setenv("INVOICE_SYNC_SECRET_KEYS", secret)
    monkeypatch.setenv("INVOICE_SYNC_BACKUP_PASSPHRASE", "correct horse")
    path = tmp_path / "backup.json"
    _take_file(valkey, path, monkeypatch, "--with-secret-keys")
    assert secret not in path.read_text()
    monkeypatch.delenv("INVOICE_SYNC_SECRET_KEYS")

    data_dir = tmp_path / "fresh"
    monkeypatch.setenv("INVOICE_SYNC_BACKUP_PASSPHRASE", "wrong")
    result = CliRunner().invoke(main, ["restore", "--data-dir", str(data_dir),
                                       "--with-secret-keys", str(path)])
    assert result.exit_code == 1
    assert "Error: the passphrase does not open the backup's secret keys\n" in result.output
    assert not (data_dir / "secret-keys").exists()
    assert not (data_dir / "valkey").exists()  # refused before the store was touched
    monkeypatch.setenv("INVOICE_SYNC_BACKUP_PASSPHRASE", "correct horse")
    result = CliRunner().invoke(main, ["restore", "--data-dir", str(data_dir),
                                       "--with-secret-keys", str(path)])
    assert result.exit_code == 0, result.output
    key_file = data_dir / "secret-keys"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert secret in key_file.read_text().splitlines()


def test_restore_into_an_older_server_is_refused_before_writing(valkey, redis_client, tmp_path,
                                                                monkeypatch):
    binary = require_tool("redis-server")
    allocation.allocate(redis_client, "blue", "invoice", "1", DAY)
    taken = snapshot.take(_bytes_client(valkey))
    payload_version = snapshot.rdb_version(base64.b64decode(taken["units"][0]["keys"][0][2]))
    with ValkeyServer(tmp_path / "old", binary=binary) as old:
        own = _bytes_client(old)
        own.set("probe", 1)
        own_version = snapshot.rdb_version(own.dump("probe"))
        own.delete("probe")
        # The premise of the test (Valkey 8 writes RDB 11, Redis 7.0 reads up to 10).
        assert own_version < payload_version
        with pytest.raises(BackupRefused, match="cannot read the backup's DUMP payloads"):
            snapshot.restore(own, taken["units"])
        assert own.dbsize() == 0


def test_a_directory_output_gets_time_stamped_files_and_keep_prunes_the_oldest(
        valkey, redis_client, tmp_path, monkeypatch):
    redis_client.set("k", "v")
    folder = tmp_path / "backups"
    folder.mkdir()
    older = [folder / f"invoice-sync-backup-2020010{day}T000000Z.json" for day in (1, 2, 3)]
    for path in older:
        path.write_text("{}")
    (folder / "unrelated.json").write_text("{}")
    _take_file(valkey, folder, monkeypatch, "--keep", "2")
    remaining = sorted(p.name for p in folder.iterdir())
    new = [name for name in remaining
           if name.startswith("invoice-sync-backup-") and name not in {o.name for o in older}]
    assert remaining == sorted([older[2].name, *new, "unrelated.json"]) and len(new) == 1
    assert archive.read(folder / new[0])["snapshot"]["units"]
