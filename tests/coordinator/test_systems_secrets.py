"""Secrets at rest: MultiFernet keys, rotation (library and CLI), the serve key file."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from coordinator import cli, keys
from coordinator.exceptions import SecretsNotConfigured, SecretUnreadable
from coordinator.systems import registry, secrets
from coordinator.systems.urls import UrlPolicy
from tests.coordinator.systems_support import ACCESS_KEY, SECRET, FakeResolver, body, raw_dump

POLICY = UrlPolicy(resolver=FakeResolver())


def register(client, fernet, name="blue", **overrides):
    return registry.create_system(client, fernet, body(name=name, **overrides), POLICY)


def test_parse_keys_forms():
    a, b = secrets.generate_key(), secrets.generate_key()
    assert secrets.parse_keys(f" {a} , {b} ,") == [a, b]
    assert secrets.parse_keys([a, b]) == [a, b]
    assert secrets.parse_keys(None) == [] and secrets.parse_keys("") == []


def test_no_keys_refused_with_a_clear_message():
    with pytest.raises(SecretsNotConfigured, match="INVOICE_SYNC_SECRET_KEYS"):
        secrets.fernet_from_config({"SECRET_KEYS": None})
    with pytest.raises(SecretsNotConfigured, match="INVOICE_SYNC_SECRET_KEYS"):
        secrets.fernet_from_config({"SECRET_KEYS": " , "})


def test_bad_key_named_by_position_not_value():
    good = secrets.generate_key()
    with pytest.raises(SecretsNotConfigured) as caught:
        secrets.fernet_from_config({"SECRET_KEYS": f"{good},short-key"})
    assert caught.value.message == (
        "INVOICE_SYNC_SECRET_KEYS: key #2 is not a Fernet key (32 url-safe base64-encoded "
        "bytes); make one with `invoice-sync secrets generate-key`")
    assert "short-key" not in str(caught.value)


def test_first_key_encrypts_all_decrypt():
    old, new = secrets.generate_key(), secrets.generate_key()
    token = secrets.encrypt(secrets.fernet_from_keys([old]), SECRET)
    both = secrets.fernet_from_keys([new, old])
    assert secrets.decrypt(both, token) == SECRET
    fresh = secrets.encrypt(both, SECRET)
    assert Fernet(new).decrypt(fresh.encode()).decode() == SECRET
    with pytest.raises(SecretUnreadable) as caught:
        secrets.decrypt(secrets.fernet_from_keys([new]), token)
    assert SECRET not in str(caught.value) and old not in str(caught.value)


def test_credentials_decrypt_and_hide_from_repr(redis_client):
    fernet = secrets.fernet_from_keys([secrets.generate_key()])
    register(redis_client, fernet)
    credentials = registry.get_credentials(redis_client, "blue", fernet)
    url, identifier, secret, access_key = credentials
    assert (identifier, secret, access_key) == ("ident-blue", SECRET, ACCESS_KEY)
    assert url.endswith("/includes/api.php")
    assert SECRET not in repr(credentials) and ACCESS_KEY not in repr(credentials)
    register(redis_client, fernet, name="red", access_key=None)
    assert registry.get_credentials(redis_client, "red", fernet).access_key is None


def test_rotation_procedure_add_rotate_remove(redis_client):
    old, new = secrets.generate_key(), secrets.generate_key()
    register(redis_client, secrets.fernet_from_keys([old]))
    register(redis_client, secrets.fernet_from_keys([old]), name="red", access_key=None)
    # 1. New key in front: everything written under the old one is still readable.
    both = secrets.fernet_from_keys([new, old])
    assert registry.get_credentials(redis_client, "blue", both).secret == SECRET
    # 2. Rotate: blue has secret + access key, red only a secret.
    assert registry.rotate_secrets(redis_client, both) == 3
    record = redis_client.hgetall(keys.system("blue"))
    assert Fernet(new).decrypt(record["api_secret_enc"].encode()).decode() == SECRET
    # 3. Old key removed: still readable with the new key alone.
    only_new = secrets.fernet_from_keys([new])
    assert registry.get_credentials(redis_client, "blue", only_new).access_key == ACCESS_KEY
    assert registry.get_credentials(redis_client, "red", only_new).secret == SECRET
    dump = raw_dump(redis_client)
    assert SECRET not in dump and ACCESS_KEY not in dump


def test_rotation_refuses_when_a_key_is_missing_and_writes_nothing(redis_client):
    lost, kept, new = (secrets.generate_key() for _ in range(3))
    register(redis_client, secrets.fernet_from_keys([kept]), name="blue")
    register(redis_client, secrets.fernet_from_keys([lost]), name="red")
    before = raw_dump(redis_client)
    with pytest.raises(SecretUnreadable, match="red"):
        registry.rotate_secrets(redis_client, secrets.fernet_from_keys([new, kept]))
    assert raw_dump(redis_client) == before


@pytest.fixture
def runner():
    return CliRunner()


def test_cli_generate_key_prints_a_fernet_key(runner):
    result = runner.invoke(cli.main, ["secrets", "generate-key"])
    assert result.exit_code == 0
    Fernet(result.output.strip())  # raises if not a key


def test_cli_rotate(runner, redis_client, valkey, monkeypatch):
    old, new = secrets.generate_key(), secrets.generate_key()
    register(redis_client, secrets.fernet_from_keys([old]))
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    monkeypatch.setenv("INVOICE_SYNC_SECRET_KEYS", f"{new},{old}")
    result = runner.invoke(cli.main, ["secrets", "rotate"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 2" in result.output
    assert SECRET not in result.output
    only_new = secrets.fernet_from_keys([new])
    assert registry.get_credentials(redis_client, "blue", only_new).secret == SECRET


def test_cli_rotate_reports_unreadable_without_secrets(runner, redis_client, valkey, monkeypatch):
    register(redis_client, secrets.fernet_from_keys([secrets.generate_key()]))
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    monkeypatch.setenv("INVOICE_SYNC_SECRET_KEYS", secrets.generate_key())
    result = runner.invoke(cli.main, ["secrets", "rotate"])
    assert result.exit_code == 1
    assert "blue" in result.output and SECRET not in result.output


def test_cli_rotate_without_keys(runner, redis_client, valkey, monkeypatch):
    monkeypatch.setenv("INVOICE_SYNC_REDIS_URL", valkey.url)
    monkeypatch.delenv("INVOICE_SYNC_SECRET_KEYS", raising=False)
    result = runner.invoke(cli.main, ["secrets", "rotate"])
    assert result.exit_code == 1 and "INVOICE_SYNC_SECRET_KEYS" in result.output


def test_key_file_created_0600_once(tmp_path):
    path = tmp_path / "data" / secrets.KEY_FILE_NAME
    found, created = secrets.load_or_create_key_file(path)
    assert created and len(found) == 1
    Fernet(found[0])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = secrets.load_or_create_key_file(path)
    assert (again, created_again) == (found, False)


def test_an_unreadable_secret_says_which_setting_to_fix_and_never_the_secret():
    # decrypt's message becomes the failed sync's error (GET /v1/syncs/{id}); rotate's that of
    # `secrets rotate` when a secret changed under it: the whole text tells the operator what
    # to do, and neither carries the token or a key.
    lost, kept = secrets.generate_key(), secrets.generate_key()
    token = secrets.encrypt(secrets.fernet_from_keys([lost]), SECRET)
    fernet = secrets.fernet_from_keys([kept])
    with pytest.raises(SecretUnreadable) as read:
        secrets.decrypt(fernet, token)
    assert read.value.message == (
        "A stored WHMCS secret cannot be decrypted with the configured keys: was a key "
        "removed from INVOICE_SYNC_SECRET_KEYS before `invoice-sync secrets rotate` ran?")
    with pytest.raises(SecretUnreadable) as rotated:
        secrets.rotate(fernet, token)
    assert rotated.value.message == (
        "A stored WHMCS secret cannot be decrypted with the configured keys, so it cannot be "
        "rotated: put the key that encrypted it back in INVOICE_SYNC_SECRET_KEYS")
    for error in (read.value, rotated.value):
        assert token not in str(error) and lost not in str(error) and kept not in str(error)


def test_key_file_in_a_data_dir_that_exists_or_is_not_made_yet(tmp_path):
    # serve's --data-dir may already exist (a second key file beside the first) or be a path
    # whose parents do not exist yet; either way the file is made, 0600.
    for path in (tmp_path / secrets.KEY_FILE_NAME,
                 tmp_path / "var" / "lib" / "invoice-sync" / secrets.KEY_FILE_NAME):
        found, created = secrets.load_or_create_key_file(path)
        assert created and len(found) == 1
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_made_by_a_racing_start_is_read_not_overwritten(tmp_path, monkeypatch):
    # Two starts both find no file; the other one creates it first: this one reads its key.
    path = tmp_path / secrets.KEY_FILE_NAME
    theirs = secrets.generate_key()
    path.write_text(f"{theirs}\n")
    real_exists = type(path).exists
    monkeypatch.setattr(type(path), "exists",
                        lambda self, **kw: False if self == path else real_exists(self, **kw))
    assert secrets.load_or_create_key_file(path) == ([theirs], False)
    assert path.read_text() == f"{theirs}\n"


def test_key_file_comments_may_be_indented(tmp_path):
    path = tmp_path / secrets.KEY_FILE_NAME
    key = secrets.generate_key()
    path.write_text(f"  # the old key was removed on 2026-11-01\n{key}\n\n")
    assert secrets.read_key_file(path) == [key]


def test_serve_uses_key_file_on_embedded_default(tmp_path, monkeypatch):
    monkeypatch.delenv("INVOICE_SYNC_SECRET_KEYS", raising=False)
    cli._use_key_file(tmp_path)
    first = os.environ["INVOICE_SYNC_SECRET_KEYS"]
    assert secrets.fernet_from_config({"SECRET_KEYS": first})
    # A restart reads the same key; several keys in the file become a comma list.
    extra = secrets.generate_key()
    path = tmp_path / secrets.KEY_FILE_NAME
    path.write_text(f"{extra}\n# old key below\n{first}\n")
    monkeypatch.delenv("INVOICE_SYNC_SECRET_KEYS")
    cli._use_key_file(tmp_path)
    assert os.environ["INVOICE_SYNC_SECRET_KEYS"] == f"{extra},{first}"


def test_serve_prefers_explicit_keys(tmp_path, monkeypatch):
    explicit = secrets.generate_key()
    monkeypatch.setenv("INVOICE_SYNC_SECRET_KEYS", explicit)
    cli._use_key_file(tmp_path)
    assert os.environ["INVOICE_SYNC_SECRET_KEYS"] == explicit
    assert not (tmp_path / secrets.KEY_FILE_NAME).exists()


def test_cli_rotate_on_embedded_default(runner, tmp_path, monkeypatch):
    """With no Redis URL, rotate reaches a running `serve` through its socket and key file."""
    import redis

    from coordinator.ops.embedded import ValkeyServer

    monkeypatch.delenv("INVOICE_SYNC_REDIS_URL", raising=False)
    monkeypatch.delenv("INVOICE_SYNC_SENTINELS", raising=False)
    monkeypatch.delenv("INVOICE_SYNC_SECRET_KEYS", raising=False)
    old, new = secrets.generate_key(), secrets.generate_key()
    with ValkeyServer(tmp_path / "valkey", unixsocket=True) as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        register(client, secrets.fernet_from_keys([old]))
        (tmp_path / secrets.KEY_FILE_NAME).write_text(f"{new}\n{old}\n")
        result = runner.invoke(cli.main, ["secrets", "rotate", "--data-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        credentials = registry.get_credentials(client, "blue", secrets.fernet_from_keys([new]))
        assert credentials.secret == SECRET
        client.close()


def test_cli_rotate_embedded_not_running(runner, tmp_path, monkeypatch):
    monkeypatch.delenv("INVOICE_SYNC_REDIS_URL", raising=False)
    monkeypatch.delenv("INVOICE_SYNC_SENTINELS", raising=False)
    result = runner.invoke(cli.main, ["secrets", "rotate", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "invoice-sync serve" in result.output
