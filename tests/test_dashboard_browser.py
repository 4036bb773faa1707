"""The dashboard in real headless Chromium (Debian's, driven by Playwright): a doctor logs in, the
simulator's SOS episode goes through the real broker, ingest and alert engine, the alert appears live
without a reload, the doctor acknowledges it, and the SOS button hears that help is coming. Then the
resident page shows a new measurement live, and a comment lands in the alert's timeline.
Screenshots are kept in test-artifacts/ for people to look at."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from playwright.sync_api import expect, sync_playwright

from alerts import lifecycle, transitions
from alerts.engine import AlertEngine
from alerts.models import Finding
from alerts.settings import AlertSettings
from api import access
from devices import service as devices
from devices.simulator.episodes import ScheduledEpisode, timeline
from devices.simulator.vitals import baseline
from eldercare.ports import free_port
from tests.support import ELDERCARE, ROOT, Subscriber, wait_for

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's notes advise: headless, no sandbox as root, and no background networking that a
# closed network would refuse.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture()
def api_server(env, tmp_path):
    port = free_port()
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [ELDERCARE, "api", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        import urllib.request

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    return True
            except OSError:
                return False

        wait_for(up, 30, "API up")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(20)
        log.close()


@pytest.fixture()
def engine(settings):
    instance = AlertEngine(settings, AlertSettings(tick_s=0.2))
    instance.connect()
    instance.start()
    yield instance
    instance.close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="make test installs Debian's chromium")
@pytest.mark.timeout(180)
def test_doctor_sees_an_sos_live_and_acknowledges_it(
    register, ingestor, engine, api_server, circle, conn, endpoint, tmp_path
):
    ARTIFACTS.mkdir(exist_ok=True)
    username, password = f"doctor-{uuid.uuid4().hex[:6]}", "browser-test-pw"
    access.add_user(
        conn, username=username, password=password, role="doctor", doctor_id=circle["a"]
    )
    button = register("sos_button", resident_id=circle["resident"])
    acks = Subscriber(endpoint, button.device_id, button.password, button.topic("ack"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(
                locale="zh-CN", timezone_id="Asia/Shanghai", viewport={"width": 1280, "height": 800}
            )
            page.goto(api_server + "/")
            page.fill("#login-username", username)
            page.fill("#login-password", password)
            page.click("#login-submit")
            expect(page.locator("#live-status")).to_have_attribute(
                "data-state", "live", timeout=15_000
            )
            page.screenshot(path=str(ARTIFACTS / "1-queue-before-sos.png"), full_page=True)

            # The simulator's SOS episode, published with the button's own credentials.
            now = datetime.now(UTC)
            messages = timeline(
                baseline(random.Random(1)),
                "sos_button",
                now - timedelta(seconds=30),
                timedelta(seconds=31),
                timedelta(seconds=10),
                [ScheduledEpisode("sos", now - timedelta(seconds=1))],
                random.Random(1),
            )
            for message in messages:
                if message.channel == "events":
                    button.publish("events", message.payload)

            row = page.locator(".alert-row", has_text="SOS")
            expect(row.first).to_be_visible(
                timeout=20_000
            )  # no reload: it came over the live stream
            page.screenshot(path=str(ARTIFACTS / "2-sos-arrived-live.png"), full_page=True)
            row.first.locator(".btn-ack").click()
            acks.wait(
                lambda m: any(orjson.loads(p).get("status") == "help_coming" for _, p in m),
                timeout=20,
            )
            # Who is handling it, by the name people know (the doctor's), not the login's id.
            expect(row.first.locator(".handler")).to_contain_text("张医生", timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "3-acknowledged.png"), full_page=True)

            # The resident page: a new measurement arrives live (event: vitals), no reload.
            wristband = register("wristband", resident_id=circle["resident"])
            row.first.locator(".resident-link").click()
            expect(page.locator("#resident-name")).to_have_text("王秀英", timeout=10_000)
            wristband.telemetry({"heart_rate": 84})
            heart_rate = page.locator('#latest-table tr[data-metric="heart_rate"]')
            expect(heart_rate).to_contain_text("84", timeout=20_000)
            page.screenshot(path=str(ARTIFACTS / "4-vitals-live.png"), full_page=True)

            # A comment in the alert's timeline.
            item = page.locator(".history-item", has_text="SOS").first
            item.locator("summary").click()
            item.locator(".comment-note").fill("已电话联系家属，正在赶去")
            item.locator(".btn-comment").click()
            expect(item.locator(".timeline .comment")).to_contain_text(
                "已电话联系家属", timeout=10_000
            )
            expect(item.locator(".timeline li").last).to_contain_text("张医生")
            page.screenshot(path=str(ARTIFACTS / "5-comment.png"), full_page=True)
            session_token = page.evaluate(
                "JSON.parse(sessionStorage.getItem('eldercare.session')).token"
            )
        finally:
            browser.close()
            acks.close()
    actions = {
        r[0]
        for r in conn.execute(
            "SELECT action FROM audit_log WHERE actor LIKE %s", (f"user:%:{username}",)
        )
    }
    assert {"read.alerts", "read.stream", "alert.acknowledge", "alert.comment"} <= actions
    # The page opened its stream with a single-use ticket: no session token in the access log.
    log = (tmp_path / "api.log").read_text()
    assert "/api/v1/stream?ticket=[redacted]" in log and session_token not in log
    assert os.path.getsize(ARTIFACTS / "2-sos-arrived-live.png") > 10_000


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="make test installs Debian's chromium")
def test_the_duty_desk_sees_an_unbound_button_s_sos_in_the_queue(api_server, conn):
    """An SOS from a button bound to nobody is in the queue of the duty desk it was sent to, as
    the unbound device with its id (there is no resident to name), and the desk can acknowledge."""
    tag = uuid.uuid4().hex[:6]
    device_id = f"sos-nobody-{tag}"
    devices.add_device(conn, device_id=device_id, kind="sos_button")
    sos = lifecycle.raise_finding(
        conn,
        resident_id=None,
        now=datetime.now(UTC),
        finding=Finding(rule="sos", severity="critical", title="SOS", device_id=device_id),
    )
    (desk_institution,) = conn.execute(
        "SELECT DISTINCT d.institution_id FROM notification n JOIN doctor d "
        "ON n.recipient_id = d.id::text AND d.role = 'duty_desk' WHERE n.alert_id = %s",
        (sos.id,),
    ).fetchone()
    username, password = f"desk-{tag}", "browser-test-pw"
    access.add_user(
        conn,
        username=username,
        password=password,
        role="duty_desk",
        institution_id=desk_institution,
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(locale="zh-CN", viewport={"width": 1280, "height": 800})
            page.goto(api_server + "/")
            page.fill("#login-username", username)
            page.fill("#login-password", password)
            page.click("#login-submit")
            row = page.locator(f"#alert-{sos.id}")
            expect(row.locator(".unbound-device")).to_have_text(
                f"未绑定设备 {device_id}", timeout=15_000
            )
            row.locator(".btn-ack").click()
            wait_for(
                lambda: transitions.get_alert(conn, sos.id).state == "acknowledged",
                15,
                "acknowledged",
            )
        finally:
            browser.close()
