"""The serving process keeps the cyclic collector rare; that the stream path makes no reference cycles per event
(so memory stays bounded) is tested in test_sse_writer.py."""

from __future__ import annotations

import gc

from llmroute.gateway.server import GC_THRESHOLDS, tune_collector


def test_serving_freezes_start_up_objects_and_raises_the_collectors_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_collector()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
