"""The served process freezes its start-up objects, so full garbage collections stop rescanning them."""

from __future__ import annotations

import gc

import pytest
from pydantic import ValidationError

from datapulse.config import Settings
from datapulse.server import freeze_startup_objects


def test_objects_alive_at_start_up_are_moved_out_of_the_collectors_reach() -> None:
    gc.unfreeze()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 1000
        assert len(gc.get_objects()) < gc.get_freeze_count()
    finally:
        gc.unfreeze()


def test_a_first_generation_threshold_given_replaces_only_that_one() -> None:
    before = gc.get_threshold()
    gc.unfreeze()
    try:
        freeze_startup_objects(20_000)
        assert gc.get_threshold() == (20_000, *before[1:])
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_the_served_threshold_defaults_to_twenty_thousand_and_refuses_one_that_would_collect_constantly() -> None:
    assert Settings().gc_gen0_threshold == 20_000
    with pytest.raises(ValidationError, match="gc_gen0_threshold"):
        Settings(gc_gen0_threshold=10)
