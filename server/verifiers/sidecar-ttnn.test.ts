// The ttnn sidecar backend end to end on a FAKE card: the Python sidecar is spawned with
// `--backend ttnn` and server/sidecar/tests/fake_ttnn on PYTHONPATH (a fake ttnn whose paged
// cache update emulates the tile read-modify-write race of the real kernels, and a fake
// tt_transformers over it). Checks that the start-up self-test's outcome reaches the gateway's
// /api/info (`verifier.verifyPath`, `verifier.selfTest`), and that greedy speculation through
// the gateway (k+1-row verifies on the split-update path) equals the same backend's own
// target-only generate (single-row decode steps), token for token. Nothing here touches a card.
// Skipped, with the reason printed, only when /usr/bin/python3 has no torch.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomPrompts, tinyPair } from '../../src/engine/spec-fixtures.ts';
import { speculate } from '../../src/engine/speculative.ts';
import { RemoteTarget } from '../../src/protocol/client.ts';
import { startGateway } from '../gateway.ts';
import { writeLlamaDir } from './sidecar-fixtures.ts';
import { type SidecarVerifier, createSidecarVerifier } from './sidecar.ts';

const PY = '/usr/bin/python3';
const torchCheck = spawnSync(PY, ['-c', 'import torch'], { encoding: 'utf8' });
const HAVE_TORCH = torchCheck.status === 0;
if (!HAVE_TORCH) console.log(`ttnn sidecar tests skipped: ${PY} cannot import torch; install python3-torch`);
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };
const quiet = (): void => undefined;

describe.skipIf(!HAVE_TORCH)('sidecar ttnn backend on the fake card', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'duet-ttnn-'));
  const pair = tinyPair({ seed: 5, noise: 0.3 });
  let pool: SidecarVerifier;

  beforeAll(async () => {
    await writeLlamaDir(join(tmp, 'tiny'), pair.config, pair.target, 'F32');
    pool = await createSidecarVerifier({
      cmds: [[PY, 'server/sidecar/main.py', '--backend', 'ttnn', '--model', join(tmp, 'tiny'), '--max-context', '256', '--max-sessions', '6']],
      env: { PYTHONPATH: resolve('server/sidecar/tests/fake_ttnn'), HF_MODEL: '/not/the/model' },
      log: quiet,
    });
  }, 120_000);
  afterAll(async () => {
    await pool?.dispose();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('/api/info says which verify path the self-test chose; speculation == target-only generate', async () => {
    const gw = await startGateway({ verifier: pool, port: 0, host: '127.0.0.1', log: quiet });
    try {
      const info = await (await fetch(`${gw.url}/api/info`)).json();
      expect(info.verifier.verifyPath).toBe('split-update');
      expect(info.verifier.selfTest).toMatchObject([{ sidecar: 'cmd#0', ok: true, lmHeadLogits: 'bfloat16' }]);
      expect(info.device).toContain('verify split-update');
      const prompts = randomPrompts(2, pair.config.vocabSize, 21, 9);
      for (const [i, p] of prompts.entries()) {
        const { firstToken } = await pool.open(`base${i}`, p, GREEDY);
        const want = [firstToken, ...(await pool.generate(`base${i}`, 15))];
        await pool.close(`base${i}`);
        const link = new RemoteTarget({ url: gw.wsUrl, tokenizerHash: pool.info().tokenizerHash, reconnect: false });
        try {
          const r = await speculate(pair.newDraft(256), link, p, { params: GREEDY, maxTokens: 16, k: 4, pipeline: i === 1 });
          expect(r.tokens, `prompt ${i}`).toEqual(want);
        } finally {
          await link.close();
        }
      }
    } finally {
      await gw.close();
    }
  }, 120_000);
});
