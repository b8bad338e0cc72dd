// A gateway started with --token refuses a page without it: the page says so (not just
// "cannot connect"), and entering the token in the Models view connects.

import { test, expect } from '@playwright/test';
import { openApp, waitFor, watchConsole, expectNoConsoleErrors, startGateway, stopGateway } from './helpers.ts';

const PORT = Number(process.env.DUET_E2E_AUTH_PORT ?? 4319);

test('auth refused: a clear message, then the token connects', async ({ page, baseURL }) => {
  const watch = watchConsole(page);
  const gw = await startGateway(PORT, ['--token', 's3cret-e2e', '--allow-origin', new URL(baseURL!).origin]);
  try {
    const s = await openApp(page, `draft=cpu&gateway=ws://127.0.0.1:${PORT}/`);
    expect(s.gateway.status).toBe('error');
    expect(s.errors.map((e) => e.code)).toContain('auth-refused');
    await expect(page.getByRole('alert').filter({ hasText: 'The gateway refused the access token' })).toBeVisible();
    await page.getByRole('tab', { name: 'Models' }).click();
    await page.getByLabel('Gateway URL (ws:// or http://)').fill(`ws://127.0.0.1:${PORT}/`);
    await page.getByRole('textbox', { name: 'Access token' }).fill('s3cret-e2e');
    await page.getByTestId('gw-connect').click();
    const ok = await waitFor(page, (s) => s.gateway.status === 'connected' || s.gateway.status === 'error' && s.gateway.attempts > 1);
    expect(ok.gateway.status).toBe('connected');
  } finally {
    await stopGateway(gw);
  }
  expectNoConsoleErrors(watch, [/WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/.*' failed/]);
});
