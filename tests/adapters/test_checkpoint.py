"""Checkpoint bookkeeping: offsets only increase, commits are due on the interval."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import TopicPartition

from adapters import Checkpoint

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


@dataclass
class Rec:
    offset: int


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_advance_records_next_offset_and_never_goes_back() -> None:
    """The durable position is last offset + 1 and an older batch cannot lower it."""
    cp = Checkpoint(1.0)
    cp.advance({P0: [Rec(5), Rec(6)], P1: []})
    assert cp.durable(P0) == 7
    assert cp.durable(P1) is None
    cp.advance({P0: [Rec(2), Rec(3)]})
    assert cp.durable(P0) == 7
    cp.advance({P0: [Rec(9)]})
    assert cp.pending() == {P0: 10}


def test_advance_ignores_partitions_no_longer_assigned() -> None:
    """A batch finished after its partition was revoked does not re-enter the checkpoint."""
    cp = Checkpoint(1.0)
    cp.advance({P0: [Rec(1)], P1: [Rec(4)]}, assigned={P1})
    assert cp.pending() == {P1: 5}


def test_commit_is_due_after_the_interval() -> None:
    """due() turns true once commit_interval_s has passed."""
    clock = Clock()
    cp = Checkpoint(2.0, clock=clock)
    assert not cp.due()
    clock.now += 2.0
    assert cp.due()


def test_forget_drops_a_partitions_state() -> None:
    """Revoked or reassigned partitions start from what the group committed."""
    cp = Checkpoint(0.0)
    cp.advance({P0: [Rec(1)], P1: [Rec(1)]})
    cp.forget([P0])
    assert cp.pending() == {P1: 2}
