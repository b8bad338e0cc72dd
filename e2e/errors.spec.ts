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
  const ok = await waitFor(page, (s) => s.gateway.status === 'connected' || s.gateway.status === 'error' && s.errors.length > 1);
  expect(ok.gateway.status).toBe('connected');
  await expect(page.getByTestId('gateway-info')).toContainText('Target model');
  expectNoConsoleErrors(watch, [/WebSocket connection to 'ws:\/\/127\.0\.0\.1:9\/.*' failed/]);
});
