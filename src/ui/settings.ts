// The sampling settings form (temperature, top-p, top-k, seed, max tokens, fixed or
// adaptive k), bound to state.settings and shared by the chat and side-by-side views.

import { h } from './dom.ts';
import { DEFAULT_SETTINGS, state, update } from './state.ts';
import type { RunSettings } from './state.ts';

type NumKey = 'temperature' | 'topP' | 'topK' | 'seed' | 'maxTokens' | 'k';

interface NumSpec { key: NumKey; label: string; min: number; max: number; step: number; help: string }

const SPECS: NumSpec[] = [
  { key: 'temperature', label: 'Temperature', min: 0, max: 2, step: 0.05, help: '0 = greedy' },
  { key: 'topP', label: 'Top-p', min: 0.05, max: 1, step: 0.05, help: '1 = off' },
  { key: 'topK', label: 'Top-k', min: 0, max: 1000, step: 1, help: '0 = off' },
  { key: 'seed', label: 'Seed', min: 0, max: 2 ** 31 - 1, step: 1, help: 'same seed, same text' },
  { key: 'maxTokens', label: 'Max tokens', min: 1, max: 2048, step: 1, help: 'per reply' },
];

/** Listeners that keep every settings form in sync when one changes. */
const syncers = new Set<() => void>();

function set<K extends keyof RunSettings>(key: K, value: RunSettings[K]): void {
  update((s) => { s.settings[key] = value; });
  for (const f of syncers) f();
}

function numberField(prefix: string, spec: NumSpec): HTMLElement {
  const id = `${prefix}-${spec.key}`;
  const input = h('input', {
    id, type: 'number', min: spec.min, max: spec.max, step: spec.step, value: state.settings[spec.key],
    'aria-describedby': `${id}-help`, 'data-setting': spec.key,
    onchange: () => {
      const v = Number(input.value);
      if (!Number.isFinite(v)) return;
      const clamped = Math.min(spec.max, Math.max(spec.min, v));
      set(spec.key, spec.key === 'temperature' || spec.key === 'topP' ? clamped : Math.round(clamped));
      input.value = String(state.settings[spec.key]);
    },
  });
  syncers.add(() => { if (document.activeElement !== input) input.value = String(state.settings[spec.key]); });
  return h('label', { class: 'field', for: id }, h('span', {}, spec.label), input, h('small', { id: `${id}-help`, class: 'help' }, spec.help));
}

export function settingsForm(prefix: string, opts: { rtt?: boolean } = {}): HTMLElement {
  const kId = `${prefix}-k`;
  const adaptive = h('input', {
    type: 'checkbox', id: `${prefix}-adaptive`, checked: state.settings.adaptive, 'data-setting': 'adaptive',
    onchange: () => set('adaptive', adaptive.checked),
  });
  const kInput = h('input', {
    id: kId, type: 'number', min: 1, max: 16, step: 1, value: state.settings.k, 'data-setting': 'k', 'aria-describedby': `${kId}-help`,
    onchange: () => {
      const v = Math.round(Number(kInput.value));
      if (Number.isFinite(v)) set('k', Math.min(16, Math.max(1, v)));
      kInput.value = String(state.settings.k);
    },
  });
  const kLabel = h('span', {}, 'Draft length k');
  const kHelp = h('small', { class: 'help', id: `${kId}-help` });
  const syncK = (): void => {
    adaptive.checked = state.settings.adaptive;
    if (document.activeElement !== kInput) kInput.value = String(state.settings.k);
    kHelp.textContent = state.settings.adaptive ? 'the most drafted per round (adaptive picks fewer when they pay off less)' : 'tokens drafted per round';
  };
  syncers.add(syncK);
  syncK();
  const children: HTMLElement[] = [
    greedyToggle(prefix),
    h('div', { class: 'two' }, numberField(prefix, SPECS[0]), numberField(prefix, SPECS[4])),
    h('div', { class: 'two' }, numberField(prefix, SPECS[1]), numberField(prefix, SPECS[2])),
    h('label', { class: 'field', for: kId }, kLabel, kInput, kHelp),
    h('label', { class: 'check', for: `${prefix}-adaptive` }, adaptive, 'Adaptive k (from measured acceptance and latency)'),
    numberField(prefix, SPECS[3]),
    h('p', { class: 'muted small' }, 'At temperature 0 the reply is token for token what the target alone would write; above 0 it follows the target\'s own sampling distribution.'),
  ];
  if (opts.rtt) children.unshift(rttSlider(prefix));
  return h('fieldset', {}, h('legend', { class: 'visually-hidden' }, 'Sampling settings'), ...children);
}

/** The sampled temperature (always > 0) and top-p that greedy replaced, restored when greedy is switched off. */
let lastSampled = { temperature: DEFAULT_SETTINGS.temperature, topP: DEFAULT_SETTINGS.topP };

/** One click between the sampled default and greedy (temperature 0), the mode whose text is token
 *  for token the target's own greedy text. Checked exactly when the temperature is 0. */
function greedyToggle(prefix: string): HTMLElement {
  const id = `${prefix}-greedy`;
  const box = h('input', {
    type: 'checkbox', id, checked: state.settings.temperature === 0, 'data-setting': 'greedy', 'aria-describedby': `${id}-help`,
    onchange: () => {
      if (box.checked) {
        if (state.settings.temperature > 0) lastSampled = { temperature: state.settings.temperature, topP: state.settings.topP };
        set('temperature', 0);
      } else {
        set('temperature', lastSampled.temperature);
        set('topP', lastSampled.topP);
      }
    },
  });
  syncers.add(() => { box.checked = state.settings.temperature === 0; });
  return h('div', { class: 'field' },
    h('label', { class: 'check', for: id }, box, 'Greedy: the target\'s own text, token for token'),
    h('small', { id: `${id}-help`, class: 'help' }, 'Off: sampled at the defaults measured to read best for this pair (tools/train/README.md).'));
}

export function rttSlider(prefix: string): HTMLElement {
  const id = `${prefix}-rtt`;
  const out = h('output', { for: id, class: 'mono' }, `${state.settings.rttMs} ms`);
  const input = h('input', {
    id, type: 'range', min: 0, max: 300, step: 5, value: state.settings.rttMs, 'aria-describedby': `${id}-help`, 'data-setting': 'rttMs',
    oninput: () => {
      set('rttMs', Number(input.value));
      out.textContent = `${input.value} ms`;
    },
  });
  syncers.add(() => {
    input.value = String(state.settings.rttMs);
    out.textContent = `${state.settings.rttMs} ms`;
  });
  return h('label', { class: 'field', for: id },
    h('span', {}, 'Injected network round trip (RTT)', out),
    input,
    h('small', { id: `${id}-help`, class: 'muted' }, 'Added to every draft↔gateway exchange. Speculation pays one round trip per block of drafted tokens; the baseline streams from the server and pays it once. Slide it to see where speculation wins and where it loses.'));
}
