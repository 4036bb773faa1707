// #/residents/{id}: identity, devices, latest vitals with NEWS2, trend charts, alert history.
// Each section loads on its own, so one failing endpoint does not blank the whole page.

import { api } from './api.js';
import { renderCharts } from './charts.js';
import { ago, badge, h } from './dom.js';
import {
  METRICS,
  ageInYears,
  formatAgo,
  formatDate,
  formatDateTime,
  formatValue,
  formatValueWithUnit,
  label,
  metricName,
  metricUnit,
} from './format.js';
import { t } from './i18n.js';
import { liveEvents, refresher } from './live.js';

export function render(container, { signal, params: [id] }) {
  const residentId = Number(id);
  const base = `/api/v1/residents/${residentId}`;
  const get = (path, query) => api(base + path, { signal, query });

  const title = h('h1', { id: 'resident-name' }, t('loading'));
  const section = (sectionId, key) => {
    const body = h('div', { class: 'section-body' }, h('p', { class: 'muted' }, t('loading')));
    const el = h('section', { id: sectionId, class: 'card', 'aria-labelledby': `${sectionId}-h` });
    el.append(h('h2', { id: `${sectionId}-h` }, t(key)), body);
    return { el, body };
  };
  const identity = h('dl', { id: 'resident-identity', class: 'identity' });
  const news2 = section('news2', 'news2.title');
  const latest = section('latest-vitals', 'res.latest');
  const devices = section('devices', 'res.devices');
  const charts = section('charts', 'res.charts');
  const history = section('resident-alerts', 'res.alerts');
  charts.body.replaceChildren();

  container.append(
    h('p', {}, h('a', { href: '#/queue', class: 'back-link' }, t('back'))),
    title,
    identity,
    h('div', { class: 'grid-2' }, news2.el, latest.el),
    devices.el,
    charts.el,
    history.el,
  );

  // Shared by the latest-vitals table and the charts (both mark values against them).
  const thresholds = get('/thresholds');
  thresholds.catch(() => {}); // the sections that use it report the failure themselves

  const fail = (body) => (err) => {
    if (err.name === 'AbortError' || err.status === 401) return;
    body.replaceChildren(h('p', { class: 'form-error' }, err.detail));
  };

  get('')
    .then((r) => {
      title.textContent = r.name;
      fillIdentity(identity, r);
      devices.body.replaceChildren(devicesTable(r.devices ?? []));
    })
    .catch((err) => {
      // Not found (or not one of this doctor's residents): the other sections would only repeat it.
      if (err.status === 404) {
        title.textContent = err.detail;
        container.replaceChildren(container.firstChild, title);
      } else fail(devices.body)(err);
    });

  const drafts = new Map(); // alert id → comment not yet sent

  // The latest value per metric: loaded once, then kept current by the stream's vitals events.
  let latestRows = [];
  const drawLatest = async () =>
    latest.body.replaceChildren(latestTable(latestRows, await thresholds.catch(() => ({}))));
  const loadLatest = () =>
    get('/latest')
      .then((rows) => {
        latestRows = rows;
        return drawLatest();
      })
      .catch(fail(latest.body));
  const loadNews2 = () =>
    get('/news2')
      .then((n) => news2.body.replaceChildren(news2Card(n)))
      .catch(fail(news2.body));
  const loadVitals = () => Promise.all([loadLatest(), loadNews2()]);

  const loadHistory = () =>
    // The API has no "all states" filter: open ones and resolved ones, merged newest first.
    Promise.all([
      api('/api/v1/alerts', {
        signal,
        query: { resident_id: residentId, state: 'unresolved', limit: 100 },
      }),
      api('/api/v1/alerts', {
        signal,
        query: { resident_id: residentId, state: 'resolved', limit: 100 },
      }),
    ])
      .then(([open, resolved]) => {
        const rows = [...open, ...resolved].sort((a, b) => b.opened_at.localeCompare(a.opened_at));
        // A live update re-draws the list: entries the doctor had open stay open (and a comment
        // being typed stays, in `drafts`).
        const expanded = new Set(
          [...history.body.querySelectorAll('details[open]')].map((d) => d.dataset.alertId),
        );
        history.body.replaceChildren(historyList(rows, signal, expanded, drafts));
      })
      .catch(fail(history.body));

  renderCharts(charts.body, { residentId, thresholds, signal });
  const refreshVitals = refresher(loadVitals);
  const refreshNews2 = refresher(loadNews2);
  const refreshHistory = refresher(loadHistory);
  refreshVitals();
  refreshHistory();

  // An alert about this resident usually means new readings too.
  liveEvents.addEventListener(
    'alert',
    (e) => {
      if (e.detail?.resident_id !== residentId) return;
      refreshHistory();
      refreshVitals();
    },
    { signal },
  );
  // New measurements arrive on the stream: update the table in place, and re-score NEWS2.
  liveEvents.addEventListener(
    'vitals',
    (e) => {
      if (e.detail?.resident_id !== residentId) return;
      latestRows = mergeLatest(latestRows, e.detail.values ?? []);
      drawLatest();
      refreshNews2();
    },
    { signal },
  );
  liveEvents.addEventListener('reconnected', refreshHistory, { signal });
  liveEvents.addEventListener('reconnected', refreshVitals, { signal });
}

/** The latest rows with newer values from a vitals event (one row per metric). */
function mergeLatest(rows, values) {
  const byMetric = new Map(rows.map((r) => [r.metric, r]));
  for (const v of values) {
    const known = byMetric.get(v.metric);
    if (!known || new Date(v.measured_at) >= new Date(known.measured_at)) byMetric.set(v.metric, v);
  }
  return [...byMetric.values()];
}

function fillIdentity(dl, r) {
  const doctor = r.contracted_doctor;
  const years = ageInYears(r.birth_date);
  const rows = [
    ['res.archive', h('code', { id: 'archive-id' }, r.archive_id ?? '—')],
    ['res.gender', label('gender', r.gender)],
    [
      'res.birth',
      r.birth_date ? t('res.birth.value', { date: formatDate(r.birth_date), age: years }) : '—',
    ],
    ['res.address', r.address ?? '—'],
    [
      'res.doctor',
      doctor ? [doctor.name, doctor.team ? ` · ${doctor.team}` : ''] : t('res.doctor.none'),
    ],
    ['res.spo2_scale', t('res.spo2_scale.value', { n: r.spo2_scale ?? 1 })],
  ];
  dl.replaceChildren(...rows.flatMap(([key, value]) => [h('dt', {}, t(key)), h('dd', {}, value)]));
}

function table(id, headers, rows) {
  return h(
    'table',
    { id, class: 'table' },
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        headers.map((k) => h('th', { scope: 'col' }, t(k))),
      ),
    ),
    h('tbody', {}, rows),
  );
}

function devicesTable(devices) {
  if (!devices.length) return h('p', { class: 'muted' }, t('dev.none'));
  return table(
    'devices-table',
    ['dev.id', 'dev.kind', 'dev.online', 'dev.battery', 'dev.last_seen'],
    devices.map((d) =>
      h(
        'tr',
        { class: 'device-row', dataset: { deviceId: d.device_id, online: String(d.online) } },
        h('td', {}, h('code', {}, d.device_id)),
        h('td', {}, d.kind),
        h('td', {}, badge('online', String(d.online), d.online ? t('dev.on') : t('dev.off'))),
        h(
          'td',
          { class: d.battery != null && d.battery <= 20 ? 'warn' : null },
          d.battery != null ? `${d.battery}%` : '—',
        ),
        h('td', {}, ago(d.last_seen_at)),
      ),
    ),
  );
}

function latestTable(rows, limits) {
  if (!rows.length) return h('p', { class: 'muted' }, t('latest.none'));
  const order = Object.keys(METRICS);
  const sorted = [...rows].sort((a, b) => order.indexOf(a.metric) - order.indexOf(b.metric));
  return table(
    'latest-table',
    ['latest.metric', 'latest.value', 'latest.at', 'latest.device'],
    sorted.map((r) => {
      const { low, high } = limits?.[r.metric] ?? {};
      const out = (low != null && r.value < low) || (high != null && r.value > high);
      return h(
        'tr',
        { class: `latest-row${out ? ' out' : ''}`, dataset: { metric: r.metric } },
        h('th', { scope: 'row' }, metricName(r.metric)),
        h(
          'td',
          { class: 'value' },
          formatValueWithUnit(r.metric, r.value, r.unit),
          out
            ? h(
                'span',
                { class: 'out-mark', title: t('latest.out') },
                '⚠',
                h('span', { class: 'visually-hidden' }, t('latest.out')),
              )
            : null,
        ),
        h('td', {}, ago(r.measured_at)),
        h('td', {}, h('code', {}, r.device_id)),
      );
    }),
  );
}

function news2Card(n) {
  const used = Object.keys(n.parameters ?? {});
  const missing = (n.missing ?? []).map((p) => label('param', p));
  const card = h(
    'div',
    { class: `news2 risk-${n.band}`, dataset: { complete: String(n.complete) } },
    h(
      'p',
      { class: 'news2-headline' },
      h('span', { class: 'news2-score', id: 'news2-score' }, String(n.score)),
      ' ',
      badge('risk', n.band, label('risk', n.band)),
      ' ',
      h('span', {}, label('response', n.clinical_response)),
    ),
  );
  if (n.complete) {
    card.append(h('p', { class: 'muted' }, t('news2.full')));
  } else {
    // Never shown as a full NEWS2: say it is partial, which parameters it used and which it lacks.
    // Our own wording (parameter names translated); the server's English note as the tooltip.
    const note = t('news2.partial.note', {
      used: used.length,
      missing: missing.join(t('list.sep')) || t('none'),
    });
    card.append(
      h(
        'p',
        { class: 'news2-partial', id: 'news2-partial', role: 'note', title: n.note ?? null },
        h('strong', {}, t('news2.partial')),
        ' — ',
        note,
      ),
    );
  }
  card.append(
    table(
      'news2-params',
      ['news2.param', 'news2.value', 'news2.pscore', 'news2.pband', 'news2.age'],
      used.map((key) => {
        const p = n.parameters[key];
        const numeric = typeof p.rounded === 'number' && key in METRICS;
        return h(
          'tr',
          { class: p.score >= 3 ? 'out' : null },
          h('th', { scope: 'row' }, label('param', key)),
          h(
            'td',
            { class: 'value' },
            numeric ? `${formatValue(key, p.rounded)} ${metricUnit(key)}` : String(p.rounded),
          ),
          h('td', { class: 'score' }, String(p.score)),
          h('td', {}, p.band),
          h('td', {}, p.age_s != null ? formatAgo(p.age_s) : '—'),
        );
      }),
    ),
  );
  return card;
}

function historyList(rows, signal, expanded, drafts) {
  if (!rows.length) return h('p', { class: 'muted' }, t('alerts.none'));
  return h(
    'ul',
    { class: 'history', id: 'alert-history' },
    rows.map((a) => {
      const details = h(
        'details',
        { class: `history-item sev-${a.severity}`, dataset: { alertId: a.id, state: a.state } },
        h(
          'summary',
          {},
          badge('sev', a.severity, label('sev', a.severity)),
          ' ',
          h('span', { class: 'title' }, a.title),
          ' · ',
          h('span', { class: 'state' }, label('state', a.state)),
          ' · ',
          h('time', { datetime: a.opened_at }, formatDateTime(a.opened_at)),
          a.acknowledged_by
            ? [' · ', t('col.handler'), t('colon'), a.acknowledged_by_name ?? a.acknowledged_by]
            : null,
        ),
      );
      // The timeline is fetched only when the doctor opens an entry.
      details.addEventListener('toggle', () => {
        if (!details.open || details.dataset.loaded) return;
        details.dataset.loaded = '1';
        const body = h('div', { class: 'history-detail' }, t('loading'));
        details.append(body);
        const load = () =>
          api(`/api/v1/alerts/${a.id}`, { signal })
            .then((detail) =>
              body.replaceChildren(...alertDetail(detail), commentForm(a, load, drafts)),
            )
            .catch((err) =>
              body.replaceChildren(h('p', { class: 'form-error' }, err.detail ?? '')),
            );
        load();
      });
      if (expanded.has(String(a.id))) details.open = true; // fires 'toggle', which loads it again
      return h('li', {}, details);
    }),
  );
}

function actorName(name) {
  return name === 'system' ? t('actor.system') : name;
}

function alertDetail(d) {
  const out = [];
  if (d.resolved_by || d.resolution_note) {
    out.push(
      h(
        'p',
        {},
        h('strong', {}, t('alert.resolved_by') + t('colon')),
        actorName(d.resolved_by_name ?? d.resolved_by ?? '—'),
        d.resolution_note
          ? [' — ', h('strong', {}, t('alert.resolution') + t('colon')), d.resolution_note]
          : null,
      ),
    );
  }
  out.push(
    h('h3', {}, t('alert.timeline')),
    h(
      'ol',
      { class: 'timeline' },
      (d.timeline ?? []).map((step) =>
        h(
          'li',
          { class: `step-${step.action}`, dataset: { action: step.action } },
          h('time', { datetime: step.at }, formatDateTime(step.at)),
          ' ',
          h('strong', {}, label('action', step.action)),
          ' · ',
          h(
            'span',
            { class: 'actor', title: step.actor },
            actorName(step.actor_name ?? step.actor),
          ),
          step.action === 'commented' ? null : ` → ${label('state', step.to_state)}`,
          step.note
            ? [
                ' · ',
                h('span', { class: step.action === 'commented' ? 'comment' : 'note' }, step.note),
              ]
            : '',
        ),
      ),
    ),
  );
  return out;
}

/** A note for the timeline (who was called, what was tried); the alert's state does not change. */
function commentForm(alert, reload, drafts) {
  const id = `comment-${alert.id}`;
  const note = h('textarea', {
    id,
    class: 'comment-note',
    rows: 2,
    maxlength: 2000,
    oninput: (event) => drafts.set(alert.id, event.target.value),
  });
  note.value = drafts.get(alert.id) ?? '';
  note.placeholder = t('comment.placeholder');
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'btn-comment' }, t('btn.comment'));
  return h(
    'form',
    {
      class: 'comment-form',
      onsubmit: async (event) => {
        event.preventDefault();
        const text = note.value.trim();
        if (!text) {
          error.textContent = t('comment.required');
          error.hidden = false;
          note.focus();
          return;
        }
        submit.disabled = true;
        try {
          await api(`/api/v1/alerts/${alert.id}/comment`, { method: 'POST', body: { note: text } });
          drafts.delete(alert.id);
          await reload();
        } catch (err) {
          // the note stays in the box, so nothing typed is lost
          error.textContent = err.detail;
          error.hidden = false;
          submit.disabled = false;
        }
      },
    },
    h('label', { for: id }, t('comment.label')),
    note,
    error,
    submit,
  );
}
