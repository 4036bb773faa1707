// The resident page's trend charts (uPlot, vendored in /app/vendor): 24 h raw, 7 d and 30 d hourly,
// one chart per metric (blood pressure: systolic and diastolic together) with threshold lines.

import { api } from './api.js';
import { h } from './dom.js';
import { formatDateTime, formatValue, metricName, metricUnit } from './format.js';
import { locale, t } from './i18n.js';

const RANGES = {
  '24h': { hours: 24, bucket: 'raw', gapS: 15 * 60 },
  '7d': { hours: 7 * 24, bucket: 'hour', gapS: 3 * 3600 },
  '30d': { hours: 30 * 24, bucket: 'hour', gapS: 3 * 3600 },
};
const PAGE = 10_000; // the API's maximum page
const MAX_POINTS = 50_000; // per metric; 24 h of 1 Hz heart rate would be 86 400

const CHARTS = [
  { id: 'heart_rate', metrics: ['heart_rate'] },
  { id: 'spo2', metrics: ['spo2'] },
  { id: 'bp', metrics: ['systolic_bp', 'diastolic_bp'], title: 'chart.bp' },
  { id: 'resp_rate', metrics: ['resp_rate'] },
  { id: 'body_temp', metrics: ['body_temp'] },
  { id: 'blood_glucose', metrics: ['blood_glucose'] },
  { id: 'weight', metrics: ['weight'] },
  { id: 'steps', metrics: ['steps'] },
];

const COLOURS = {
  heart_rate: '#c2410c',
  spo2: '#1d4ed8',
  systolic_bp: '#be185d',
  diastolic_bp: '#6d28d9',
  resp_rate: '#15803d',
  body_temp: '#b45309',
  blood_glucose: '#0e7490',
  weight: '#475569',
  steps: '#4338ca',
};

let selectedRange = '24h'; // kept while moving between residents

/** Fill `section` with range buttons and charts; everything is torn down when `signal` aborts. */
export function renderCharts(section, { residentId, thresholds, signal }) {
  const plots = [];
  const list = h('div', { id: 'chart-list', class: 'chart-list', 'aria-busy': 'true' });
  const buttons = Object.keys(RANGES).map((range) =>
    h(
      'button',
      {
        type: 'button',
        class: 'range-btn',
        id: `range-${range}`,
        'data-range': range,
        'aria-pressed': String(range === selectedRange),
        onclick: (event) => {
          selectedRange = range;
          for (const b of buttons)
            b.setAttribute('aria-pressed', String(b === event.currentTarget));
          load();
        },
      },
      t(`range.${range}`),
    ),
  );
  section.append(
    h('div', { class: 'range', role: 'group', 'aria-label': t('range.label') }, buttons),
    list,
  );

  const resize = new ResizeObserver(() => {
    for (const plot of plots) plot.setSize({ width: chartWidth(list), height: plot.height });
  });
  resize.observe(list);
  signal.addEventListener('abort', () => {
    resize.disconnect();
    destroy();
  });

  function destroy() {
    for (const plot of plots.splice(0)) plot.destroy();
  }

  let generation = 0;
  async function load() {
    const mine = ++generation; // a slower earlier range must not overwrite a later one
    const range = RANGES[selectedRange];
    const until = new Date();
    const since = new Date(until.getTime() - range.hours * 3600_000);
    list.setAttribute('aria-busy', 'true');
    list.replaceChildren(h('p', { class: 'muted' }, t('loading')));
    const limits = await thresholds.catch(() => null);
    const metrics = CHARTS.flatMap((c) => c.metrics);
    const results = await Promise.all(
      metrics.map((m) =>
        fetchSeries(residentId, m, since, until, range.bucket, signal).catch((err) => ({ err })),
      ),
    );
    if (signal.aborted || mine !== generation) return;
    const byMetric = Object.fromEntries(metrics.map((m, i) => [m, results[i]]));

    destroy();
    list.replaceChildren();
    list.removeAttribute('aria-busy');
    if (!limits) list.append(h('p', { class: 'muted' }, t('chart.thresholds.missing')));
    const empty = [];
    for (const chart of CHARTS) {
      const failed = chart.metrics.map((m) => byMetric[m]).find((r) => r.err);
      if (failed) {
        if (failed.err.name === 'AbortError') return;
        list.append(h('p', { class: 'form-error' }, `${chartTitle(chart)}: ${failed.err.detail}`));
        continue;
      }
      if (chart.metrics.every((m) => byMetric[m].readings.length === 0)) {
        empty.push(chartTitle(chart));
        continue;
      }
      const figure = h('figure', {
        class: 'chart',
        id: `chart-${chart.id}`,
        'data-metric': chart.id,
      });
      figure.append(h('figcaption', {}, `${chartTitle(chart)} (${metricUnit(chart.metrics[0])})`));
      if (chart.metrics.some((m) => byMetric[m].truncated)) {
        figure.append(h('p', { class: 'muted' }, t('chart.truncated', { n: MAX_POINTS })));
      }
      list.append(figure);
      plots.push(plot(figure, chart, byMetric, limits ?? {}, since, until, range, list));
    }
    if (empty.length)
      list.append(
        h(
          'p',
          { class: 'muted', id: 'chart-nodata' },
          t('chart.nodata', { list: empty.join(t('list.sep')) }),
        ),
      );
  }

  load();
}

function chartTitle(chart) {
  return chart.title ? t(chart.title) : metricName(chart.metrics[0]);
}

function chartWidth(list) {
  return Math.max(280, list.clientWidth - 2);
}

/** All readings of one metric in the window, following the `next` cursor page by page. */
async function fetchSeries(residentId, metric, since, until, bucket, signal) {
  const readings = [];
  let cursor = null;
  while (readings.length < MAX_POINTS) {
    const page = await api(`/api/v1/residents/${residentId}/readings`, {
      query: {
        metric,
        bucket,
        since: since.toISOString(),
        until: until.toISOString(),
        limit: PAGE,
        cursor,
      },
      signal,
    });
    readings.push(...page.readings);
    if (!page.next) return { readings, truncated: false };
    cursor = page.next;
  }
  return { readings, truncated: true };
}

/** uPlot wants columns: [xs, ys1, ys2, …] over one shared, ascending x (seconds). */
function columns(chart, byMetric, since, until, range) {
  const bucketed = range.bucket !== 'raw';
  const single = chart.metrics.length === 1;
  const rows = new Map(); // x → {metric: reading}
  for (const metric of chart.metrics) {
    for (const r of byMetric[metric].readings) {
      const x = Math.round(new Date(r.at).getTime() / 1000);
      if (!rows.has(x)) rows.set(x, {});
      rows.get(x)[metric] = r;
    }
  }
  // Empty points at both ends make the x axis span the whole window, and (for a single metric)
  // one more in each long silence breaks the line there instead of drawing across a dead device.
  const xs = [...rows.keys()].sort((a, b) => a - b);
  const withGaps = [Math.floor(since.getTime() / 1000)];
  for (const [i, x] of xs.entries()) {
    if (single && i > 0 && x - xs[i - 1] > range.gapS) withGaps.push(xs[i - 1] + 1);
    withGaps.push(x);
  }
  withGaps.push(Math.ceil(until.getTime() / 1000));

  const data = [withGaps];
  for (const metric of chart.metrics) {
    const pick = (field) => withGaps.map((x) => rows.get(x)?.[metric]?.[field] ?? null);
    data.push(pick('value'));
    if (bucketed) data.push(pick('min_value'), pick('max_value'));
  }
  return data;
}

function plot(figure, chart, byMetric, limits, since, until, range, list) {
  const uPlot = window.uPlot;
  const bucketed = range.bucket !== 'raw';
  const lines = chart.metrics.flatMap((metric) =>
    ['low', 'high']
      .filter((side) => limits[metric]?.[side] != null)
      .map((side) => ({
        metric,
        side,
        value: Number(limits[metric][side]),
        prefix: chart.metrics.length > 1 ? `${metricName(metric)} ` : '',
      })),
  );
  const dayFmt = new Intl.DateTimeFormat(locale(), { month: 'numeric', day: 'numeric' });
  const timeFmt = new Intl.DateTimeFormat(locale(), {
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
  });

  const series = [
    {
      label: t('latest.at'),
      value: (u, v) => (v == null ? '—' : formatDateTime(new Date(v * 1000))),
    },
  ];
  const bands = [];
  for (const metric of chart.metrics) {
    const colour = COLOURS[metric];
    const fmt = (u, v) => (v == null ? '—' : formatValue(metric, v));
    const name = chart.metrics.length > 1 ? metricName(metric) : '';
    const spanGaps = chart.metrics.length > 1;
    series.push({
      label: bucketed ? `${name} ${t('chart.avg')}`.trim() : metricName(metric),
      stroke: colour,
      width: 2,
      value: fmt,
      spanGaps,
    });
    if (bucketed) {
      // The hour's min and max as a light band around the mean: the spread stays visible
      // (a brief desaturation hides in an hourly mean) without four extra lines.
      const minIdx = series.length;
      for (const which of ['min', 'max']) {
        series.push({
          label: `${name} ${t(`chart.${which}`)}`.trim(),
          stroke: `${colour}55`,
          width: 1,
          value: fmt,
          spanGaps,
        });
      }
      bands.push({ series: [minIdx + 1, minIdx], fill: `${colour}1f` });
    }
  }

  const opts = {
    width: chartWidth(list),
    height: 220,
    series,
    bands,
    scales: {
      x: { time: true },
      // Keep the threshold lines in view even when every reading is far from them.
      y: {
        range: (u, min, max) => {
          const values = [min, max, ...lines.map((l) => l.value)].filter(Number.isFinite);
          const lo = Math.min(...values);
          const hi = Math.max(...values);
          const pad = (hi - lo) * 0.1 || Math.abs(hi) * 0.05 || 1;
          return [lo - pad, hi + pad];
        },
      },
    },
    axes: [
      {
        // 24-hour clock in the viewer's time zone; a date at midnight and for multi-day ticks.
        values: (u, splits, axisIdx, space, incr) =>
          splits.map((s) => {
            const d = new Date(s * 1000);
            const midnight = d.getHours() === 0 && d.getMinutes() === 0;
            return incr >= 86400 || midnight ? dayFmt.format(d) : timeFmt.format(d);
          }),
      },
      { label: metricUnit(chart.metrics[0]), size: 60 },
    ],
    hooks: { draw: [(u) => drawThresholds(u, lines)] },
  };
  return new uPlot(opts, columns(chart, byMetric, since, until, range), figure);
}

/** Dashed horizontal lines at the resident's thresholds, labelled "上限 120" / "low 90". */
function drawThresholds(u, lines) {
  const { ctx, bbox } = u;
  const ratio = window.devicePixelRatio || 1;
  ctx.save();
  ctx.lineWidth = ratio;
  ctx.setLineDash([6 * ratio, 4 * ratio]);
  ctx.font = `${11 * ratio}px system-ui, sans-serif`;
  ctx.textAlign = 'right';
  for (const line of lines) {
    const y = Math.round(u.valToPos(line.value, 'y', true));
    if (y < bbox.top || y > bbox.top + bbox.height) continue;
    ctx.strokeStyle = line.side === 'high' ? '#dc2626' : '#2563eb';
    ctx.fillStyle = ctx.strokeStyle;
    ctx.beginPath();
    ctx.moveTo(bbox.left, y);
    ctx.lineTo(bbox.left + bbox.width, y);
    ctx.stroke();
    const text = t(`chart.${line.side}`, { v: formatValue(line.metric, line.value) });
    ctx.fillText(line.prefix + text, bbox.left + bbox.width - 4 * ratio, y - 3 * ratio);
  }
  ctx.restore();
}
