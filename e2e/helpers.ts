// Shared e2e helpers: open the app in test mode, wait on the typed test API (never sleep),
// and fail a test on any console error or uncaught page error it did not expect.

import { expect, type Page } from '@playwright/test';
import { spawn, type ChildProcess } from 'node:child_process';
import type { DuetTestSnapshot } from '../src/lib/app-test-api.ts';

/** Console messages some specs provoke on purpose (a refused WebSocket) match these. */
export type Allow = RegExp[];

export function watchConsole(page: Page): { errors: string[] } {
  const errors: string[] = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('worker', (w) => w.on('console', (msg) => { if (msg.type() === 'error') errors.push(`worker console: ${msg.text()}`); }));
  return { errors };
}

export function expectNoConsoleErrors(watch: { errors: string[] }, allow: Allow = []): void {
  const unexpected = watch.errors.filter((e) => !allow.some((re) => re.test(e)));
  expect(unexpected, 'console errors during the test').toEqual([]);
}

export async function snapshot(page: Page): Promise<DuetTestSnapshot> {
  return page.evaluate(() => window.__duet!.snapshot());
}

/**
 * Waits until a predicate over the snapshot holds (polls in the page on animation frames). The
 * predicate is typed against the snapshot, so a misspelt or moved field fails the typecheck; it
 * runs in the page, so it may read only its argument (no variables of the spec).
 */
export async function waitFor(page: Page, pred: (s: DuetTestSnapshot) => boolean, timeout = 180_000): Promise<DuetTestSnapshot> {
  await page.waitForFunction(`(() => { const s = window.__duet && window.__duet.snapshot(); return !!s && !!(${pred.toString()})(s); })()`, undefined, { timeout, polling: 'raf' });
  return snapshot(page);
}

export async function openApp(page: Page, query = '', hash = ''): Promise<DuetTestSnapshot> {
  await page.goto(`/?test${query ? `&${query}` : ''}${hash}`);
  // settled: the draft failed, or it loaded and a full connect finished (an early gateway error,
  // found while the draft still loads, is not the end: the connect after the load follows)
  return waitFor(page, (s) => s.draft.status === 'error' || s.draft.status === 'ready' && (s.gateway.status === 'connected' || s.gateway.status === 'error' && s.gateway.attempts > 0));
}

export async function setSetting(page: Page, prefix: 'chat' | 'compare', key: string, value: string | boolean): Promise<void> {
  const input = page.locator(`#${prefix}-${key}`);
  if (typeof value === 'boolean') await input.setChecked(value);
  else {
    await input.fill(value);
    await input.dispatchEvent('change');
  }
}

export async function sendChat(page: Page, prompt: string): Promise<void> {
  await page.getByLabel('Prompt', { exact: true }).fill(prompt);
  await page.getByTestId('send').click();
}

/** Starts an extra `duet serve` (cpu verifier) that a spec controls; resolves once it answers /api/info. */
export async function startGateway(port: number, extraArgs: string[] = []): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['bin/duet.mjs', 'serve', '--port', String(port), '--host', '127.0.0.1', '--verifier', 'cpu', '--quiet', ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d) => { log += d; });
  child.stderr!.on('data', (d) => { log += d; });
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}:\n${log}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/api/info`);
      if (res.ok) return child;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`gateway did not start in 120 s:\n${log}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function stopGateway(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}
