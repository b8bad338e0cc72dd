// The no-WebGPU fallback: Chromium launched without the WebGPU flags and with
// --disable-webgpu (project "no-webgpu"); the draft runs on the CPU reference, the page
// says so clearly, and chat still works.

import { test, expect } from '@playwright/test';
import { openApp, sendChat, setSetting, waitFor, watchConsole, expectNoConsoleErrors } from './helpers.ts';

test('without WebGPU the draft falls back to the CPU with a notice', async ({ page }) => {
  const watch = watchConsole(page);
  const s = await openApp(page);
  expect(s.draft.status).toBe('ready');
  expect(s.draft.backend).toBe('cpu');
  expect(s.draft.fallbackReason).toBeTruthy();
  await expect(page.getByText('WebGPU is not available — the draft runs on the CPU')).toBeVisible();
  await expect(page.getByTestId('draft-pill')).toContainText('CPU');
  await setSetting(page, 'chat', 'maxTokens', '16');
  await sendChat(page, 'In the beginning');
  const done = await waitFor(page, (s) => s.chat.messages === 2 && !s.chat.running && s.chat.lastDone !== null);
  expect(done.chat.lastError).toBeNull();
  expect(done.chat.lastStats!.tokens).toBeGreaterThan(0);
  expectNoConsoleErrors(watch);
});
