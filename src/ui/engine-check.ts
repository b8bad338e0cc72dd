// The engine check page (#engine-check): the worker runs the WebGPU engine on a small
// random-weight model and the page runs the CPU reference on the same weights; the logits
// are compared (NMSE, max error, argmax agreement) and published on window.__duetEngineCheck
// for e2e/engine-worker.spec.ts. Issue 2: the engine runs in Chromium's WebGPU in a Worker.

import { h } from './dom.ts';
import { engine } from './app.ts';
import { CpuLlama } from '../engine/reference.ts';
import { randomWeights } from '../engine/weights.ts';
import { syntheticConfig } from '../engine/config.ts';
import type { EngineCheckReport } from '../lib/app-test-api.ts';
import type { EngineCheckSpec } from '../lib/worker/protocol.ts';

declare global {
  interface Window {
    __duetEngineCheck?: EngineCheckReport;
  }
}

/** Shapes chosen to be awkward: prime vocab and intermediate sizes, GQA ratio 3, 7 tokens. */
export const CHECK_SPEC: EngineCheckSpec = {
  config: { hiddenSize: 96, intermediateSize: 257, numLayers: 2, numHeads: 6, numKvHeads: 2, headDim: 16, vocabSize: 1031 },
  seed: 7,
  tokens: [1, 17, 400, 1030, 5, 5, 999],
};

export async function engineCheckView(root: HTMLElement): Promise<void> {
  const out = h('pre', { class: 'card mono', 'data-testid': 'engine-check' }, 'running…');
  root.append(h('h2', {}, 'Engine check: WebGPU (worker) vs CPU reference (page)'), out);
  const report: EngineCheckReport = { done: false, error: null, adapter: '', positions: 0, vocabSize: 0, nmse: NaN, maxAbsErr: NaN, argmaxAgree: 0, nonFinite: 0 };
  try {
    const gpu = await engine().diagnostics.engineCheck(CHECK_SPEC);
    const cfg = syntheticConfig('tiny', CHECK_SPEC.config);
    const ref = await new CpuLlama(cfg, randomWeights(cfg, CHECK_SPEC.seed)).forward(CHECK_SPEC.tokens, 0);
    const V = cfg.vocabSize;
    let num = 0;
    let den = 0;
    for (let i = 0; i < ref.length; i++) {
      const g = gpu.logits[i];
      if (!Number.isFinite(g)) report.nonFinite++;
      const d = g - ref[i];
      num += d * d;
      den += ref[i] * ref[i];
      report.maxAbsErr = Math.max(Number.isNaN(report.maxAbsErr) ? 0 : report.maxAbsErr, Math.abs(d));
    }
    for (let p = 0; p < gpu.positions; p++) {
      const am = (a: Float32Array) => { let b = 0; for (let j = 1; j < V; j++) if (a[p * V + j] > a[p * V + b]) b = j; return b; };
      if (am(gpu.logits) === am(ref)) report.argmaxAgree++;
    }
    Object.assign(report, { adapter: gpu.adapter, positions: gpu.positions, vocabSize: gpu.vocabSize, nmse: num / den });
  } catch (err) {
    report.error = err instanceof Error ? err.message : String(err);
  }
  report.done = true;
  window.__duetEngineCheck = report;
  out.textContent = JSON.stringify(report, null, 2);
}
