// Live alert events over Server-Sent Events: one EventSource per session, app-wide, so the alarm
// sounds whichever page is open. Views listen on `liveEvents` ('alert', 'reconnected') and re-fetch.

import { api } from './api.js';
import { t } from './i18n.js';

export const liveEvents = new EventTarget();

let source = null;
let retryTimer = null;
let status = 'off';
let openedBefore = false;

function setStatus(next) {
  status = next;
  renderLiveStatus();
}

/** #live-status shows 实时 / 重连中; data-state is for CSS and tests. */
export function renderLiveStatus() {
  const el = document.getElementById('live-status');
  if (!el) return;
  el.dataset.state = status;
  el.textContent = t(`live.${status}`);
}

/** `resumed`: a restart after a drop, so the first 'open' also tells views to catch up. */
export function startLive(token, resumed = false) {
  stopLive();
  openedBefore = resumed;
  setStatus('connecting');
  // EventSource cannot send headers, hence the token in the query (as the API contract says).
  source = new EventSource(`/api/v1/stream?access_token=${encodeURIComponent(token)}`);

  source.addEventListener('open', () => {
    setStatus('live');
    // After a drop the server may or may not replay what we missed (Last-Event-ID); views
    // re-fetch on 'reconnected' so the screen is right either way.
    if (openedBefore) liveEvents.dispatchEvent(new Event('reconnected'));
    openedBefore = true;
  });

  source.addEventListener('alert', (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return; // a malformed event must not break the stream
    }
    liveEvents.dispatchEvent(new CustomEvent('alert', { detail: data }));
  });

  source.addEventListener('error', () => {
    setStatus('reconnecting');
    // CONNECTING: the browser retries by itself (with Last-Event-ID). CLOSED: it has given up,
    // e.g. after a 401 or a non-event-stream reply; ask the API why, then retry ourselves.
    if (source?.readyState === EventSource.CLOSED) scheduleRetry(token);
  });
}

function scheduleRetry(token) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(async () => {
    try {
      await api('/api/v1/auth/me'); // a 401 here ends the session through api.js
    } catch (err) {
      if (err.status === 401) return;
    }
    if (source) startLive(token, true);
  }, 5000);
}

export function stopLive() {
  clearTimeout(retryTimer);
  if (source) source.close();
  source = null;
  setStatus('off');
}

/**
 * Wrap a loader so bursts of events do not pile up requests: at most one load in flight, and one
 * more after it when anything arrived meanwhile, so the screen always reflects the last event.
 * The loader handles its own errors.
 */
export function refresher(load) {
  let running = false;
  let again = false;
  return async function refresh() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        await load();
      } while (again);
    } finally {
      running = false;
    }
  };
}
