"""The Lamport clock: Celery's rules, bounded, and immune to one poisoned value."""

from __future__ import annotations

import pytest

from wkctl.protocol.clock import MAX_CLOCK, MAX_SAFE_CLOCK, LamportClock, parse_clock


def test_forward_and_adjust_follow_lamport() -> None:
    clock = LamportClock()
    assert clock.forward() == 1
    assert clock.adjust(10) == 11  # max(own, received) + 1
    assert clock.adjust(3) == 12  # an older value still counts as an event
    assert clock.value == 12


@pytest.mark.parametrize("value", [True, False, -1, 2**63, 1.5, "12", None, [1], {"c": 1}])
def test_parse_clock_refuses_non_clock_values(value: object) -> None:
    assert parse_clock(value) is None


def test_parse_clock_accepts_the_whole_range() -> None:
    assert parse_clock(0) == 0
    assert parse_clock(MAX_CLOCK) == MAX_CLOCK


def test_initial_sync_adopts_only_values_exact_in_doubles() -> None:
    clock = LamportClock(5)
    verdict = clock.receive(MAX_SAFE_CLOCK + 1)
    assert not verdict.adopted and "2**53-1" in verdict.reason
    assert clock.value == 6  # the receive still counts as an event
    verdict = clock.receive(MAX_SAFE_CLOCK)
    assert verdict.adopted and clock.value == MAX_SAFE_CLOCK + 1


def test_after_sync_a_jump_beyond_the_bound_is_ignored() -> None:
    clock = LamportClock(100, max_jump=1000, synced=True)
    assert clock.receive(1100).adopted  # exactly the bound: adopted
    assert clock.value == 1101
    verdict = clock.receive(clock.value + 1001)
    assert not verdict.adopted and "jumps more than 1000" in verdict.reason
    assert clock.value == 1102


def test_poisoned_value_does_not_break_later_adjustments() -> None:
    clock = LamportClock(50, synced=True)
    for bad in (2**62, 2**70, "9" * 40, -5, True):
        assert not clock.receive(bad).adopted
    assert clock.value == 55
    assert clock.receive(60).adopted and clock.value == 61


def test_clock_saturates_instead_of_overflowing() -> None:
    clock = LamportClock(MAX_CLOCK - 1)
    assert clock.forward() == MAX_CLOCK
    assert clock.forward() == MAX_CLOCK
    assert clock.adjust(MAX_CLOCK) == MAX_CLOCK


def test_a_sync_without_peers_keeps_the_initial_rule_until_anchored() -> None:
    clock = LamportClock(3)
    clock.mark_synced(peer=False)  # Mingle found nobody
    assert clock.synced and not clock.bounded
    assert clock.receive(40_000_000).adopted  # a long-running cluster's clock
    clock.anchor()
    assert not clock.receive(clock.value + 20_000_000).adopted


def test_a_shared_clock_counts_every_forward_of_every_thread() -> None:
    """The core's clock has no lock; where threads share one (Celery's
    app.clock, gossip.clock, a client's), SharedClock keeps each
    read-modify-write atomic, with the same rules."""
    import threading

    from wkctl.protocol.host import SharedClock

    core = LamportClock(5, max_jump=100)
    core.mark_synced(peer=True)
    shared = SharedClock.adopt(core)
    assert (shared.value, shared.max_jump, shared.synced, shared.bounded) == (5, 100, True, True)
    assert SharedClock.adopt(shared) is shared
    assert not shared.receive(10_000).adopted  # the bounds still apply

    def work() -> None:
        for _ in range(20_000):
            shared.forward()
            shared.receive(shared.value)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # each round moves the clock by exactly 2: forward, then max(own, own) + 1
    assert shared.value == 6 + 4 * 20_000 * 2
