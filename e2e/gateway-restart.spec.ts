// Fault tolerance: the gateway is killed mid-generation and started again on the same port;
// the worker reconnects, resumes the session from its accepted transcript, and the greedy
// output equals an uninterrupted run's. This spec runs its own gateway so it can kill it.

import { test, expect } from '@playwright/test';
import { spawn, type ChildProcess } from 'node:child_process';
import { openApp, sendChat, setSetting, waitFor, watchConsole, expectNoConsoleErrors } from './helpers.ts';

const PORT = Number(process.env.DUET_E2E_RESTART_PORT ?? 4318);

async function startGateway(): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['bin/duet.mjs', 'serve', '--port', String(PORT), '--host', '127.0.0.1', '--verifier', 'cpu'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d) => { log += d; });
  child.stderr!.on('data', (d) => { log += d; });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}:\n${log}`);
    try {
      const res = await fetch(`http://127.0.0.1:${PORT}/api/info`);
      if (res.ok) return child;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`gateway did not start in 60 s:\n${log}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function stopGateway(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

test('the gateway killed and restarted mid-generation: generation resumes, output unchanged', async ({ page }) => {
  test.setTimeout(400_000);
  const watch = watchConsole(page);
  let gw = await startGateway();
  try {
    await page.goto(`http://127.0.0.1:${PORT}/?test&draft=cpu`);
    await waitFor(page, `s.draft.status === 'ready' && s.gateway.status === 'connected'`);
    await setSetting(page, 'chat', 'temperature', '0');
    await setSetting(page, 'chat', 'maxTokens', '60');
    // Reference: an uninterrupted greedy run.
    await sendChat(page, 'And it came to pass');
    const ref = await waitFor(page, `s.chat.messages === 2 && !s.chat.running && s.chat.lastDone !== null`);
    expect(ref.chat.lastError).toBeNull();
    // The same prompt again in a fresh conversation, with RTT injected so the run is slow
    // enough to interrupt.
    await page.getByRole('button', { name: 'Clear' }).click();
    await page.getByRole('tab', { name: 'Side by side' }).click();
    await page.getByText('Latency and sampling settings').click();
    await page.getByLabel(/Injected network round trip/).fill('150');
    await page.getByRole('tab', { name: 'Chat' }).click();
    await sendChat(page, 'And it came to pass');
    await waitFor(page, `s.chat.messages === 2 && s.chat.running && (s.chat.lastStats?.tokens ?? 0) >= 4`);
    await stopGateway(gw);
    await waitFor(page, `s.gateway.status === 'reconnecting' || s.gateway.status === 'error'`);
    gw = await startGateway();
    const s = await waitFor(page, `s.chat.messages === 2 && !s.chat.running && s.chat.lastDone !== null`, 120_000);
    expect(s.chat.lastError).toBeNull();
    expect(s.chat.lastText).toBe(ref.chat.lastText);
    expect(s.gateway.status).toBe('connected');
  } finally {
    await stopGateway(gw);
  }
  expectNoConsoleErrors(watch, [/WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/.*' failed/, /ERR_CONNECTION_REFUSED/]);
});
