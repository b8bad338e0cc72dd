// Chat view end to end: text streams from the draft + target, stats and token provenance
// render, a lost GPU device is explained and recovered, Stop ends a run early, and a reload
// loads the draft from the IndexedDB cache.

import { test, expect } from '@playwright/test';
import { openApp, sendChat, setSetting, waitFor, watchConsole, expectNoConsoleErrors } from './helpers.ts';

test('chat produces text with stats and provenance colours (draft on WebGPU)', async ({ page }) => {
  const watch = watchConsole(page);
  const ready = await openApp(page);
  expect(ready.draft.status).toBe('ready');
  // Chromium runs with SwiftShader WebGPU here, so the default path puts the draft on the GPU engine.
  expect(ready.draft.backend).toBe('webgpu');
  expect(ready.gateway.status).toBe('connected');
  await setSetting(page, 'chat', 'maxTokens', '12');
  await setSetting(page, 'chat', 'greedy', true); // greedy: the reload below must give the same text
  await sendChat(page, 'In the beginning');
  const s = await waitFor(page, (s) => s.chat.messages === 2 && !s.chat.running && s.chat.lastDone !== null);
  expect(s.chat.lastError).toBeNull();
  expect(s.chat.lastText.trim().length).toBeGreaterThan(0);
  expect(s.chat.lastStats!.tokens).toBeGreaterThan(0);
  expect(s.chat.lastStats!.tokens).toBeLessThanOrEqual(12);
  // Every generated token is accounted for by exactly one provenance.
  const p = s.chat.provenance;
  expect(p.draft + p.correction + p.bonus + p.target).toBe(s.chat.lastStats!.tokens);
  expect(p.correction + p.bonus + p.target).toBeGreaterThan(0);

  const msg = page.getByTestId('assistant-message').last();
  await expect(msg).toHaveAttribute('data-state', 'done');
  await expect(msg.locator('.tok')).toHaveCount(s.chat.lastStats!.tokens);
  for (const label of ['TTFT', 'speed', 'acceptance', 'tokens/target pass', 'target passes']) await expect(msg.locator('.stat', { hasText: label })).toBeVisible();
  await expect(page.getByRole('list', { name: 'Token colours' })).toBeVisible();

  // Device lost: the page explains, offers a reload, and the reloaded draft (from the cache,
  // on a fresh device) generates again.
  expect(await page.evaluate(() => window.__duet!.loseDevice())).toBe(true);
  const alert = page.getByRole('alert').filter({ hasText: 'The GPU device was lost' });
  await expect(alert).toBeVisible();
  await alert.getByRole('button', { name: 'Reload the draft' }).click();
  const back = await waitFor(page, (s) => s.draft.status === 'ready' || s.draft.status === 'error');
  expect(back.draft.backend).toBe('webgpu');
  expect(back.draft.fromCache).toBe(true);
  await page.getByRole('button', { name: 'Clear' }).click();
  await sendChat(page, 'In the beginning');
  const again = await waitFor(page, (s) => s.chat.messages === 2 && !s.chat.running && s.chat.lastDone !== null);
  expect(again.chat.lastError).toBeNull();
  // Greedy and the same prompt: the target decides every token, so the text is unchanged.
  expect(again.chat.lastText).toBe(s.chat.lastText);
  expectNoConsoleErrors(watch);
});

test("a new user's first prompt, with the default settings, gets a readable reply", async ({ page }) => {
  // The defaults are sampled (tools/train/report.json: chat_defaults); one click gives greedy.
  const watch = watchConsole(page);
  await openApp(page);
  await expect(page.locator('#chat-greedy')).not.toBeChecked();
  expect(Number(await page.locator('#chat-temperature').inputValue())).toBeGreaterThan(0);
  await page.getByRole('button', { name: 'Psalms 23' }).click();
  await page.getByTestId('send').click();
  const s = await waitFor(page, (s) => s.chat.messages === 2 && !s.chat.running && s.chat.lastDone !== null);
  expect(s.chat.lastError).toBeNull();
  const reply = s.chat.lastText;
  // readable: words, no run of more than 3 line breaks (the old pair opened with 18), few repeats
  expect(reply).not.toMatch(/\n\s*\n\s*\n\s*\n/);
  const words = reply.split(/\s+/).filter(Boolean);
  expect(words.length).toBeGreaterThan(10);
  const pairs = words.slice(1).map((w, i) => `${words[i]} ${w}`);
  expect(new Set(pairs).size / pairs.length).toBeGreaterThanOrEqual(0.7);
  if (process.env.DUET_SCREENSHOTS) await page.screenshot({ path: 'e2e/screenshots/chat.png' });
  // greedy is one click away and shows as such
  await page.locator('#chat-greedy').check();
  expect(Number(await page.locator('#chat-temperature').inputValue())).toBe(0);
  await page.locator('#chat-greedy').uncheck();
  expect(Number(await page.locator('#chat-temperature').inputValue())).toBeGreaterThan(0);
  expectNoConsoleErrors(watch);
});

test('stop ends a long generation early', async ({ page }) => {
  const watch = watchConsole(page);
  // The WebGPU draft (SwiftShader: tens of ms per token) with a fixed k = 4 keeps this run at
  // seconds for its ~480 tokens of context. A CPU draft with adaptive k (which may hand the run
  // to the target alone, k = 0) can finish the whole context before Stop lands: nothing to stop.
  await openApp(page);
  await setSetting(page, 'chat', 'adaptive', false);
  await setSetting(page, 'chat', 'k', '4');
  await setSetting(page, 'chat', 'maxTokens', '2000');
  await sendChat(page, 'And the LORD spake unto Moses, saying,');
  await waitFor(page, (s) => s.chat.running && (s.chat.lastStats?.tokens ?? 0) >= 3);
  await page.getByTestId('stop').click();
  const s = await waitFor(page, (s) => !s.chat.running);
  expect(s.chat.lastDone).toBe('stopped');
  expect(s.chat.lastStats!.tokens).toBeLessThan(2000);
  await expect(page.getByTestId('send')).toBeEnabled();
  expectNoConsoleErrors(watch);
});

test('a reload loads the draft from the cache', async ({ page }) => {
  const watch = watchConsole(page);
  const first = await openApp(page, 'draft=cpu');
  expect(first.draft.status).toBe('ready');
  await page.reload();
  const second = await waitFor(page, (s) => s.draft.status === 'ready' || s.draft.status === 'error');
  expect(second.draft.status).toBe('ready');
  expect(second.draft.fromCache).toBe(true);
  await page.getByRole('tab', { name: 'Models' }).click();
  await expect(page.getByTestId('cache-row').first()).toBeVisible();
  expectNoConsoleErrors(watch);
});
