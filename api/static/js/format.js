// Numbers, units and times for display. Times use the viewer's own time zone (Intl's default).

import { locale, t } from './i18n.js';

// Mirror of ingest/metrics.py (key, UCUM unit, decimals): the API has no endpoint for the table.
// Chart order: the NEWS2 parameters first, then the rest.
export const METRICS = {
  heart_rate: { unit: '/min', decimals: 0 },
  spo2: { unit: '%', decimals: 0 },
  resp_rate: { unit: '/min', decimals: 0 },
  systolic_bp: { unit: 'mm[Hg]', decimals: 0 },
  diastolic_bp: { unit: 'mm[Hg]', decimals: 0 },
  body_temp: { unit: 'Cel', decimals: 1 },
  blood_glucose: { unit: 'mmol/L', decimals: 1 },
  weight: { unit: 'kg', decimals: 1 },
  steps: { unit: '/d', decimals: 0 },
};

// UCUM codes are for machines; people read °C and mmHg.
const UNIT_DISPLAY = { Cel: '°C', 'mm[Hg]': 'mmHg' };

export function unitLabel(ucum) {
  if (ucum === '/d') return t('unit.steps');
  return UNIT_DISPLAY[ucum] ?? ucum;
}

export function metricName(key) {
  const name = t(`metric.${key}`);
  return name === `metric.${key}` ? key : name;
}

export function metricUnit(key) {
  return unitLabel(METRICS[key]?.unit ?? '');
}

/** A value with the metric's precision, e.g. 36.6 for body_temp, 97 for spo2. */
export function formatValue(key, value) {
  if (value == null || Number.isNaN(Number(value))) return '—';
  const decimals = METRICS[key]?.decimals ?? 1;
  return new Intl.NumberFormat(locale(), {
    minimumFractionDigits: decimals,
    maximumFractionDigits: decimals,
  }).format(Number(value));
}

export function formatValueWithUnit(key, value, ucum) {
  const unit = ucum ? unitLabel(ucum) : metricUnit(key);
  return `${formatValue(key, value)} ${unit}`;
}

export function timeZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone;
}

export function formatDateTime(iso) {
  if (!iso) return '—';
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'short' }).format(
    new Date(iso),
  );
}

export function formatDate(iso) {
  if (!iso) return '—';
  // A birth date has no time zone: read it as a calendar date, not as UTC midnight.
  const [y, m, d] = String(iso).slice(0, 10).split('-').map(Number);
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium' }).format(new Date(y, m - 1, d));
}

/** "3 分钟前" / "3 minutes ago", from an ISO time (or seconds ago when given a number). */
export function formatAgo(isoOrSeconds, now = Date.now()) {
  if (isoOrSeconds == null) return '—';
  const seconds =
    typeof isoOrSeconds === 'number'
      ? isoOrSeconds
      : Math.max(0, (now - new Date(isoOrSeconds).getTime()) / 1000);
  const rtf = new Intl.RelativeTimeFormat(locale(), { numeric: 'always' });
  if (seconds < 10) return t('just_now');
  if (seconds < 60) return rtf.format(-Math.floor(seconds), 'second');
  if (seconds < 3600) return rtf.format(-Math.floor(seconds / 60), 'minute');
  if (seconds < 86400) return rtf.format(-Math.floor(seconds / 3600), 'hour');
  return rtf.format(-Math.floor(seconds / 86400), 'day');
}

export function ageInYears(birthIso, now = new Date()) {
  if (!birthIso) return null;
  const [y, m, d] = String(birthIso).slice(0, 10).split('-').map(Number);
  let years = now.getFullYear() - y;
  if (now.getMonth() + 1 < m || (now.getMonth() + 1 === m && now.getDate() < d)) years -= 1;
  return years;
}

/** Translate a server enum value when the table knows it, else show it as sent. */
export function label(prefix, value) {
  if (value == null) return '—';
  const key = `${prefix}.${value}`;
  const text = t(key);
  return text === key ? String(value) : text;
}
