"""auditor.gcpause: fewer collector passes during an audit, the caller's settings restored afterwards."""

from __future__ import annotations

import gc

import pytest

from auditor.gcpause import YOUNG_THRESHOLD, fewer_gc_passes


def test_threshold_raised_inside_and_restored_after() -> None:
    old = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with fewer_gc_passes():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD
            assert gc.isenabled()  # cycles are still collected, only less often
        assert gc.get_threshold() == (700, 10, 10)
        with pytest.raises(RuntimeError), fewer_gc_passes():
            raise RuntimeError("a failing audit still restores the settings")
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*old)


def test_automatic_collection_switched_off_by_the_caller_stays_off() -> None:
    old = gc.get_threshold()
    try:
        gc.set_threshold(0)
        with fewer_gc_passes():
            assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*old)
