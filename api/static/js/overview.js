// #/overview: residents grouped by risk, devices offline, unacknowledged alerts by how long they
// have waited. Re-fetched on alert events and every minute (device silence has no event).

import { api } from './api.js';
import { ago, badge, h } from './dom.js';
import { label } from './format.js';
import { t } from './i18n.js';
import { liveEvents, refresher } from './live.js';

const RISKS = ['high', 'medium', 'low-medium', 'low', 'unknown'];
const AGES = ['<5m', '5-30m', '30m-2h', '>2h'];
const POLL_MS = 60_000;

export function render(container, { signal }) {
  const body = h('div', { id: 'overview-body' }, h('p', { class: 'muted' }, t('loading')));
  container.append(h('h1', { id: 'overview-title' }, t('ov.title')), body);

  async function load() {
    try {
      const data = await api('/api/v1/overview', { signal });
      body.replaceChildren(
        unacknowledged(data.unacknowledged_by_age ?? {}),
        risks(data.residents ?? []),
        offline(data.devices_offline ?? []),
      );
    } catch (err) {
      if (err.name === 'AbortError' || err.status === 401) return;
      body.replaceChildren(h('p', { class: 'form-error', role: 'alert' }, err.detail));
    }
  }

  const refresh = refresher(load);
  liveEvents.addEventListener('alert', refresh, { signal });
  liveEvents.addEventListener('reconnected', refresh, { signal });
  const poll = setInterval(refresh, POLL_MS);
  signal.addEventListener('abort', () => clearInterval(poll));
  refresh();
}

function unacknowledged(byAge) {
  return h(
    'section',
    { class: 'card', id: 'ov-unack', 'aria-labelledby': 'ov-unack-h' },
    h('h2', { id: 'ov-unack-h' }, t('ov.unack')),
    h(
      'ul',
      { class: 'tiles' },
      AGES.map((age) => {
        const n = byAge[age] ?? 0;
        // Anything unacknowledged for over 30 minutes needs a look, whatever its severity.
        const urgent = n > 0 && (age === '30m-2h' || age === '>2h');
        return h(
          'li',
          { class: `tile${urgent ? ' urgent' : ''}`, dataset: { age } },
          h('span', { class: 'tile-number' }, String(n)),
          h('span', { class: 'tile-label' }, t(`age.${age}`)),
        );
      }),
    ),
    h('p', {}, h('a', { href: '#/queue' }, t('nav.queue'))),
  );
}

function risks(residents) {
  const groups = Object.fromEntries(RISKS.map((r) => [r, []]));
  for (const r of residents) (groups[r.risk] ?? groups.unknown).push(r);
  return h(
    'section',
    { class: 'card', id: 'ov-risk', 'aria-labelledby': 'ov-risk-h' },
    h('h2', { id: 'ov-risk-h' }, t('ov.risk')),
    h(
      'div',
      { class: 'risk-groups' },
      RISKS.map((risk) =>
        h(
          'div',
          { class: `risk-group risk-${risk}`, dataset: { risk } },
          h('h3', {}, badge('risk', risk, label('risk', risk)), ` ${groups[risk].length}`),
          groups[risk].length
            ? h(
                'ul',
                {},
                // Most open alerts first within a band: those residents need attention first.
                groups[risk]
                  .sort((a, b) => b.open_alerts - a.open_alerts)
                  .map((r) =>
                    h(
                      'li',
                      { dataset: { residentId: r.id } },
                      h('a', { href: `#/residents/${r.id}`, class: 'resident-link' }, r.name),
                      r.open_alerts
                        ? [
                            ' ',
                            badge('sev', r.worst_severity, label('sev', r.worst_severity)),
                            ' ',
                            h(
                              'span',
                              { class: 'muted' },
                              t('ov.open_alerts', { n: r.open_alerts }),
                            ),
                          ]
                        : null,
                    ),
                  ),
              )
            : h('p', { class: 'muted' }, t('ov.no_residents')),
        ),
      ),
    ),
  );
}

function offline(devices) {
  return h(
    'section',
    { class: 'card', id: 'ov-offline', 'aria-labelledby': 'ov-offline-h' },
    h('h2', { id: 'ov-offline-h' }, `${t('ov.devices_offline')} (${devices.length})`),
    devices.length
      ? h(
          'table',
          { class: 'table', id: 'offline-table' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ['dev.id', 'dev.kind', 'ov.resident', 'dev.last_seen'].map((k) =>
                h('th', { scope: 'col' }, t(k)),
              ),
            ),
          ),
          h(
            'tbody',
            {},
            devices.map((d) =>
              h(
                'tr',
                { dataset: { deviceId: d.device_id } },
                h('td', {}, h('code', {}, d.device_id)),
                h('td', {}, d.kind),
                h(
                  'td',
                  {},
                  h(
                    'a',
                    { href: `#/residents/${d.resident_id}` },
                    d.resident_name ?? `#${d.resident_id}`,
                  ),
                ),
                h('td', {}, ago(d.last_seen_at)),
              ),
            ),
          ),
        )
      : h('p', { class: 'muted' }, t('ov.devices_none')),
  );
}
