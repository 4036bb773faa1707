// #/login: username and password → POST /api/v1/auth/login; the token goes to sessionStorage.

import { api, setSession } from './api.js';
import { unlockAudio } from './alarm.js';
import { h } from './dom.js';
import { t } from './i18n.js';

export const EXPIRED_KEY = 'eldercare.expired';
export const RETURN_KEY = 'eldercare.return';

export function render(container, { signal }) {
  const error = h('p', { id: 'login-error', class: 'form-error', role: 'alert', hidden: true });
  if (sessionStorage.getItem(EXPIRED_KEY)) {
    error.textContent = t('login.expired');
    error.hidden = false;
  }
  const username = h('input', {
    id: 'login-username',
    name: 'username',
    autocomplete: 'username',
    required: true,
    maxlength: 100,
  });
  const password = h('input', {
    id: 'login-password',
    name: 'password',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
    maxlength: 200,
  });
  const submit = h(
    'button',
    { id: 'login-submit', type: 'submit', class: 'primary' },
    t('login.submit'),
  );

  const form = h(
    'form',
    { id: 'login-form', class: 'card login' },
    h('h1', {}, t('login.title')),
    h('label', { for: 'login-username' }, t('login.username')),
    username,
    h('label', { for: 'login-password' }, t('login.password')),
    password,
    error,
    submit,
  );

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    unlockAudio(); // this click is the user gesture that lets the alarm make sound later
    submit.disabled = true;
    submit.textContent = t('login.busy');
    error.hidden = true;
    try {
      const reply = await api('/api/v1/auth/login', {
        method: 'POST',
        body: { username: username.value.trim(), password: password.value },
        signal,
      });
      setSession(reply);
      sessionStorage.removeItem(EXPIRED_KEY);
      const back = sessionStorage.getItem(RETURN_KEY);
      sessionStorage.removeItem(RETURN_KEY);
      location.hash = back && back !== '#/login' ? back : '#/queue';
    } catch (err) {
      if (err.name === 'AbortError') return;
      // 401 (wrong password) and 429 (too many attempts) both carry a {detail} worth showing.
      error.textContent = err.detail || t('login.failed');
      error.hidden = false;
      password.select();
    } finally {
      submit.disabled = false;
      submit.textContent = t('login.submit');
    }
  });

  container.append(form);
  username.focus();
}
