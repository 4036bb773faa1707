// The live stream over Server-Sent Events: one EventSource per session, app-wide, so the alarm
// sounds whichever page is open. Views listen on `liveEvents` ('alert', 'vitals', 'reconnected').
//
// EventSource cannot send an Authorization header, and a token in the URL would end up in access
// logs: each connection first gets a single-use ticket (valid 60 s). So a dropped connection is
// re-opened here, with a fresh ticket and the last alert event's id, never by the browser's own
// retry (which would present the used ticket again).

import { api } from './api.js';
import { t } from './i18n.js';

export const liveEvents = new EventTarget();

let source = null;
let retryTimer = null;
let status = 'off';
let generation = 0; // bumps on every start/stop, so a late ticket reply cannot open a stale stream
let attempts = 0;
let lastEventId = null; // the stream's position: resume here after a drop

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

export function startLive() {
  stopLive();
  lastEventId = null;
  connect(false);
}

async function connect(resumed) {
  const mine = ++generation;
  setStatus(resumed ? 'reconnecting' : 'connecting');
  let ticket;
  try {
    ({ ticket } = await api('/api/v1/stream/ticket', { method: 'POST' }));
  } catch (err) {
    if (err.status === 401) return; // api.js has ended the session
    if (mine === generation) retry();
    return;
  }
  if (mine !== generation) return;
  const url = new URL('/api/v1/stream', location.origin);
  url.searchParams.set('ticket', ticket);
  if (lastEventId != null) url.searchParams.set('last_event_id', lastEventId);
  source = new EventSource(url);

  source.addEventListener('open', () => {
    attempts = 0;
    setStatus('live');
    // The server replays missed alert events from last_event_id; views also re-fetch on
    // 'reconnected', so the screen is right either way.
    if (resumed) liveEvents.dispatchEvent(new Event('reconnected'));
  });

  for (const type of ['ready', 'alert', 'vitals']) {
    source.addEventListener(type, (event) => {
      if (event.lastEventId) lastEventId = event.lastEventId; // vitals carry no id
      if (type === 'ready') return;
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return; // a malformed event must not break the stream
      }
      liveEvents.dispatchEvent(new CustomEvent(type, { detail: data }));
    });
  }

  // The server ends the stream when the session is revoked or expires: ask the API, whose 401
  // ends the session (api.js); otherwise connect again.
  source.addEventListener('end', () => {
    if (mine !== generation) return;
    closeSource();
    setStatus('reconnecting');
    api('/api/v1/auth/me')
      .then(() => mine === generation && retry())
      .catch((err) => err.status !== 401 && mine === generation && retry());
  });

  source.addEventListener('error', () => {
    if (mine !== generation) return;
    closeSource();
    setStatus('reconnecting');
    retry();
  });
}

function closeSource() {
  if (source) source.close();
  source = null;
}

function retry() {
  clearTimeout(retryTimer);
  const delay = Math.min(30_000, 1000 * 2 ** attempts);
  attempts += 1;
  retryTimer = setTimeout(() => connect(true), delay);
}

export function stopLive() {
  generation += 1;
  clearTimeout(retryTimer);
  closeSource();
  attempts = 0;
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
