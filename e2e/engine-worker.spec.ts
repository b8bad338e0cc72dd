// Issue 2, item 5: the WGSL engine runs in headless Chromium's WebGPU inside a Web Worker.
// The #engine-check page has the worker run the engine on a small random-weight model
// (prime vocab 1031 and intermediate 257, GQA 3:1, 7 tokens) while the page runs the CPU
// reference on the same weights; the logits must agree.

import { test, expect } from '@playwright/test';
import { watchConsole, expectNoConsoleErrors } from './helpers.ts';
import type { EngineCheckReport } from '../src/lib/app-test-api.ts';

test('WebGPU engine in a worker matches the CPU reference', async ({ page }) => {
  const watch = watchConsole(page);
  await page.goto('/?test#engine-check');
  await page.waitForFunction(() => window.__duetEngineCheck?.done === true, undefined, { timeout: 180_000 });
  const r = (await page.evaluate(() => window.__duetEngineCheck)) as EngineCheckReport;
  test.info().annotations.push({ type: 'engine-check', description: `${r.adapter}: NMSE ${r.nmse.toExponential(2)}, max |err| ${r.maxAbsErr.toExponential(2)}, argmax ${r.argmaxAgree}/${r.positions}` });
  expect(r.error).toBeNull();
  expect(r.adapter).not.toBe('');
  expect(r.positions).toBe(7);
  expect(r.vocabSize).toBe(1031);
  expect(r.nonFinite).toBe(0);
  // f32 engine vs f32 reference: only summation order differs (the f32 bound).
  expect(r.nmse).toBeLessThanOrEqual(1e-7);
  expect(r.argmaxAgree).toBe(7);
  expectNoConsoleErrors(watch);
});
