"""A real `eldercare alerts run` killed (SIGKILL) after a platform received a notification and
before the engine recorded it as sent: the restarted engine sends it again with the same
idempotency key. Delivery is at-least-once; receivers deduplicate on the key."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alerts import lifecycle
from alerts.models import Finding
from care import service as care
from tests.support import ELDERCARE, ROOT, wait_for


class KillingPlatform:
    """Receives webhooks; on the first delivery whose key starts with `prefix` it SIGKILLs the
    engine before answering, so the engine dies between sending and marking sent."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.prefix: str | None = None
        self.victim: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                key = self.headers["Idempotency-Key"]
                with platform.lock:
                    platform.keys.append(key)
                    mine = platform.prefix is not None and key.startswith(platform.prefix)
                    if mine and platform.keys.count(key) == 1 and platform.victim is not None:
                        os.kill(platform.victim.pid, signal.SIGKILL)
                        platform.victim.wait(10)
                try:
                    self.send_response(200)
                    self.end_headers()
                except OSError:
                    pass  # the engine is gone

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def platform(conn):
    instance = KillingPlatform()
    hook = care.add_webhook(conn, name=f"p-{uuid.uuid4().hex[:6]}", url=instance.url, secret="s")
    instance.hook_id = hook["id"]  # type: ignore[attr-defined]
    yield instance
    conn.execute("UPDATE webhook_subscription SET active = false WHERE id = %s", (hook["id"],))
    instance.close()


def _engine(env, log):
    return subprocess.Popen(
        [ELDERCARE, "alerts", "run"],
        env={**env, "ELDERCARE_ALERTS_TICK_S": "0.2"},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def test_killing_the_engine_between_send_and_mark_sent_resends_with_the_same_key(
    conn, circle, env, platform, tmp_path
):
    alert = lifecycle.raise_finding(
        conn,
        resident_id=circle["resident"],
        finding=Finding(rule="sos", severity="critical", title="SOS 呼救 / SOS button pressed"),
        now=datetime.now(UTC),
    )
    row = (alert.id, str(platform.hook_id))
    key = conn.execute(
        "SELECT idempotency_key FROM notification WHERE alert_id = %s AND recipient_id = %s "
        "AND channel = 'webhook'",
        row,
    ).fetchone()[0]
    platform.prefix = f"a{alert.id}:"
    with open(tmp_path / "engine.log", "ab") as log:
        first = _engine(env, log)
        platform.victim = first
        try:
            wait_for(lambda: first.poll() is not None, 60, "the engine killed mid-delivery")
        finally:
            if first.poll() is None:
                first.kill()
        assert platform.keys.count(key) == 1
        state = conn.execute(
            "SELECT state FROM notification WHERE idempotency_key = %s", (key,)
        ).fetchone()[0]
        assert state == "pending", "received, but never recorded as sent"

        second = _engine(env, log)
        try:
            wait_for(
                lambda: conn.execute(
                    "SELECT state = 'sent' FROM notification WHERE idempotency_key = %s", (key,)
                ).fetchone()[0],
                60,
                "sent after the restart",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    assert platform.keys.count(key) == 2, "at-least-once: once more, under the same key"
    assert (
        conn.execute(
            "SELECT count(*) FROM notification WHERE alert_id = %s AND recipient_id = %s "
            "AND channel = 'webhook'",
            row,
        ).fetchone()[0]
        == 1
    ), "one notification, delivered twice — never two notifications"
