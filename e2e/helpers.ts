// Shared e2e helpers: open the app in test mode, wait on the typed test API (never sleep),
// and fail a test on any console error or uncaught page error it did not expect.

import { expect, type Page, type TestInfo } from '@playwright/test';
import type { DuetTestSnapshot } from '../src/engine/worker-types.ts';

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

/** Waits until a predicate over the snapshot holds (polls in the page on animation frames). */
export async function waitFor(page: Page, pred: string, timeout = 180_000): Promise<DuetTestSnapshot> {
  await page.waitForFunction(`(() => { const s = window.__duet && window.__duet.snapshot(); return !!s && (${pred}); })()`, undefined, { timeout, polling: 'raf' });
  return snapshot(page);
}

export async function openApp(page: Page, query = '', hash = ''): Promise<DuetTestSnapshot> {
  await page.goto(`/?test${query ? `&${query}` : ''}${hash}`);
  return waitFor(page, `s.draft.status === 'ready' && s.gateway.status === 'connected' || s.draft.status === 'error' || s.gateway.status === 'error'`);
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

export async function attachScreenshot(page: Page, info: TestInfo, name: string): Promise<void> {
  await info.attach(name, { body: await page.screenshot(), contentType: 'image/png' });
}
