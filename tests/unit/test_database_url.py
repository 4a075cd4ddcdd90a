"""A multi-host DATABASE_URL (Patroni) must ask for the primary, or it is refused at start."""

from __future__ import annotations

import pytest

from changewatch.settings import Settings

PAIR = "postgresql://cw@db1:5432,db2:5432/changewatch"


def test_a_multi_host_url_with_read_write_is_taken_as_given() -> None:
    url = f"{PAIR}?target_session_attrs=read-write&connect_timeout=5"
    assert Settings.from_env({"DATABASE_URL": url}).database_url == url
    primary = f"{PAIR}?target_session_attrs=primary"
    assert Settings.from_env({"DATABASE_URL": primary}).database_url == primary


def test_a_multi_host_url_that_could_reach_a_standby_is_refused() -> None:
    for url in (PAIR, f"{PAIR}?target_session_attrs=any", "host=db1,db2 dbname=changewatch"):
        with pytest.raises(ValueError, match="target_session_attrs=read-write"):
            Settings.from_env({"DATABASE_URL": url})


def test_one_host_needs_nothing_more() -> None:
    url = "postgresql://postgres@127.0.0.1:5432/changewatch"
    assert Settings.from_env({"DATABASE_URL": url}).database_url == url
    assert Settings.from_env({}).database_url == "postgresql://postgres@127.0.0.1:5432/changewatch"
