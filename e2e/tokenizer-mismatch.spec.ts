// A gateway whose target has a different tokenizer is refused at connect with a message that
// says so and points at the fix. The target here is the bundled tiny target with one vocab
// entry renamed (a copy made at test time), so only the tokenizer hash differs.

import { test, expect } from '@playwright/test';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openApp, watchConsole, expectNoConsoleErrors, startGateway, stopGateway } from './helpers.ts';

const PORT = Number(process.env.DUET_E2E_MISMATCH_PORT ?? 4320);
const TARGET = 'public/models/tiny-target';

test('tokenizer mismatch: refused with a clear message', async ({ page, baseURL }) => {
  const watch = watchConsole(page);
  const dir = await mkdtemp(join(tmpdir(), 'duet-mismatch-'));
  for (const f of ['config.json', 'generation_config.json', 'tokenizer_config.json', 'model.safetensors']) await copyFile(join(TARGET, f), join(dir, f));
  const tok = JSON.parse(await readFile(join(TARGET, 'tokenizer.json'), 'utf8'));
  const vocab = tok.model.vocab as Record<string, number>;
  const [piece, id] = Object.entries(vocab)[300];
  delete vocab[piece];
  vocab[`${piece}\u00a7`] = id;
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tok));
  const gw = await startGateway(PORT, ['--target', dir, '--allow-origin', new URL(baseURL!).origin]);
  try {
    const s = await openApp(page, `draft=cpu&gateway=ws://127.0.0.1:${PORT}/`);
    expect(s.draft.status).toBe('ready');
    expect(s.gateway.status).toBe('error');
    expect(s.errors.map((e) => e.code)).toContain('tokenizer-mismatch');
    const alert = page.getByRole('alert').filter({ hasText: 'Draft and target use different tokenizers' });
    await expect(alert).toBeVisible();
    await expect(alert.getByRole('button', { name: 'Choose another draft' })).toBeVisible();
    await expect(alert.getByRole('button', { name: 'Retry' })).toBeVisible();
  } finally {
    await stopGateway(gw);
    await rm(dir, { recursive: true, force: true });
  }
  expectNoConsoleErrors(watch);
});
