// fetch wrapper for /api/v1: bearer token, JSON in and out, errors as ApiError with the server's
// {detail}. A 401 anywhere ends the session (the app then shows the login page).

import { t } from './i18n.js';

// sessionStorage: the token dies with the tab, so a shared clinic PC does not keep doctors logged in.
const SESSION_KEY = 'eldercare.session';

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

let onUnauthorized = () => {};

/** app.js installs the handler, which avoids a circular import between api.js and the router. */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

export function getSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? 'null');
    if (!session?.token) return null;
    // An expired token would only earn a 401; treat it as logged out straight away.
    if (session.expires_at && new Date(session.expires_at).getTime() <= Date.now()) {
      clearSession();
      return null;
    }
    return session;
  } catch {
    return null;
  }
}

export function getToken() {
  return getSession()?.token ?? null;
}

export function setSession({ token, expires_at, role }) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token, expires_at, role }));
}

export function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
  me = null;
}

let me = null;

/** GET /auth/me once per session (who I am: name, role, doctor_id), shared by every view. */
export function whoami() {
  me ??= api('/api/v1/auth/me').catch((err) => {
    me = null; // try again next time
    throw err;
  });
  return me;
}

/** The server's {detail} as one readable line (FastAPI's 422 sends a list of field errors). */
function detailText(status, data) {
  const detail = data?.detail;
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((e) => `${(e.loc ?? []).filter((p) => p !== 'body').join('.')}: ${e.msg}`)
      .join('; ');
  }
  return t('error.http', { status });
}

/**
 * api('/api/v1/alerts', {query: {state: 'unresolved'}})
 * api('/api/v1/alerts/3/ack', {method: 'POST', body: {}})
 */
export async function api(path, { method = 'GET', body, query, signal } = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value != null && value !== '') url.searchParams.set(key, value);
  }
  const headers = { Accept: 'application/json' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';

  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store', // health data: always the current state, never a cached copy
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, t('error.network'));
  }

  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.status === 401 && !path.endsWith('/auth/login')) {
    clearSession();
    onUnauthorized();
  }
  if (!response.ok) throw new ApiError(response.status, detailText(response.status, data));
  return data;
}
