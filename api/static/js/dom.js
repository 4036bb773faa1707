// Tiny DOM builder: server text (names, titles, notes) always goes in as text nodes, never as HTML.

import { formatAgo, formatDateTime } from './format.js';

/** h('button', {class: 'btn', onclick: fn}, 'text', child, [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** A <time> showing "3 分钟前", with the full local time as tooltip; app.js refreshes the text. */
export function ago(iso) {
  if (!iso) return '—';
  return h('time', { class: 'rel', datetime: iso, title: formatDateTime(iso) }, formatAgo(iso));
}

export function refreshAges(root = document) {
  for (const el of root.querySelectorAll('time.rel')) {
    el.textContent = formatAgo(el.getAttribute('datetime'));
  }
}

/** A severity badge: colour plus the word, so colour is never the only signal. */
export function badge(kind, value, text) {
  return h('span', { class: `badge ${kind}-${value ?? 'none'}` }, text);
}

let toastTimer = null;

/** A short message in #toast; errors stay until the next message, others fade after 5 s. */
export function toast(message, { error = false } = {}) {
  const el = document.getElementById('toast');
  if (!el) return;
  el.textContent = message;
  el.classList.toggle('error', error);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = error ? null : setTimeout(() => (el.hidden = true), 5000);
}
