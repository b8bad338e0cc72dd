// The models view: choose the draft (bundled pair, URL base, local folder) and its weight
// format, watch download / quantize / upload progress, manage the IndexedDB cache, and see
// (and change) the gateway with its target model and verifier.

import { h, fmt, fmtBytes } from './dom.ts';
import { state, update, subscribe, type Phase } from './state.ts';
import { asErrorInfo, connectGateway, draftReady, engine, loadDraft, precheckGateway, reportError } from './app.ts';
import type { CacheEntry, Quant } from '../lib/index.ts';
import type { DraftChoice } from './state.ts';

const PHASES: { phase: Phase; label: string }[] = [
  { phase: 'download', label: 'Download' },
  { phase: 'quantize', label: 'Quantize' },
  { phase: 'upload', label: 'Upload to GPU' },
];

export function modelsView(root: HTMLElement): void {
  let cache: CacheEntry[] = [];
  const radio = (value: DraftChoice['kind'], title: string, help: string): HTMLElement =>
    h('label', {}, h('input', { type: 'radio', name: 'draft-source', value, checked: state.draft.source.kind === value, onchange: () => pick(value) }),
      h('span', {}, h('strong', {}, title), h('br'), h('span', { class: 'muted small' }, help)));
  const urlInput = h('input', { id: 'draft-url', type: 'url', placeholder: 'https://example.org/models/Llama-3.2-1B-Instruct/', 'aria-label': 'Draft model URL base' });
  const folderInput = h('input', { id: 'draft-folder', type: 'file', webkitdirectory: true, multiple: true, 'aria-label': 'Draft model folder' });
  const quant = h('select', { id: 'draft-quant', onchange: () => update((s) => { s.draft.quant = quant.value as Quant; }) },
    h('option', { value: 'none' }, 'f32 — exact, largest'),
    h('option', { value: 'q8' }, 'int8 (per-group scales)'),
    h('option', { value: 'q4' }, 'int4 (group 32) — smallest, default for 1B drafts'),
    h('option', { value: 'auto' }, 'as the file is (a GGUF keeps 4-bit q4 / 8-bit q8; else f32)'));
  quant.value = state.draft.quant;
  const device = h('select', { id: 'draft-device', onchange: () => update((s) => { s.draft.device = device.value as 'auto' | 'cpu'; }) },
    h('option', { value: 'auto' }, 'WebGPU where available, else the CPU'),
    h('option', { value: 'cpu' }, 'CPU (TypeScript reference)'));
  device.value = state.draft.device;
  const loadBtn = h('button', { class: 'btn primary', type: 'button', onclick: () => void load(), 'data-testid': 'load-draft' }, 'Load draft');
  const progress = h('div', { 'aria-label': 'Load progress' });
  const draftInfo = h('dl', { class: 'kv', 'data-testid': 'draft-info' });
  const cacheBody = h('tbody');
  const cacheTotal = h('span', { class: 'muted small', 'data-testid': 'cache-total' });

  const gwUrl = h('input', { id: 'gw-url', type: 'url', placeholder: 'same origin (this page\'s server)', value: state.gateway.url });
  const gwToken = h('input', { id: 'gw-token', type: 'password', autocomplete: 'off', placeholder: 'only if the gateway asks for one' });
  const gwBtn = h('button', { class: 'btn primary', type: 'button', onclick: () => void reconnect(), 'data-testid': 'gw-connect' }, 'Connect');
  const gwInfo = h('dl', { class: 'kv', 'data-testid': 'gateway-info' });

  root.append(h('div', { class: 'grid-models' },
    h('section', { class: 'card', 'aria-labelledby': 'draft-h' },
      h('h2', { id: 'draft-h' }, 'Draft model (runs in this browser)'),
      h('fieldset', {}, h('legend', { class: 'visually-hidden' }, 'Draft source'),
        h('div', { class: 'source-options' },
          radio('bundled', 'Bundled tiny pair', 'A ~1M-parameter draft trained with its target on the King James Bible; ships with duet.'),
          radio('url', 'From a URL base', 'A Hugging Face-format folder served over HTTP (config.json, tokenizer.json, *.safetensors).'),
          radio('folder', 'From a folder on this computer', 'Pick a downloaded model folder; nothing is uploaded.'))),
      h('label', { class: 'field', for: 'draft-url' }, h('span', {}, 'URL base'), urlInput),
      h('label', { class: 'field', for: 'draft-folder' }, h('span', {}, 'Local folder'), folderInput),
      h('label', { class: 'field', for: 'draft-device' }, h('span', {}, 'Run the draft on'), device),
      h('label', { class: 'field', for: 'draft-quant' }, h('span', {}, 'Weight format on the GPU (the CPU fallback always uses f32)'), quant),
      h('div', { class: 'row' }, loadBtn),
      h('h3', { style: 'margin:1rem 0 0.5rem' }, 'Progress'), progress,
      h('h3', { style: 'margin:1rem 0 0.5rem' }, 'Loaded draft'), draftInfo),
    h('div', { class: 'side' },
      h('section', { class: 'card', 'aria-labelledby': 'gw-h' },
        h('h2', { id: 'gw-h' }, 'Gateway and target model'),
        h('label', { class: 'field', for: 'gw-url' }, h('span', {}, 'Gateway URL (ws:// or http://)'), gwUrl),
        h('label', { class: 'field', for: 'gw-token' }, h('span', {}, 'Access token'), gwToken),
        h('div', { class: 'row', style: 'margin-bottom:0.8rem' }, gwBtn), gwInfo),
      h('section', { class: 'card', 'aria-labelledby': 'cache-h' },
        h('div', { class: 'row' }, h('h2', { id: 'cache-h' }, 'Cached drafts (IndexedDB)'), h('span', { style: 'flex:1' }), cacheTotal),
        h('p', { class: 'muted small' }, 'Prepared weights are kept so a reload neither downloads nor quantizes again.'),
        h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Model'), h('th', {}, 'Format'), h('th', { class: 'num' }, 'Size'), h('th', {}, h('span', { class: 'visually-hidden' }, 'Actions')))), cacheBody))),
  ));

  function pick(kind: DraftChoice['kind']): void {
    update((s) => { s.draft.source = kind === 'bundled' ? { kind } : kind === 'url' ? { kind, base: urlInput.value } : { kind, files: [] }; });
    renderSourceFields();
  }

  function renderSourceFields(): void {
    const kind = state.draft.source.kind;
    (urlInput.closest('label') as HTMLElement).hidden = kind !== 'url';
    (folderInput.closest('label') as HTMLElement).hidden = kind !== 'folder';
  }

  async function load(): Promise<void> {
    const kind = state.draft.source.kind;
    if (kind === 'url') {
      if (!urlInput.value.trim()) return reportError({ code: 'load-failed', message: 'No URL given.', hint: 'Enter the URL of a folder with config.json, tokenizer.json and the safetensors files.' });
      update((s) => { s.draft.source = { kind: 'url', base: urlInput.value.trim() }; });
    } else if (kind === 'folder') {
      const files = [...(folderInput.files ?? [])];
      if (files.length === 0) return reportError({ code: 'load-failed', message: 'No folder picked.', hint: 'Choose the folder that holds config.json and the safetensors files.' });
      update((s) => { s.draft.source = { kind: 'folder', files }; });
    }
    await loadDraft();
    await refreshCache();
    // A new draft may have a different tokenizer: re-check it against the gateway.
    if (state.draft.status === 'ready') await connectGateway();
  }

  async function reconnect(): Promise<void> {
    update((s) => {
      s.gateway.url = gwUrl.value.trim();
      s.gateway.token = gwToken.value;
    });
    // while the draft loads (a load under way is awaited, not started again), say at once
    // whether the new gateway is there and would take this page
    if (state.draft.status !== 'ready') void precheckGateway();
    if (await draftReady()) await connectGateway();
  }

  async function refreshCache(): Promise<void> {
    try {
      cache = await engine().cache.list();
    } catch (err) {
      reportError(asErrorInfo(err));
    }
    renderCache();
  }

  function renderCache(): void {
    cacheBody.replaceChildren(...(cache.length === 0
      ? [h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'Nothing cached yet.'))]
      : cache.map((e) => h('tr', { 'data-testid': 'cache-row' },
        h('td', {}, e.name), h('td', {}, e.format), h('td', { class: 'num' }, fmtBytes(e.byteLength)),
        h('td', {}, h('button', { class: 'btn danger', type: 'button', 'aria-label': `Delete cached ${e.name} (${e.format})`,
          onclick: async () => {
            try {
              await engine().cache.delete(e.key);
            } catch (err) {
              reportError(asErrorInfo(err));
            }
            await refreshCache();
          } }, 'Delete'))))));
    cacheTotal.textContent = `total ${fmtBytes(cache.reduce((a, e) => a + e.byteLength, 0))}`;
  }

  const kv = (pairs: [string, string][]): HTMLElement[] => pairs.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]);

  function render(): void {
    const d = state.draft;
    loadBtn.disabled = d.status === 'loading';
    loadBtn.textContent = d.status === 'loading' ? 'Loading…' : 'Load draft';
    progress.replaceChildren(...PHASES.map(({ phase, label }) => {
      const p = d.progress[phase];
      const bar = h('progress', { max: 1, 'aria-label': label, 'data-phase': phase });
      if (p?.fraction != null) bar.value = p.fraction;
      else if (!p) bar.value = 0;
      return h('div', { class: 'progress' }, h('div', { class: 'label' }, h('span', {}, label), h('span', { class: 'mono' }, p ? p.detail : d.status === 'ready' ? 'skipped' : '')), bar);
    }), ...(d.progress.cache ? [h('p', { class: 'muted small' }, d.progress.cache.detail)] : []));
    const i = d.info;
    draftInfo.replaceChildren(...(i ? kv([
      ['Model', i.name],
      ['Runs on', i.backend === 'webgpu' ? `WebGPU · ${i.adapter ?? ''}` : d.device === 'cpu' ? 'CPU (TypeScript reference), as chosen' : `CPU (fallback)${i.fallbackReason ? ` — ${i.fallbackReason}` : ''}`],
      ['Weights', `${i.format}${i.gpuBytes ? ` · ${fmtBytes(i.gpuBytes)} of GPU buffers` : ''}`],
      ['Parameters', i.params.toLocaleString()],
      ['Vocabulary', i.vocabSize.toLocaleString()],
      ['Loaded', `${fmt(i.loadMs, 0, ' ms')}${i.fromCache ? ' (from cache)' : ''}`],
      ['Chat template', i.hasChatTemplate ? 'yes' : 'none (plain continuation)'],
      ['Tokenizer hash', i.tokenizerHash.slice(0, 16)],
      ...(i.cacheNotice ? [['Cache', i.cacheNotice] as [string, string]] : []),
    ]) : [h('dt', {}, 'Status'), h('dd', {}, d.status === 'error' ? `error: ${d.error?.message}` : d.status)]));
    const g = state.gateway;
    gwBtn.disabled = g.status === 'connecting';
    const gi = g.info;
    gwInfo.replaceChildren(...kv([
      ['Status', g.status + (g.detail ? ` — ${g.detail}` : '') + (g.error ? `: ${g.error.message}` : '')],
      ...(gi ? [
        ['Target model', gi.model],
        ['Verifier', gi.backend],
        ['Device', gi.device],
        ['Context', `${gi.maxContext.toLocaleString()} tokens`],
        ['Tokenizer', d.info ? (d.info.tokenizerHash === gi.tokenizerHash ? 'matches the draft ✓' : 'differs from the draft ✗') : gi.tokenizerHash.slice(0, 16)],
      ] as [string, string][] : []),
    ]));
  }
  renderSourceFields();
  subscribe(render);
  render();
  void refreshCache();
  // Refresh the cache table whenever a load finishes.
  let lastStatus = state.draft.status;
  subscribe((s) => {
    if (s.draft.status !== lastStatus) {
      lastStatus = s.draft.status;
      if (lastStatus === 'ready') void refreshCache();
    }
  });
}
