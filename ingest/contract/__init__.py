"""The device → backend MQTT contract as pure parsing functions (docs/mqtt.md is its public form).

Nothing here does I/O: a topic and raw payload go in, accepted records or rejections with a reason
come out. The pipeline decides what to store and what to quarantine. One module per part:

- `envelope`: what every message shares (topic, size, JSON, msg_id, device_id, ts, `Reason`);
- `telemetry`: readings, one object or a backlog array;
- `events`: sos, fall and other events, with the repairs that keep an emergency;
- `status`: online, battery, firmware.

Callers import from these modules (`from ingest.contract.events import parse_event`), not from this
package: every name has one home, and this file re-exports nothing.
"""
