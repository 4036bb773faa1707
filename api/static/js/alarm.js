// The critical-alert sound, synthesised with the Web Audio API (no audio file to ship or load).
// Browsers only let a page make sound after a user gesture, so unlockAudio() runs on the first
// click or key press (the login click counts) and the sound button shows when it is still blocked.

const SOUND_KEY = 'eldercare.sound';
let context = null;

export function soundEnabled() {
  return localStorage.getItem(SOUND_KEY) !== 'off';
}

export function setSoundEnabled(on) {
  localStorage.setItem(SOUND_KEY, on ? 'on' : 'off');
}

/** True when the browser still blocks sound until the user interacts with the page. */
export function audioBlocked() {
  return !context || context.state !== 'running';
}

export function unlockAudio() {
  const AudioContextClass = window.AudioContext ?? window.webkitAudioContext;
  if (!AudioContextClass) return Promise.resolve();
  context ??= new AudioContextClass();
  return context.state === 'suspended' ? context.resume().catch(() => {}) : Promise.resolve();
}

/**
 * Five short beeps (3 + 2), the rhythm bedside monitors use for high-priority alarms, so it is not
 * mistaken for a chat notification. Counted in <html data-alarm-count> so a browser test can see it.
 */
export function playCriticalAlarm() {
  const root = document.documentElement;
  root.dataset.alarmCount = String(Number(root.dataset.alarmCount ?? 0) + 1);
  if (!soundEnabled()) return;
  unlockAudio();
  if (!context) return;
  const start = context.currentTime + 0.05;
  const onsets = [0, 0.18, 0.36, 0.72, 0.9];
  for (const [i, onset] of onsets.entries()) {
    const t0 = start + onset;
    const osc = context.createOscillator();
    const gain = context.createGain();
    osc.type = 'square';
    osc.frequency.value = i < 3 ? 880 : 988;
    // A short ramp in and out: a hard-edged square wave clicks.
    gain.gain.setValueAtTime(0, t0);
    gain.gain.linearRampToValueAtTime(0.15, t0 + 0.01);
    gain.gain.setValueAtTime(0.15, t0 + 0.11);
    gain.gain.linearRampToValueAtTime(0, t0 + 0.13);
    osc.connect(gain).connect(context.destination);
    osc.start(t0);
    osc.stop(t0 + 0.14);
  }
}
