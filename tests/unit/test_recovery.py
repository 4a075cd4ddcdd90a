"""The recovery sweep's choice of what to put back (its behaviour on a real stack is in
tests/e2e/test_faults.py and tests/e2e/test_operations.py)."""

from __future__ import annotations

from changewatch.schema.broker import Delivered, Message
from changewatch.worker.recovery import _one_copy_each


def _copy(tag: str, task_id: str, retries: int) -> Delivered:
    return Delivered(tag, 0.0, Message(raw=tag, task="t", task_id=task_id, retries=retries))


def test_one_copy_of_each_dead_task_goes_back_the_one_furthest_along() -> None:
    """A worker killed between publishing a retry and acknowledging the original leaves
    two messages of one task; both back would start two retry chains for one job."""
    due = [_copy("a0", "A", 0), _copy("a2", "A", 2), _copy("b0", "B", 0), _copy("c1", "C", 1)]
    restored, dropped = _one_copy_each(due, queued={"C"})
    assert restored == ["a2", "b0"]  # C already waits in the queue: no second copy
    assert dropped == ["a0", "c1"]
