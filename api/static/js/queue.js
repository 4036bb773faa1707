// #/queue: the live alert queue. Critical first (the API's order), one-click acknowledge / snooze /
// resolve, and a re-fetch of the whole list on every alert event (simple, and never out of step).

import { api, whoami } from './api.js';
import { ago, badge, h, toast } from './dom.js';
import { label } from './format.js';
import { t } from './i18n.js';
import { liveEvents, refresher } from './live.js';

const STATES = ['unresolved', 'open', 'acknowledged', 'resolved'];
const SEVERITIES = ['', 'critical', 'warning', 'info'];
const SNOOZE_MINUTES = 30;
const SAFETY_POLL_MS = 60_000; // in case an event is lost while the stream is down

// Kept across visits, so coming back from a resident page shows the same filter.
const filters = { state: 'unresolved', severity: '' };
// Fallback names, only fetched when an alert arrives without resident_name.
const residentNames = new Map();

export function render(container, { signal }) {
  const count = h('span', { id: 'queue-count', 'aria-live': 'polite' });
  const error = h('p', { id: 'queue-error', class: 'form-error', role: 'alert', hidden: true });
  const empty = h('p', { id: 'queue-empty', class: 'muted', hidden: true }, t('queue.empty'));
  const body = h('tbody', { id: 'queue-body' });
  let previousIds = null;
  let alertsById = new Map();
  let canSnooze = false;

  // A labelled <select> bound to one of the filters.
  const select = (key, values, text) =>
    h(
      'label',
      { for: `filter-${key}` },
      t(`queue.filter.${key}`),
      ' ',
      h(
        'select',
        {
          id: `filter-${key}`,
          onchange: (e) => {
            filters[key] = e.target.value;
            refresh();
          },
        },
        values.map((v) => h('option', { value: v, selected: filters[key] === v }, text(v))),
      ),
    );

  container.append(
    h('h1', { id: 'queue-title' }, t('queue.title')),
    h(
      'div',
      { class: 'filters' },
      select('state', STATES, (v) => label('state', v)),
      select('severity', SEVERITIES, (v) => (v ? label('sev', v) : t('queue.filter.all'))),
      count,
    ),
    error,
    h(
      'table',
      { id: 'alert-queue', class: 'table queue' },
      h('caption', { class: 'visually-hidden' }, t('queue.caption')),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['severity', 'title', 'resident', 'age', 'state', 'handler', 'actions'].map((c) =>
            h('th', { scope: 'col', class: `col-${c}` }, t(`col.${c}`)),
          ),
        ),
      ),
      body,
    ),
    empty,
  );

  async function load() {
    try {
      const [rows, me] = await Promise.all([
        api('/api/v1/alerts', {
          query: { state: filters.state, severity: filters.severity, limit: 500 },
          signal,
        }),
        whoami().catch(() => ({})),
      ]);
      await fillMissingNames(rows, signal);
      error.hidden = true;
      alertsById = new Map(rows.map((a) => [a.id, a]));
      // Reminders are per doctor: only a doctor's login can snooze (the API says 403 to others).
      canSnooze = me.doctor_id != null;
      draw(rows);
    } catch (err) {
      if (err.name === 'AbortError' || err.status === 401) return;
      error.textContent = err.detail;
      error.hidden = false;
    }
  }

  function draw(rows) {
    // Re-render keeps keyboard focus on the same button (ids are per alert), so a live update
    // does not throw the doctor out of the row they were about to act on.
    const focusedId = body.contains(document.activeElement) ? document.activeElement.id : null;
    body.replaceChildren(
      ...rows.map((a) => row(a, previousIds !== null && !previousIds.has(a.id), canSnooze)),
    );
    previousIds = new Set(rows.map((a) => a.id));
    if (focusedId) document.getElementById(focusedId)?.focus();
    count.textContent = t('queue.count', { n: rows.length });
    empty.hidden = rows.length > 0;
  }

  const refresh = refresher(load);

  body.addEventListener('click', async (event) => {
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    const alert = alertsById.get(Number(button.closest('tr').dataset.alertId));
    if (alert) await act(alert, button.dataset.action, button.closest('tr'), signal);
    refresh();
  });

  liveEvents.addEventListener('alert', refresh, { signal });
  liveEvents.addEventListener('reconnected', refresh, { signal });
  const poll = setInterval(refresh, SAFETY_POLL_MS);
  signal.addEventListener('abort', () => clearInterval(poll));
  refresh();
}

function row(alert, isNew, canSnooze) {
  const critical = alert.severity === 'critical';
  const resolved = alert.state === 'resolved';
  const canAck = alert.state === 'open' || alert.state === 'pending';
  const name =
    alert.resident_name ?? residentNames.get(alert.resident_id) ?? `#${alert.resident_id}`;
  return h(
    'tr',
    {
      class: `alert-row sev-${alert.severity}${isNew ? ' is-new' : ''}`,
      id: `alert-${alert.id}`,
      dataset: { alertId: alert.id, severity: alert.severity, state: alert.state },
    },
    h('td', { class: 'severity' }, badge('sev', alert.severity, label('sev', alert.severity))),
    h(
      'td',
      { class: 'title' },
      alert.title,
      alert.occurrences > 1
        ? h(
            'span',
            { class: 'occurrences muted' },
            ' ',
            t('col.occurrences', { n: alert.occurrences }),
          )
        : null,
    ),
    h(
      'td',
      { class: 'resident' },
      alert.resident_id != null
        ? h('a', { class: 'resident-link', href: `#/residents/${alert.resident_id}` }, name)
        : // A button bound to nobody: the desk needs the device id to find who pressed it.
          h('span', { class: 'unbound-device' }, t('queue.unbound', { device: alert.device_id ?? '?' })),
    ),
    h('td', { class: 'age' }, ago(alert.opened_at)),
    h('td', { class: 'state' }, label('state', alert.state)),
    // "Who else is handling it": the person who acknowledged (by name), and when.
    h(
      'td',
      { class: 'handler' },
      alert.acknowledged_by
        ? [
            h(
              'span',
              { class: 'ack-by', title: alert.acknowledged_by },
              alert.acknowledged_by_name ?? alert.acknowledged_by,
            ),
            ' ',
            ago(alert.acknowledged_at),
          ]
        : t('handler.none'),
    ),
    h(
      'td',
      { class: 'actions' },
      resolved
        ? null
        : [
            h(
              'button',
              {
                type: 'button',
                class: 'btn-ack',
                id: `ack-${alert.id}`,
                'data-action': 'ack',
                disabled: !canAck,
              },
              t('btn.ack'),
            ),
            // Critical alerts cannot be snoozed (the API answers 409): say so instead of offering it.
            // Logins that are not a doctor's cannot snooze at all (403): no button.
            canSnooze
              ? h(
                  'button',
                  {
                    type: 'button',
                    class: 'btn-snooze',
                    id: `snooze-${alert.id}`,
                    'data-action': 'snooze',
                    disabled: critical,
                    title: critical ? t('snooze.critical') : null,
                  },
                  t('btn.snooze'),
                )
              : null,
            h(
              'button',
              {
                type: 'button',
                class: 'btn-resolve',
                id: `resolve-${alert.id}`,
                'data-action': 'resolve',
              },
              t('btn.resolve'),
            ),
          ],
    ),
  );
}

async function act(alert, action, tr, signal) {
  if (action === 'resolve') {
    if (await resolveWithNote(alert, signal)) toast(t('done.resolve', { title: alert.title }));
    return;
  }
  const body = action === 'snooze' ? { minutes: SNOOZE_MINUTES } : {};
  const buttons = [...tr.querySelectorAll('button')];
  for (const b of buttons) b.disabled = true;
  try {
    await api(`/api/v1/alerts/${alert.id}/${action}`, { method: 'POST', body });
    toast(t(`done.${action}`, { title: alert.title }));
  } catch (err) {
    if (err.status !== 401) toast(err.detail, { error: true }); // e.g. 409: already resolved
  }
}

/** The resolve dialog: a required note; API errors stay in the dialog so the note is not lost. */
function resolveWithNote(alert, signal) {
  const dialog = document.getElementById('resolve-dialog');
  const form = document.getElementById('resolve-form');
  const note = document.getElementById('resolve-note');
  const error = document.getElementById('resolve-error');
  const confirm = document.getElementById('resolve-confirm');
  const cancel = document.getElementById('resolve-cancel');
  document.getElementById('resolve-alert-title').textContent = alert.title;
  note.value = '';
  note.placeholder = t('resolve.placeholder');
  error.hidden = true;

  return new Promise((resolve) => {
    const listeners = new AbortController();
    const finish = (done) => {
      listeners.abort();
      if (dialog.open) dialog.close();
      resolve(done);
    };
    form.addEventListener(
      'submit',
      async (event) => {
        event.preventDefault();
        const text = note.value.trim();
        if (!text) {
          error.textContent = t('resolve.required');
          error.hidden = false;
          note.focus();
          return;
        }
        confirm.disabled = true;
        try {
          await api(`/api/v1/alerts/${alert.id}/resolve`, { method: 'POST', body: { note: text } });
          finish(true);
        } catch (err) {
          error.textContent = err.detail;
          error.hidden = false;
        } finally {
          confirm.disabled = false;
        }
      },
      { signal: listeners.signal },
    );
    cancel.addEventListener('click', () => finish(false), { signal: listeners.signal });
    dialog.addEventListener('close', () => finish(false), { signal: listeners.signal });
    signal.addEventListener('abort', () => finish(false), { signal: listeners.signal });
    dialog.showModal();
    note.focus();
  });
}

async function fillMissingNames(rows, signal) {
  if (rows.every((a) => a.resident_id == null || a.resident_name || residentNames.has(a.resident_id)))
    return;
  try {
    for (const r of await api('/api/v1/residents', { signal, query: { limit: 1000 } })) {
      residentNames.set(r.id, r.name);
    }
  } catch (err) {
    if (err.name === 'AbortError') throw err;
  }
}
