// The router and the session: hash routes (#/login, #/queue, #/residents/{id}, #/overview), the
// header (live indicator, language, sound, logout) and the app-wide critical-alert alarm.

import { api, clearSession, getSession, setUnauthorizedHandler, whoami } from './api.js';
import {
  audioBlocked,
  playCriticalAlarm,
  setSoundEnabled,
  soundEnabled,
  unlockAudio,
} from './alarm.js';
import { h, refreshAges } from './dom.js';
import { timeZone } from './format.js';
import { applyStatic, getLang, setLang, t } from './i18n.js';
import { liveEvents, renderLiveStatus, startLive, stopLive } from './live.js';
import * as login from './login.js';
import * as overview from './overview.js';
import * as queue from './queue.js';
import * as resident from './resident.js';

const ROUTES = [
  { pattern: /^#\/login$/, view: login, public: true },
  { pattern: /^#\/queue$/, view: queue, nav: 'queue' },
  { pattern: /^#\/residents\/(\d+)$/, view: resident },
  { pattern: /^#\/overview$/, view: overview, nav: 'overview' },
];

const main = document.getElementById('main');
let viewAbort = null;
let sessionStarted = false;

// ---- routing ----

function route() {
  // Each view gets an AbortSignal: leaving the page cancels its fetches, timers and listeners.
  viewAbort?.abort();
  viewAbort = new AbortController();

  const hash = location.hash || '#/queue';
  const match = ROUTES.find((r) => r.pattern.test(hash));
  const session = getSession();
  if (!session && !match?.public) {
    sessionStorage.setItem(login.RETURN_KEY, hash);
    location.replace('#/login'); // fires hashchange, which routes again
    return;
  }
  if (session && match?.public) {
    location.replace('#/queue');
    return;
  }
  if (session && !sessionStarted) startSession(session);

  for (const link of document.querySelectorAll('#main-nav a')) {
    if (link.dataset.route === match?.nav) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }

  // A fresh element per visit: a slow reply from the previous page lands in a detached node.
  const view = h('div', { class: 'view' });
  main.replaceChildren(view);
  if (!match) {
    view.append(h('p', { class: 'form-error' }, t('error.notfound')));
    return;
  }
  const params = hash.match(match.pattern).slice(1);
  match.view.render(view, { signal: viewAbort.signal, params });
  // Move focus to the new page's heading, so screen readers announce the page change.
  if (!match.public) view.querySelector('h1')?.setAttribute('tabindex', '-1');
  if (!match.public) view.querySelector('h1')?.focus({ preventScroll: true });
}

// ---- session ----

function startSession(session) {
  sessionStarted = true;
  document.getElementById('main-nav').hidden = false;
  document.getElementById('logout').hidden = false;
  startLive();
  criticalSeed = seedCriticals();
  whoami()
    .then((me) => {
      document.getElementById('user-name').textContent = me.name;
    })
    .catch(() => {});
}

function endSession({ expired }) {
  if (!sessionStarted && !expired) return;
  sessionStarted = false;
  clearSession();
  stopLive();
  knownCritical.clear();
  document.getElementById('main-nav').hidden = true;
  document.getElementById('logout').hidden = true;
  document.getElementById('user-name').textContent = '';
  document.getElementById('alarm-banner').hidden = true;
  if (expired) sessionStorage.setItem(login.EXPIRED_KEY, '1');
  if (location.hash !== '#/login') {
    if (expired) sessionStorage.setItem(login.RETURN_KEY, location.hash);
    location.hash = '#/login';
  } else route();
}

setUnauthorizedHandler(() => endSession({ expired: true }));

document.getElementById('logout').addEventListener('click', async () => {
  try {
    await api('/api/v1/auth/logout', { method: 'POST' }); // revoke the token on the server too
  } catch {
    // logging out locally is what matters
  }
  sessionStorage.removeItem(login.EXPIRED_KEY);
  endSession({ expired: false });
});

// ---- the critical-alert alarm, on every page ----

// Critical alerts this tab already knows, so a reminder or a replayed event does not ring again.
const knownCritical = new Set();
let criticalSeed = Promise.resolve();

async function seedCriticals() {
  try {
    const rows = await api('/api/v1/alerts', {
      query: { state: 'unresolved', severity: 'critical', limit: 1000 },
    });
    for (const row of rows) knownCritical.add(row.id);
  } catch {
    // without the seed we may ring once too often, never once too few
  }
}

liveEvents.addEventListener('alert', async (event) => {
  const alert = event.detail;
  if (alert?.severity !== 'critical') return;
  await criticalSeed;
  const banner = document.getElementById('alarm-banner');
  if (['acknowledged', 'resolved', 'suppressed'].includes(alert.state)) {
    knownCritical.add(alert.alert_id);
    if (banner.dataset.alertId === String(alert.alert_id)) banner.hidden = true;
    return;
  }
  if (knownCritical.has(alert.alert_id)) return;
  knownCritical.add(alert.alert_id);
  playCriticalAlarm();
  showAlarmBanner(alert);
});

async function showAlarmBanner(alert) {
  const banner = document.getElementById('alarm-banner');
  banner.dataset.alertId = String(alert.alert_id);
  let title = alert.rule;
  try {
    title = (await api(`/api/v1/alerts/${alert.alert_id}`)).title;
  } catch {
    // the rule name is still better than nothing
  }
  document.getElementById('alarm-text').textContent = t('alarm.banner', { title });
  const link = document.getElementById('alarm-link');
  link.textContent = t('alarm.view');
  link.href = alert.resident_id != null ? `#/residents/${alert.resident_id}` : '#/queue';
  banner.hidden = false;
}

document.getElementById('alarm-dismiss').addEventListener('click', () => {
  document.getElementById('alarm-banner').hidden = true;
});

// ---- header controls ----

function renderSoundToggle() {
  const button = document.getElementById('sound-toggle');
  const on = soundEnabled();
  button.setAttribute('aria-pressed', String(on));
  button.setAttribute('aria-label', t('sound.label'));
  button.textContent = !on ? t('sound.off') : audioBlocked() ? t('sound.blocked') : t('sound.on');
}

document.getElementById('sound-toggle').addEventListener('click', async () => {
  // While the browser still blocks audio, the first click only unblocks it.
  if (soundEnabled() && audioBlocked()) await unlockAudio();
  else setSoundEnabled(!soundEnabled());
  renderSoundToggle();
});

// Any click or key press lets the page make sound (browser autoplay rules). Not the sound button's
// own: its click handler must still see "blocked" and unblock rather than switch sound off.
for (const type of ['pointerdown', 'keydown']) {
  document.addEventListener(
    type,
    (event) => {
      if (event.target.closest?.('#sound-toggle')) return;
      unlockAudio().then(renderSoundToggle);
    },
    { capture: true },
  );
}

function renderChrome() {
  applyStatic(document);
  const toggle = document.getElementById('lang-toggle');
  toggle.textContent = t('lang.toggle');
  toggle.lang = getLang() === 'zh' ? 'en' : 'zh-CN'; // the label is in the other language
  toggle.setAttribute('aria-label', t('lang.toggle.label'));
  document.getElementById('tz-note').textContent = t('tz.note', { tz: timeZone() });
  renderLiveStatus();
  renderSoundToggle();
}

document.getElementById('lang-toggle').addEventListener('click', () => {
  setLang(getLang() === 'zh' ? 'en' : 'zh');
  renderChrome();
  route(); // re-render the page in the new language
});

document.getElementById('toast').addEventListener('click', (event) => {
  event.currentTarget.hidden = true;
});

// "3 分钟前" keeps ageing without a re-fetch.
setInterval(() => refreshAges(document), 30_000);

setLang(getLang());
renderChrome();
window.addEventListener('hashchange', route);
route();
