"""Validated snapshots: a second load of unchanged files gives the same world without validating; any change to
a file (or to a table it references) validates again; a broken snapshot is ignored; deferred events are read
and validated only when used."""

import os

import pytest
from contract_tables import EVENT_TYPES, VALID, write
from polars.testing import assert_frame_equal

import campaigns.contracts as contracts
from campaigns.contracts import TABLES, ContractError, load_world


def load(directory, cache, **kwargs):
    return load_world(directory, event_types=EVENT_TYPES, snapshots=cache, **kwargs)


def frames(world):
    return {name: getattr(world, name).lazy().collect() for name in TABLES}


def no_validation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("validated although a snapshot exists")

    monkeypatch.setattr(contracts, "_validate", refuse)


def test_second_load_uses_snapshots_and_gives_the_same_world(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    data = write(tmp_path / "data")
    cache = tmp_path / "cache"
    plain = frames(load_world(data, event_types=EVENT_TYPES))
    first = frames(load(data, cache))
    no_validation(monkeypatch)
    second = frames(load(data, cache))
    for name in TABLES:
        assert_frame_equal(first[name], plain[name])
        assert_frame_equal(second[name], plain[name])


def test_a_changed_file_is_validated_again(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    data = write(tmp_path / "data")
    cache = tmp_path / "cache"
    load(data, cache)
    (data / "risk.csv").write_text(VALID["risk"].replace("650", "-5"))  # impossible credit score
    with pytest.raises(ContractError, match="table 'risk', column 'credit_score'"):
        load(data, cache)


def test_a_touched_file_is_validated_again(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    data = write(tmp_path / "data")
    cache = tmp_path / "cache"
    load(data, cache)
    calls = []
    real = contracts._validate
    monkeypatch.setattr(contracts, "_validate", lambda lf, spec, **kw: calls.append(spec.name) or real(lf, spec, **kw))
    stat = (data / "holdings.csv").stat()
    os.utime(data / "holdings.csv", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    load(data, cache).events.collect()
    assert calls == ["holdings"]


def test_a_change_to_a_referenced_table_revalidates_the_references(tmp_path):
    (tmp_path / "data").mkdir()
    data = write(tmp_path / "data")
    cache = tmp_path / "cache"
    load(data, cache).events.collect()
    # c2 disappears from customers: risk, holdings and events still refer to it
    (data / "customers.csv").write_text(VALID["customers"].splitlines()[0] + "\n" + VALID["customers"].splitlines()[1])
    with pytest.raises(ContractError, match="refers to unknown customers"):
        load(data, cache)


def test_an_unreadable_snapshot_is_ignored(tmp_path):
    (tmp_path / "data").mkdir()
    data = write(tmp_path / "data")
    cache = tmp_path / "cache"
    expected = frames(load(data, cache))
    for snapshot in cache.iterdir():
        snapshot.write_bytes(b"not parquet")
    again = frames(load(data, cache))
    for name in TABLES:
        assert_frame_equal(again[name], expected[name])


def test_deferred_events_are_validated_only_when_used(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    bad = VALID["events"] + "c1,p1,teleport,2026-03-01,app\n"
    data = write(tmp_path / "data", events=bad)
    world = load_world(data, event_types=EVENT_TYPES, defer_events=True)  # a campaign run never reads events
    assert world.customers.height == 2
    with pytest.raises(ContractError, match="table 'events', column 'event_type'.*unknown event type"):
        world.events  # noqa: B018 - first use validates
    with pytest.raises(ContractError, match="unknown event type"):
        load_world(data, event_types=EVENT_TYPES)  # not deferred: at load, as before


def test_an_events_certificate_keeps_padded_ids_stripped(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    padded = VALID["events"].replace("c2,p2,activation", " c2 ,p2,activation")
    data = write(tmp_path / "data", events=padded)
    cache = tmp_path / "cache"
    first = load(data, cache).events.collect()
    assert sorted(first["customer_id"].unique().to_list()) == ["c1", "c2"]
    no_validation(monkeypatch)
    assert_frame_equal(load(data, cache, defer_events=True).events.collect(), first)  # from the certificate
