"""Ingest replicas without a name claim stable numbered slots."""

from __future__ import annotations

from ingest.slots import claim_slot


def test_slots_are_claimed_lowest_first_and_reused_after_release(database_url):
    first = claim_slot(database_url)
    second = claim_slot(database_url)
    try:
        assert second.slot == first.slot + 1
        first.release()
        again = claim_slot(database_url)
        assert again.slot == first.slot, "a recreated replica takes its predecessor's slot"
        again.release()
    finally:
        second.release()
