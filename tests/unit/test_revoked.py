"""The revoked set: bounded, expiring, both wire forms, local stamps only."""

from __future__ import annotations

from wkctl.protocol.revoked import MAX_TASK_ID_LENGTH, RevokedSet


def test_oldest_is_evicted_first_when_full() -> None:
    rs = RevokedSet(maxlen=3, expires=None)
    for i, task_id in enumerate("abcd"):
        rs.add(task_id, float(i))
    assert rs.as_list() == ["b", "c", "d"]


def test_re_adding_refreshes_and_moves_to_the_newest_end() -> None:
    rs = RevokedSet(maxlen=3, expires=10)
    rs.update(["a", "b", "c"], 0.0)
    rs.add("a", 5.0)
    assert rs.as_list() == ["b", "c", "a"]
    rs.add("d", 6.0)  # evicts b, the oldest
    assert rs.as_list() == ["c", "a", "d"]
    assert rs.as_list(now=10.5) == ["a", "d"]  # c expired (stamped at 0)


def test_ids_expire_after_the_configured_time() -> None:
    rs = RevokedSet(expires=10_800)
    rs.add("x", 1000.0)
    assert rs.purge(1000.0 + 10_799) == 0 and "x" in rs
    assert rs.purge(1000.0 + 10_800) == 1 and "x" not in rs


def test_merge_list_form_keeps_order_and_stamps_locally() -> None:
    rs = RevokedSet(maxlen=10, expires=100)
    result = rs.merge(["a", "b", "c"], now=50.0)
    assert result.added == 3
    assert rs.as_list() == ["a", "b", "c"]
    assert {rs.stamp(i) for i in "abc"} == {50.0}


def test_merge_mapping_form_ignores_remote_monotonic_stamps() -> None:
    """Celery 4.2-5.6 send ``id -> [monotonic_stamp, id]``: stamps of another
    host's uptime.  A stamp far in the future must not make an id immortal,
    and one far in the past must not expire it at once."""
    rs = RevokedSet(maxlen=10, expires=100)
    rs.merge({"future": [9e12, "future"], "past": [-5.0, "past"], "junk": "not a pair"}, now=1000.0)
    assert rs.as_list() == ["future", "past", "junk"]
    assert rs.as_list(now=1099.0) == ["future", "past", "junk"]
    assert rs.as_list(now=1100.0) == []


def test_a_list_longer_than_the_bound_keeps_the_newest_ids() -> None:
    rs = RevokedSet(maxlen=1000, expires=None)
    ids = [f"id-{i}" for i in range(5000)]
    result = rs.merge(ids, now=1.0)
    assert result.truncated == 4000
    assert len(rs) == 1000
    assert rs.as_list()[0] == "id-4000" and rs.as_list()[-1] == "id-4999"


def test_merge_skips_items_that_are_not_task_ids() -> None:
    rs = RevokedSet(maxlen=10, expires=None)
    result = rs.merge(
        ["ok", 5, None, "", "x" * (MAX_TASK_ID_LENGTH + 1), ["nested"], "ok2"], now=0.0
    )
    assert result.added == 2 and result.skipped == 5
    assert rs.as_list() == ["ok", "ok2"]
    assert rs.merge("not a collection", now=0.0).skipped == 1
    assert rs.merge(None, now=0.0).added == 0


def test_merging_into_a_full_set_evicts_local_oldest_not_new() -> None:
    rs = RevokedSet(maxlen=3, expires=None)
    rs.update(["l1", "l2", "l3"], 0.0)
    rs.merge(["r1", "r2"], now=1.0)
    assert rs.as_list() == ["l3", "r1", "r2"]


def test_mapping_form_is_added_oldest_stamp_first() -> None:
    """[REVOKED-3]: a full set must evict the sender's oldest ids, whatever
    order its mapping arrived in; the stamps order, they are not stored."""
    from wkctl.protocol.revoked import RevokedSet

    revoked = RevokedSet(maxlen=2, expires=100.0)
    revoked.merge({"new": [30.0, "new"], "old": [10.0, "old"], "mid": [20.0, "mid"]}, now=1.0)
    assert list(revoked) == ["mid", "new"]
    unstamped = RevokedSet(maxlen=3, expires=100.0)
    unstamped.merge({"b": [2.0, "b"], "a": "not-a-stamp"}, now=1.0)
    assert list(unstamped) == ["b", "a"]
