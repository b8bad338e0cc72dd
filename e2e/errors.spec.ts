// When things go wrong: a gateway URL nobody answers at gives a clear error on screen with
// a retry path, and the app keeps working once pointed at the right gateway.

import { test, expect } from '@playwright/test';
import { openApp, waitFor, watchConsole, expectNoConsoleErrors } from './helpers.ts';

test('a bad gateway URL shows an error with a retry path', async ({ page }) => {
  const watch = watchConsole(page);
  // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
  const s = await openApp(page, 'draft=cpu&gateway=ws://127.0.0.1:9/');
  expect(s.gateway.status).toBe('error');
  expect(s.errors.map((e) => e.code)).toContain('gateway-unreachable');
  const alert = page.getByRole('alert').filter({ hasText: 'Cannot reach the gateway' });
  await expect(alert).toBeVisible();
  await expect(alert.getByRole('button', { name: 'Retry' })).toBeVisible();
  // The retry path: fix the URL in the Models view and connect.
  await alert.getByRole('button', { name: 'Gateway settings' }).click();
  await expect(page.getByRole('tab', { name: 'Models' })).toHaveAttribute('aria-selected', 'true');
  await page.getByLabel('Gateway URL (ws:// or http://)').fill('');
  await page.getByTestId('gw-connect').click();
  const ok = await waitFor(page, (s) => s.gateway.status === 'connected' || s.gateway.status === 'error' && s.gateway.attempts > 1);
  expect(ok.gateway.status).toBe('connected');
  await expect(page.getByTestId('gateway-info')).toContainText('Target model');
  // the refused socket, and the early check's refused fetch
  expectNoConsoleErrors(watch, [/WebSocket connection to 'ws:\/\/127\.0\.0\.1:9\/.*' failed/, /ERR_CONNECTION_REFUSED|ERR_UNSAFE_PORT/]);
});

test('a bad gateway URL is told while the draft is still loading, and fixing it clears the error', async ({ page }) => {
  const watch = watchConsole(page);
  // hold the draft's files until the error is on screen: the full connect needs the loaded draft
  // (its tokenizer), the early check does not
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  await page.context().route('**/models/tiny-draft/**', async (route) => {
    await held;
    await route.continue();
  });
  await page.goto('/?test&draft=cpu&gateway=ws://127.0.0.1:9/');
  const early = await waitFor(page, (s) => s.gateway.status === 'error');
  expect(early.draft.status).toBe('loading');
  expect(early.gateway.attempts).toBe(0);
  expect(early.errors.map((e) => e.code)).toEqual(['gateway-unreachable']);
  await expect(page.getByRole('alert').filter({ hasText: 'Cannot reach the gateway' })).toBeVisible();
  // the right gateway (this page's own), still before the draft is in: the error goes
  await page.getByRole('tab', { name: 'Models' }).click();
  await page.getByLabel('Gateway URL (ws:// or http://)').fill('');
  await page.getByTestId('gw-connect').click();
  await waitFor(page, (s) => s.gateway.status === 'idle');
  await expect(page.getByRole('alert').filter({ hasText: 'Cannot reach the gateway' })).toHaveCount(0);
  release();
  const ok = await waitFor(page, (s) => s.draft.status === 'ready' && (s.gateway.status === 'connected' || s.gateway.status === 'error' && s.gateway.attempts > 0));
  expect(ok.gateway.status).toBe('connected');
  expect(ok.errors.map((e) => e.code)).toEqual(['gateway-unreachable']);
  expectNoConsoleErrors(watch, [/ERR_CONNECTION_REFUSED|ERR_UNSAFE_PORT/]);
});
