"""Guards of the systems registry that the mutation run (issue 17) found without a test."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime

import pytest

from coordinator import keys
from coordinator.exceptions import Conflict, InvalidInput, NotFound, SecretUnreadable, UnsafeURL
from coordinator.numbering import allocation
from coordinator.numbering import series as numbering_series
from coordinator.systems import registry, secrets
from coordinator.systems.lock import system_lock
from coordinator.systems.urls import UrlPolicy
from tests.coordinator.systems_support import FakeResolver, body, raw_dump

pytestmark = [pytest.mark.integration, pytest.mark.both_servers]

POLICY = UrlPolicy(resolver=FakeResolver())


@pytest.fixture
def fernet():
    return secrets.fernet_from_keys([secrets.generate_key()])


@pytest.mark.parametrize("change, errors", [
    ({"name": "red"}, {"json": {"name": ["A system cannot be renamed."]}}),
    ({"api_secret": None}, {"json": {"api_secret": ["Field may not be null."]}}),
    ({"series": "nowhere"}, {"json": {"series": ["No series 'nowhere'."]}}),
])
def test_a_refused_change_names_its_field_and_changes_nothing(redis_client, fernet, change,
                                                              errors):
    """The registry refuses these itself (the UI and the API both call it): field by field."""
    registry.create_system(redis_client, fernet, body(), POLICY)
    before = redis_client.hgetall(keys.system("blue"))
    with pytest.raises(InvalidInput) as refused:
        registry.update_system(redis_client, "blue", change, POLICY, fernet)
    assert (refused.value.message, refused.value.errors) == ("Validation failed", errors)
    assert redis_client.hgetall(keys.system("blue")) == before


def test_a_new_url_is_checked_then_kept(redis_client, fernet):
    registry.create_system(redis_client, fernet, body(), POLICY)
    with pytest.raises(UnsafeURL):
        registry.update_system(redis_client, "blue",
                               {"url": "https://rebind.example/includes/api.php"}, POLICY)
    red = "https://billing.red.example/includes/api.php"
    assert registry.update_system(redis_client, "blue", {"url": red}, POLICY)["url"] == red
    assert registry.get_credentials(redis_client, "blue", fernet).url == red


def test_a_new_agent_token_records_when_it_was_issued(redis_client, fernet):
    registry.create_system(redis_client, fernet, body(), POLICY,
                           now=lambda: datetime(2026, 11, 21, tzinfo=UTC))
    system, _ = registry.rotate_agent_token(redis_client, "blue",
                                            now=lambda: datetime(2026, 11, 22, 8, 0, tzinfo=UTC))
    assert system["agent_token_issued_at"] == "2026-11-22T08:00:00Z"
    assert registry.get_system(redis_client, "blue")["agent_token_issued_at"] == (
        "2026-11-22T08:00:00Z")


def test_removing_an_access_key_that_was_never_set_is_no_error(redis_client, fernet):
    registry.create_system(redis_client, fernet, body(access_key=None), POLICY)
    system = registry.update_system(redis_client, "blue", {"access_key": None, "step": 7},
                                    POLICY, fernet)
    assert (system["has_access_key"], system["step"]) == (False, 7)


def test_the_central_poll_settings_are_kept_as_given_and_changed_as_asked(redis_client, fernet):
    """What the central poll reads (whether it runs, how often, when WHMCS numbers): kept from
    the registration, changed by an update, and read back as set."""
    registry.create_system(redis_client, fernet, body(central_poll=True, central_poll_minutes=15,
                                                      number_on="created"), POLICY)
    shown = registry.get_system(redis_client, "blue")
    assert (shown["central_poll"], shown["central_poll_minutes"], shown["number_on"]) == (
        True, 15, "created")
    registry.update_system(redis_client, "blue", {"central_poll": False}, POLICY)
    assert registry.get_system(redis_client, "blue")["central_poll"] is False


def test_a_move_that_finds_the_system_moved_meanwhile_is_refused(
    redis_client, fernet, monkeypatch
):
    """Between leaving its old series and writing the record, another admin moved the system
    (its lock lapsed): the record must not be overwritten with a series it was not taken from."""
    numbering_series.create_series(redis_client, "acme")
    numbering_series.create_series(redis_client, "other")
    registry.create_system(redis_client, fernet, body(), POLICY)
    real_leave = numbering_series.leave

    def leave_then_moved_elsewhere(client, series, name, **kwargs):
        real_leave(client, series, name, **kwargs)
        client.hset(keys.system(name), "series", "other")

    monkeypatch.setattr(numbering_series, "leave", leave_then_moved_elsewhere)
    with pytest.raises(Conflict) as refused:
        registry.update_system(redis_client, "blue", {"series": "acme"}, POLICY, fernet)
    assert refused.value.message == "System 'blue' was moved to another series meanwhile; retry"
    assert registry.get_system(redis_client, "blue")["series"] == "other"


def test_a_system_that_has_numbers_can_be_deleted_and_its_numbers_stay(redis_client, fernet):
    """Deleting a system that took real numbers: the numbers stay in the ledger (legal record),
    and having numbers must not block the deletion the way it blocks a move."""
    registry.create_system(redis_client, fernet, body(), POLICY)
    entry, new = allocation.allocate(redis_client, "blue", "invoice", "10", date(2026, 11, 21))
    assert new
    registry.delete_system(redis_client, "blue")
    assert allocation.get(redis_client, entry["id"]) == entry
    with pytest.raises(NotFound):
        registry.get_system(redis_client, "blue")


def test_a_deleted_system_no_longer_holds_its_series(redis_client, fernet):
    """Deleting the only system of a series closes it there, so the series (it issued no
    number) can then be deleted: nothing is left open in it."""
    numbering_series.create_series(redis_client, "acme")
    registry.create_system(redis_client, fernet, body(series="acme"), POLICY)
    registry.delete_system(redis_client, "blue")
    assert redis_client.hget(keys.series_members("acme"), "blue") == numbering_series.CLOSED
    numbering_series.delete_series(redis_client, "acme", [])
    assert not numbering_series.exists(redis_client, "acme")


@pytest.mark.parametrize("change", ["delete", "move"])
def test_a_delete_or_move_waits_for_the_systems_own_lock(redis_client, fernet, change):
    """While another registration, move, deletion or purge of `blue` holds its lock (one
    step per hash slot, so no single transaction protects it), a delete or a move of `blue`
    is refused and changes nothing; `green`'s lock does not hold `blue` up."""
    numbering_series.create_series(redis_client, "acme")
    registry.create_system(redis_client, fernet, body(), POLICY)
    registry.create_system(redis_client, fernet, body(name="green"), POLICY)

    def act() -> None:
        if change == "delete":
            registry.delete_system(redis_client, "blue")
        else:
            registry.update_system(redis_client, "blue", {"series": "acme"}, POLICY, fernet)

    before = redis_client.hgetall(keys.system("blue"))
    with system_lock(redis_client, "blue"):
        with pytest.raises(Conflict) as refused:
            act()
    assert refused.value.message == (
        "System 'blue' is being registered, moved or deleted; retry")
    assert redis_client.hgetall(keys.system("blue")) == before
    assert redis_client.hget(keys.series_members("acme"), "blue") is None
    with system_lock(redis_client, "green"):
        act()
    if change == "delete":
        with pytest.raises(NotFound):
            registry.get_system(redis_client, "blue")
    else:
        assert registry.get_system(redis_client, "blue")["series"] == "acme"


def test_rotation_refuses_an_unreadable_access_key_naming_each_system_and_writes_nothing(
    redis_client,
):
    """A new key was put in front and blue's secret re-entered (now under it), then the old
    key was dropped too early: blue's access key and red's secret (it has no access key) are
    unreadable. Rotation
    checks every secret, names every system concerned and re-encrypts nothing."""
    old, new, newest = (secrets.generate_key() for _ in range(3))
    registry.create_system(redis_client, secrets.fernet_from_keys([old]), body(), POLICY)
    registry.create_system(redis_client, secrets.fernet_from_keys([old]),
                           body(name="red", access_key=None), POLICY)
    registry.update_system(redis_client, "blue", {"api_secret": "re-entered"}, POLICY,
                           secrets.fernet_from_keys([new, old]))
    before = raw_dump(redis_client)
    with pytest.raises(SecretUnreadable) as refused:
        registry.rotate_secrets(redis_client, secrets.fernet_from_keys([newest, new]))
    assert refused.value.message == (
        "No configured key decrypts the secrets of: blue, red. Put the key that encrypted them "
        "back in INVOICE_SYNC_SECRET_KEYS; nothing was re-encrypted.")
    assert raw_dump(redis_client) == before


def test_rotation_counts_the_secrets_it_re_encrypted(redis_client, fernet):
    """A name left in the systems set by an interrupted delete has no secret to count."""
    registry.create_system(redis_client, fernet, body(access_key=None), POLICY)
    redis_client.sadd(keys.SYSTEMS, "ghost")
    assert registry.rotate_secrets(redis_client, fernet) == 1


def test_a_move_can_change_the_secret_in_the_same_request(redis_client, fernet):
    """PATCH with a new series and a new API secret: both are applied, the secret encrypted."""
    numbering_series.create_series(redis_client, "acme")
    registry.create_system(redis_client, fernet, body(), POLICY)
    system = registry.update_system(redis_client, "blue",
                                    {"series": "acme", "api_secret": "new-secret"}, POLICY, fernet)
    assert system["series"] == "acme"
    assert registry.get_credentials(redis_client, "blue", fernet).secret == "new-secret"


def leftover_pages(client, name: str, count: int = 600) -> list[str]:
    """Write ``count`` keys of per-system data of ``name`` (a purge unlinks 500 at a time)."""
    pages = [f"{keys.system_tag(name)}:page:{index}" for index in range(count)]
    client.mset(dict.fromkeys(pages, "x"))
    return pages


def test_a_missing_system_is_named_and_a_malformed_name_is_not_echoed(redis_client):
    """A well-formed name that is not registered is named in the 404; a malformed one (it
    may be anything a client sent) is not repeated back."""
    with pytest.raises(NotFound) as missing:
        registry.update_system(redis_client, "ghost", {"step": 1}, POLICY)
    assert missing.value.message == "No system named 'ghost'"
    for call in (lambda: registry.update_system(redis_client, "../x", {"step": 1}, POLICY),
                 lambda: registry.purge_system_data(redis_client, "../x")):
        with pytest.raises(NotFound) as malformed:
            call()
        assert malformed.value.message == "No such system"


def test_a_purge_waits_for_a_registration_of_the_name_and_then_keeps_its_data(redis_client):
    """A registration holds the system's lock from before its record exists: a purge of the
    same name that starts meanwhile waits for it, then finds the system and deletes nothing."""
    data = keys.system_tag("blue") + ":invoices"
    redis_client.hset(data, "1", "{}")
    pages = leftover_pages(redis_client, "blue")  # more than one batch of the purge
    held = threading.Event()

    def registration() -> None:
        with system_lock(redis_client, "blue"):
            held.set()
            time.sleep(0.5)  # the purge below is waiting now (it waits up to 5 s)
            redis_client.hset(keys.system("blue"), "name", "blue")

    thread = threading.Thread(target=registration)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(Conflict) as refused:
            registry.purge_system_data(redis_client, "blue")
    finally:
        thread.join()
    assert refused.value.message == "System 'blue' exists; its data is not purged"
    assert redis_client.hget(data, "1") == "{}"
    assert redis_client.exists(*pages) == len(pages)


def test_a_registration_that_clears_old_data_of_its_name_keeps_its_lock(
    redis_client, fernet, monkeypatch
):
    """Leftovers of an earlier system of the name are cleared under the name's lock, which is
    a key of the same hash tag: the clearing must not take the lock with it, or a purge of
    the name could run while the registration finishes."""
    pages = leftover_pages(redis_client, "blue")  # more than one batch of the clearing
    locked_at_join = []
    real_join = numbering_series.join

    def join(client, series, name):
        locked_at_join.append(client.exists(keys.system_series_lock(name)))
        return real_join(client, series, name)

    monkeypatch.setattr(numbering_series, "join", join)
    registry.create_system(redis_client, fernet, body(), POLICY)
    assert locked_at_join == [1]
    assert redis_client.exists(*pages) == 0


def test_a_system_changed_under_every_retry_is_refused_with_a_409_to_retry(redis_client, fernet):
    # Another admin's write lands between WATCH and EXEC of every attempt: after the last retry
    # the change is refused (409) with what to do, and nothing of it is written.
    registry.create_system(redis_client, fernet, body(), POLICY)
    key = keys.system("blue")
    attempts = []

    def change(pipe):
        attempts.append(1)
        redis_client.hset(key, "description", f"changed {len(attempts)}")
        pipe.multi()
        pipe.hset(key, "step", "7")

    with pytest.raises(Conflict) as refused:
        registry._transaction(redis_client, key, change)
    assert refused.value.message == "The system was changed concurrently too often; retry"
    assert (len(attempts), redis_client.hget(key, "step")) == (20, "100")


def test_a_record_that_appears_after_the_locked_check_is_not_overwritten(
    redis_client, fernet, monkeypatch
):
    # The transaction checks again: a writer that does not take the system's lock (the upgrade
    # notes say to stop every coordinator of the previous release) and writes the record right
    # before it keeps its record; the registration answers 409 and issues no agent token.
    theirs = {"name": "blue", "url": "https://billing.red.example/includes/api.php"}
    unlink = registry._unlink_data

    def written_meanwhile(client, name, **kwargs):
        client.hset(keys.system(name), mapping=theirs)
        return unlink(client, name, **kwargs)

    monkeypatch.setattr(registry, "_unlink_data", written_meanwhile)
    tokens = redis_client.hgetall(keys.TOKENS)
    with pytest.raises(Conflict) as refused:
        registry.create_system(redis_client, fernet, body(), POLICY)
    assert refused.value.message == "A system named 'blue' already exists"
    assert redis_client.hgetall(keys.system("blue")) == theirs
    assert redis_client.hgetall(keys.TOKENS) == tokens


def test_a_registration_whose_series_is_deleted_meanwhile_is_undone(
    redis_client, fernet, monkeypatch
):
    # Another admin deletes the series between the registration's check and its join: the
    # registration is undone (no record, no agent token) and answers the series' 422.
    numbering_series.create_series(redis_client, "acme")
    real_join = numbering_series.join

    def join(client, series, name):
        numbering_series.delete_series(client, series, [])
        return real_join(client, series, name)

    monkeypatch.setattr(numbering_series, "join", join)
    tokens = redis_client.hgetall(keys.TOKENS)
    with pytest.raises(InvalidInput) as refused:
        registry.create_system(redis_client, fernet, body(series="acme"), POLICY)
    assert refused.value.errors == {"json": {"series": ["No series 'acme'."]}}
    assert not redis_client.exists(keys.system("blue"))
    assert "blue" not in redis_client.smembers(keys.SYSTEMS)
    assert redis_client.hgetall(keys.TOKENS) == tokens
