// The library from a blank page (not the app): e2e/lib-page imports `duet` by its package name
// and is built by Vite as an app author's build would; a gateway (cpu verifier) serves it. At
// temperature 0 the streamed reply equals the non-streamed one, the target-only (baseline) one,
// and `duet generate` greedy on the target, run here in Node as the independent oracle.

import { test, expect } from '@playwright/test';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { ChildProcess } from 'node:child_process';
import { build } from 'vite';
import { startGateway, stopGateway, watchConsole, expectNoConsoleErrors } from './helpers.ts';
import type { ChatCompletionRequest } from 'duet';
// window.__lib (typed) is declared in ./lib-page/main.ts, which runs in the page, not here.

const PORT = Number(process.env.DUET_E2E_LIB_PORT ?? 4321);
const PROMPT = 'In the beginning God created';
const MAX_TOKENS = 24;

let gw: ChildProcess;

test.beforeAll(async () => {
  await build({ configFile: 'e2e/lib-page/vite.config.ts' });
  gw = await startGateway(PORT, ['--static', 'test-results/lib-page']);
});

test.afterAll(async () => {
  if (gw) await stopGateway(gw);
});

/** The target alone, greedy, outside the browser and the gateway: `duet generate --chat --json` (one user message in the chat template, as the library applies it). */
async function targetGreedy(prompt: string, maxTokens: number): Promise<{ promptTokens: number[]; tokens: number[]; text: string; stopReason: string }> {
  const { stdout } = await promisify(execFile)(process.execPath, ['bin/duet.mjs', 'generate', '--model', 'public/models/tiny-target', '--prompt', prompt, '--max-tokens', String(maxTokens), '--temperature', '0', '--chat', '--json']);
  return JSON.parse(stdout);
}

test('a blank page streams a greedy reply that equals the non-streamed one and the target alone', async ({ page }) => {
  const watch = watchConsole(page);
  const oracle = await targetGreedy(PROMPT, MAX_TOKENS);
  expect(oracle.stopReason).toBe('length'); // no EOS inside the window: both sides stop on length
  await page.goto(`http://127.0.0.1:${PORT}/`);
  await page.waitForFunction(() => !!window.__lib);
  // Before a draft is loaded: not ready, typed.
  expect(await page.evaluate(() => window.__lib!.errorCode({ messages: [{ role: 'user', content: 'x' }] }))).toBe('not-ready');

  const loaded = await page.evaluate(() => window.__lib!.load('/models/tiny-draft/', 'cpu'));
  expect(loaded.name).toBe('tiny-draft');
  expect(loaded.backend).toBe('cpu');
  expect(loaded.phases).toContain('download');

  const req: ChatCompletionRequest = { messages: [{ role: 'user', content: PROMPT }], temperature: 0, max_tokens: MAX_TOKENS, seed: 1 };
  const streamed = await page.evaluate((r) => window.__lib!.stream(r), req);
  // Streamed: several chunks, the first with the role, a finish_reason and usage at the end.
  expect(streamed.chunkObjects.every((o) => o === 'chat.completion.chunk')).toBe(true);
  expect(streamed.deltas.length).toBeGreaterThan(1);
  expect(streamed.roleFirst).toBe(true);
  expect(streamed.finish).toBe('length');
  expect(streamed.usage).toEqual({ prompt_tokens: oracle.promptTokens.length, completion_tokens: MAX_TOKENS, total_tokens: oracle.promptTokens.length + MAX_TOKENS });
  // Greedy speculative = the target's own greedy tokens and text.
  expect(streamed.tokens).toEqual(oracle.tokens);
  expect(streamed.text).toBe(oracle.text);
  // The draft did propose, and the target accepted some: fewer target passes than tokens.
  expect(streamed.provenance).toContain('draft');
  expect(streamed.targetPasses).toBeLessThan(MAX_TOKENS);

  const whole = await page.evaluate((r) => window.__lib!.complete(r), req);
  expect(whole.object).toBe('chat.completion');
  expect(whole.choices[0].message).toEqual({ role: 'assistant', content: streamed.text });
  expect(whole.choices[0].finish_reason).toBe('length');
  expect(whole.duet.tokens.filter((t) => t.id >= 0).map((t) => t.id)).toEqual(oracle.tokens);
  expect(whole.duet.rounds.length).toBe(whole.duet.stats.rounds);

  // Target alone through the gateway (the app's baseline pane): the same text.
  const baseline = await page.evaluate((r) => window.__lib!.complete(r), { ...req, duet: { mode: 'baseline' as const } });
  expect(baseline.choices[0].message.content).toBe(oracle.text);
  expect(baseline.duet.stats.acceptanceRate).toBeNull();
  expect(baseline.duet.stats.targetPasses).toBe(MAX_TOKENS);
  expectNoConsoleErrors(watch);
});

test('the app\'s own worker (duet/worker, CreateWebWorkerDuetEngine); abort ends a stream with finish_reason "abort"; bad requests fail typed', async ({ page }) => {
  const watch = watchConsole(page);
  await page.goto(`http://127.0.0.1:${PORT}/?own-worker`);
  await page.waitForFunction(() => !!window.__lib);
  expect((await page.evaluate(() => window.__lib!.load('/models/tiny-draft/', 'cpu'))).backend).toBe('cpu');
  expect(await page.evaluate(() => window.__lib!.errorCode({ messages: [{ role: 'user', content: 'x' }], top_p: 2 }))).toBe('invalid-request');
  expect(await page.evaluate(() => window.__lib!.errorCode({ messages: [] }))).toBe('invalid-request');
  const cut = await page.evaluate(() => window.__lib!.stream({ messages: [{ role: 'user', content: 'And the LORD spake unto Moses, saying,' }], temperature: 0.8, max_tokens: 400 }, 1));
  expect(cut.finish).toBe('abort');
  expect(cut.usage!.completion_tokens).toBe(cut.tokens.length);
  expect(cut.tokens.length).toBeLessThan(400);
  expectNoConsoleErrors(watch);
});
