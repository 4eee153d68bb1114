"""The served process freezes its start-up objects, so full garbage collections stop rescanning them."""

from __future__ import annotations

import gc

from datapulse.server import freeze_startup_objects


def test_objects_alive_at_start_up_are_moved_out_of_the_collectors_reach() -> None:
    gc.unfreeze()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 1000
        assert len(gc.get_objects()) < gc.get_freeze_count()
    finally:
        gc.unfreeze()
