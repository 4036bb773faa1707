"""The ingestor's registry cache never pairs a new registry version with old rows."""

from __future__ import annotations

import uuid

from devices import service
from ingest.registry import DeviceRegistry
from store import db


def test_a_device_registered_while_the_cache_reloads_is_known_once_committed(database_url, conn):
    """A registration still in flight when the ingestor reloads its cache: the device must be
    known as soon as the registration commits (with a version that moved before the commit, the
    cache kept the old rows under the new version and quarantined the device's first SOS)."""
    resident = service.add_resident(conn, name="王秀英").id
    device_id = f"sos_button-{uuid.uuid4().hex[:10]}"
    registry = DeviceRegistry()
    registry.refresh_if_changed(conn)
    registering = db.connect(database_url)  # not autocommit: the registration stays open
    try:
        registering.execute("SELECT 1")  # add_device's own transaction becomes a savepoint
        service.add_device(
            registering, device_id=device_id, kind="sos_button", resident_id=resident
        )
        registry.refresh_if_changed(conn)  # the ingestor looks while it is in flight
        assert registry.device_problem(device_id) is not None, "not committed: not known yet"
        registering.commit()
    finally:
        registering.close()
    assert registry.refresh_if_changed(conn), "the committed change moves the version"
    assert registry.device_problem(device_id) is None
