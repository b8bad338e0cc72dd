// The Python sidecar (torch backend) through the TypeScript pool, against the TypeScript CPU
// reference (CpuLlama) as the oracle — which makes this also the independent PyTorch golden
// test of the CPU reference. Random-weight models are written to a temp dir as safetensors:
// the tiny config, and real Llama-3.2 shapes (1B: head_dim 64, GQA 4; 3B: head_dim 128,
// GQA 3) with one layer, a 1031-token vocab and a reduced MLP so it fits the test budget.
// Tolerance: logits NMSE <= 1e-9 (torch f32 accumulation vs the reference's f64 dot
// products; observed ~1e-13) and identical argmax wherever the reference's top-2 gap > 1e-4.
// Skipped, with the reason printed, only when /usr/bin/python3 has no torch.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LlamaConfig, syntheticConfig } from '../../src/engine/config.ts';
import { type LlamaWeights, randomWeights } from '../../src/engine/weights.ts';
import { CpuLlama } from '../../src/engine/reference.ts';
import { Rng, STREAM_TARGET, argmax, processedDist } from '../../src/engine/sampling.ts';
import { acceptBlock } from '../../src/engine/accept.ts';
import { randomPrompts, tinyPair } from '../../src/engine/spec-fixtures.ts';
import { LocalTarget } from '../../src/engine/local-target.ts';
import { loadModelDir } from '../../src/engine/loader/node.ts';
import { tokenizerHash } from '../../src/engine/tokenizer.ts';
import { compare, randomF32 } from '../../src/kernels/testing.ts';
import { roundWeightsBf16, writeLlamaDir } from './sidecar-fixtures.ts';
import {
  type SidecarVerifier, SidecarBatchError, SidecarMismatchError, SidecarRemoteError, SidecarStartError, SidecarSessionLostError, createSidecarVerifier, splitCommand,
} from './sidecar.ts';
import type { VerifyRequest } from './types.ts';
import type { TargetLink } from '../../src/engine/target-link.ts';
import { startGateway } from '../gateway.ts';
import { RemoteTarget } from '../../src/protocol/client.ts';
import { speculate } from '../../src/engine/speculative.ts';

const PY = '/usr/bin/python3';
const torchCheck = spawnSync(PY, ['-c', 'import torch'], { encoding: 'utf8' });
const HAVE_TORCH = torchCheck.status === 0;
if (!HAVE_TORCH) console.log(`sidecar tests skipped: ${PY} cannot import torch (${(torchCheck.stderr || torchCheck.error?.message || '').trim().split('\n').pop()}); install python3-torch`);

const NMSE_BOUND = 1e-9;
const GREEDY = { temperature: 0, topK: 0, topP: 1, seed: 0 };
const sidecarCmd = (dir: string, extra: string[] = []): string[] =>
  [PY, 'server/sidecar/main.py', '--model', dir, '--max-sessions', '24', '--max-context', '256', '--threads', '1', ...extra];
const quiet = (): void => undefined;

/** Target-only greedy continuation on an append-only CPU reference cache (no rollback involved). */
function greedyRef(model: CpuLlama, prompt: number[], n: number): number[] {
  const vocab = model.config.vocabSize;
  let logits = model.forwardSync(prompt, 0);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push(argmax(logits, logits.length - vocab, vocab));
    if (i + 1 < n) logits = model.forwardSync([out[i]], prompt.length + i);
  }
  return out;
}

/** Logits match within NMSE_BOUND and every clear argmax agrees. */
function expectLogitsMatch(got: Float32Array, want: Float32Array, vocab: number, what: string): void {
  const c = compare(got, want, NMSE_BOUND, what);
  expect(c.ok, c.summary).toBe(true);
  for (let r = 0; r < want.length / vocab; r++) {
    const row = want.subarray(r * vocab, (r + 1) * vocab);
    const sorted = Float32Array.from(row).sort();
    if (sorted[vocab - 1] - sorted[vocab - 2] > 1e-4) expect(argmax(got, r * vocab, vocab), `${what}: argmax of row ${r}`).toBe(argmax(row));
  }
}

describe.skipIf(!HAVE_TORCH)('sidecar verifier (torch backend) vs the CPU reference', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'duet-sidecar-'));
  const pair = tinyPair({ seed: 5, noise: 0.3 });
  const shapes: { name: string; config: LlamaConfig; weights: LlamaWeights; dtype: 'F32' | 'BF16' }[] = [];
  let pool: SidecarVerifier;
  const golden = new Map<string, SidecarVerifier>();

  beforeAll(async () => {
    const c1 = syntheticConfig('1b', { numLayers: 1, intermediateSize: 640, vocabSize: 1031 });
    const c3 = syntheticConfig('3b', { numLayers: 1, intermediateSize: 512, vocabSize: 1031 });
    shapes.push({ name: 'llama-1b-shape (hd 64, GQA 4), F32', config: c1, weights: randomWeights(c1, 11), dtype: 'F32' });
    const w3 = randomWeights(c3, 13);
    shapes.push({ name: 'llama-3b-shape (hd 128, GQA 3), BF16', config: c3, weights: roundWeightsBf16(w3), dtype: 'BF16' });
    await writeLlamaDir(join(tmp, 'tiny'), pair.config, pair.target, 'F32');
    await writeLlamaDir(join(tmp, 's0'), c1, shapes[0].weights, 'F32');
    await writeLlamaDir(join(tmp, 's1'), c3, w3, 'BF16');
    // a pool of two supervised sidecars on the tiny target; fast health/backoff for the crash test
    const started = [
      createSidecarVerifier({ cmds: [sidecarCmd(join(tmp, 'tiny')), sidecarCmd(join(tmp, 'tiny'))], healthIntervalMs: 500, backoffInitialMs: 100, log: quiet })
        .then((v) => { pool = v; }),
      ...shapes.map((s, i) => createSidecarVerifier({ cmds: [sidecarCmd(join(tmp, `s${i}`))], log: quiet }).then((v) => { golden.set(s.name, v); })),
    ];
    await Promise.all(started);
  });

  afterAll(async () => {
    await Promise.all([pool?.dispose(), ...[...golden.values()].map((v) => v.dispose())]);
    rmSync(tmp, { recursive: true, force: true });
  });

  it('reports its model, vocab, batch limits and device', () => {
    const info = pool.info();
    expect(info).toMatchObject({ backend: 'sidecar', model: 'tiny', vocabSize: pair.config.vocabSize, maxBatch: 64, maxContext: 256 });
    expect(info.device).toMatch(/torch .*cpu float32/);
    expect(pool.status().map((s) => s.state)).toEqual(['up', 'up']);
  });

  it('real-shape logits match the CPU reference (fresh sequences of 1 and 13 tokens)', async () => {
    for (const s of shapes) {
      const v = golden.get(s.name)!;
      const vocab = s.config.vocabSize;
      for (const n of [1, 13]) {
        const tokens = randomPrompts(1, vocab, n * 31, 1)[0].concat(randomPrompts(1, vocab, n, n)[0]).slice(0, n);
        while (tokens.length < n) tokens.push((tokens.length * 97) % vocab);
        const want = new CpuLlama(s.config, s.weights, 64).forwardSync(tokens, 0);
        expectLogitsMatch(await v.logits(tokens), want, vocab, `${s.name} n=${n}`);
      }
    }
  });

  it('a batched verify (per-session start positions and k) matches the reference, logits and verdicts', async () => {
    const s = shapes[1];
    const v = golden.get(s.name)!;
    const vocab = s.config.vocabSize;
    const prompts = [[5], [7, 8], randomPrompts(1, vocab, 2, 1)[0].concat([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), [9, 9, 9, 9, 9]];
    const seqs: number[][] = [];
    // one reference model per session; it re-runs [last, draft] at the block's start each round
    const refs = prompts.map(() => new CpuLlama(s.config, s.weights, 64));
    for (let i = 0; i < prompts.length; i++) {
      const { firstToken } = await v.open(`b${i}`, prompts[i], GREEDY);
      const ref = refs[i].forwardSync(prompts[i], 0);
      expect(firstToken).toBe(argmax(ref, (prompts[i].length - 1) * vocab, vocab));
      seqs.push([...prompts[i], firstToken]);
    }
    for (let round = 0; round < 2; round++) {
      const reqs: VerifyRequest[] = seqs.map((seq, i) => {
        const k = [0, 1, 3, 6][(i + round) % 4];
        // half the drafts start with the reference's own next token, so some are accepted
        const next = i % 2 === 0 ? argmax(refs[i].forwardSync([seq[seq.length - 1]], seq.length - 1)) : -1;
        const draft = Array.from({ length: k }, (_, j) => (j === 0 && next >= 0 ? next : (j * 37 + i) % vocab));
        return { sessionId: `b${i}`, draft };
      });
      const res = await v.verifyBatchDetailed(reqs, true);
      for (let i = 0; i < reqs.length; i++) {
        const want = refs[i].forwardSync([seqs[i][seqs[i].length - 1], ...reqs[i].draft], seqs[i].length - 1);
        expectLogitsMatch(res[i].logits!, want, vocab, `round ${round} session b${i} k=${reqs[i].draft.length}`);
        let n = 0;
        while (n < reqs[i].draft.length && argmax(want, n * vocab, vocab) === reqs[i].draft[n]) n++;
        expect([res[i].accepted, res[i].token]).toEqual([n, argmax(want, n * vocab, vocab)]);
        seqs[i].push(...reqs[i].draft.slice(0, n), res[i].token);
      }
    }
    for (let i = 0; i < prompts.length; i++) await v.close(`b${i}`);
  });

  it('greedy speculative decoding through the pool equals target-only greedy (8 sessions, k = 1, 2, 4, 8)', async () => {
    const vocab = pair.config.vocabSize;
    const N = 32;
    const prompts = randomPrompts(8, vocab, 21, 9);
    const sessions = prompts.map((p, i) => ({ id: `spec${i}`, k: [1, 2, 4, 8][i % 4], seq: [...p], draft: pair.newDraft(256), valid: 0, out: [] as number[] }));
    for (const s of sessions) {
      const { firstToken } = await pool.open(s.id, s.seq, GREEDY);
      s.seq.push(firstToken);
      s.out.push(firstToken);
    }
    expect(pool.status().map((m) => m.sessions)).toEqual([4, 4]); // least-loaded placement
    let accepted = 0;
    let drafted = 0;
    let batches = 0;
    while (sessions.some((s) => s.out.length < N)) {
      const live = sessions.filter((s) => s.out.length < N);
      const reqs = live.map((s) => {
        const draft: number[] = [];
        let logits = s.draft.forwardSync(s.seq.slice(s.valid), s.valid);
        let last = logits.length / vocab - 1;
        for (let j = 0; j < s.k; j++) {
          const t = argmax(logits, last * vocab, vocab);
          draft.push(t);
          if (j + 1 < s.k) {
            logits = s.draft.forwardSync([t], s.seq.length + j);
            last = 0;
          }
        }
        return { sessionId: s.id, draft };
      });
      const res = await pool.verifyBatch(reqs);
      batches++;
      live.forEach((s, i) => {
        const { accepted: n, token } = res[i];
        accepted += n;
        drafted += reqs[i].draft.length;
        s.valid = s.seq.length + Math.min(n, s.k - 1);
        const add = [...reqs[i].draft.slice(0, n), token];
        s.seq.push(...add);
        s.out.push(...add);
      });
    }
    for (let i = 0; i < sessions.length; i++) {
      const want = greedyRef(pair.newTarget(256), prompts[i], N);
      expect(sessions[i].out.slice(0, N), `session ${i} (k=${sessions[i].k})`).toEqual(want);
    }
    // the rule was exercised both ways, and batches really carried several sessions
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(drafted);
    expect(batches).toBeLessThan(N);
    // baseline generate on the sidecar equals the oracle too
    const { firstToken } = await pool.open('base', prompts[0], GREEDY);
    const streamed: number[] = [];
    const gen = await pool.generate('base', 12, (t) => streamed.push(t));
    expect([firstToken, ...gen]).toEqual(greedyRef(pair.newTarget(256), prompts[0], 13));
    expect(streamed).toEqual(gen);
    for (const s of sessions) await pool.close(s.id);
    await pool.close('base');
  });

  it('through the gateway (H6) with the speculative controller (H5): greedy output == target-only, k = 2, 4 and adaptive, pipelined', async () => {
    const gw = await startGateway({ verifier: pool, port: 0, host: '127.0.0.1', log: quiet });
    try {
      const vocab = pair.config.vocabSize;
      const prompts = randomPrompts(6, vocab, 33, 7);
      const opts = [{ k: 2 }, { k: 4 }, { adaptive: true }];
      const results = await Promise.all(prompts.map(async (p, i) => {
        const link = new RemoteTarget({ url: gw.wsUrl, tokenizerHash: pool.info().tokenizerHash, reconnect: false });
        try {
          return await speculate(pair.newDraft(256), link, p, { params: GREEDY, maxTokens: 24, ...opts[i % 3], pipeline: i % 2 === 0 });
        } finally {
          await link.close();
        }
      }));
      results.forEach((r, i) => expect(r.tokens, `prompt ${i}`).toEqual(greedyRef(pair.newTarget(256), prompts[i], r.tokens.length)));
      expect(results.every((r) => r.tokens.length === 24)).toBe(true);
      expect(gw.stats().batchedRequests).toBeGreaterThan(gw.stats().batches); // sessions shared verify batches
    } finally {
      await gw.close();
    }
  });

  it('bad requests fail only their own session, with typed errors', async () => {
    await pool.open('good', [1, 2, 3], GREEDY);
    await pool.open('bad', [4, 5], GREEDY);
    const err = await pool.verifyBatch([
      { sessionId: 'good', draft: [7] },
      { sessionId: 'bad', draft: [pair.config.vocabSize + 5] },
      { sessionId: 'never-opened', draft: [] },
    ]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SidecarBatchError);
    const be = err as SidecarBatchError;
    expect(be.results.map((r) => r.sessionId)).toEqual(['good']);
    expect((be.failures.get('bad') as SidecarRemoteError).code).toBe('BadRequest');
    expect(be.failures.get('bad')!.message).toMatch(/outside the vocabulary/);
    expect((be.failures.get('never-opened') as SidecarRemoteError).code).toBe('UnknownSession');
    await expect(pool.open('x', [], GREEDY)).rejects.toThrow(/at least 1 token/);
    await expect(pool.open('y', [1], { ...GREEDY, topP: 2 })).rejects.toThrow(/topP/);
    // the bad session itself is still usable
    expect((await pool.verifyBatch([{ sessionId: 'bad', draft: [] }]))[0].accepted).toBe(0);
    await pool.close('good');
    await pool.close('bad');
  });

  it('sampled verify carries the draft distributions (binary): first token, accepted count and token are the CPU reference target\'s, draw for draw', async () => {
    const sp = { temperature: 0.9, topK: 20, topP: 0.95, seed: 7 };
    const q = { ids: Int32Array.of(10, 11, 12), probs: Float32Array.of(0.5, 0.25, 0.25) };
    // the oracle: the same session on the TypeScript target (same logits, same RNG stream, same acceptance rule)
    const ref = new LocalTarget(pair.newTarget(256));
    const refOpen = await ref.open([3, 4, 5], sp);
    const refVerdicts = [await ref.verify([10, 12], [q, q]), await ref.verify([11], [q])];
    const opened = await pool.open('samp', [3, 4, 5], sp);
    expect(opened.firstToken).toBe(refOpen.firstToken);
    const got = [(await pool.verifyBatch([{ sessionId: 'samp', draft: [10, 12], draftDists: [q, q] }]))[0], (await pool.verifyBatch([{ sessionId: 'samp', draft: [11], draftDists: [q] }]))[0]];
    expect(got.map((r) => [r.accepted, r.token])).toEqual(refVerdicts.map((r) => [r.accepted, r.token]));
    await pool.close('samp');
    // whole sampled runs (k = 3, a real draft's q): every accept/reject draw and every correction is the reference's
    const poolLink = (id: string): TargetLink => ({
      targetPasses: 0,
      open: (prompt, params) => pool.open(id, prompt, params),
      verify: async (draft, draftDists) => ({ ...(await pool.verifyBatch([{ sessionId: id, draft, draftDists }]))[0], verifyMs: 0 }),
      generate: (n, onToken) => pool.generate(id, n, onToken),
      close: () => pool.close(id),
    });
    let drafted = 0;
    let accepted = 0;
    for (const [i, prompt] of randomPrompts(4, pair.config.vocabSize, 9, 3).entries()) {
      const params = { ...sp, seed: 100 + i };
      const opts = { params, maxTokens: 20, k: 3, adaptive: false };
      const want = await speculate(pair.newDraft(256), new LocalTarget(pair.newTarget(256)), prompt, opts);
      const link = poolLink(`run${i}`);
      const have = await speculate(pair.newDraft(256), link, prompt, opts);
      await link.close();
      expect(have.tokens, `run ${i}`).toEqual(want.tokens);
      expect(have.provenance, `run ${i}`).toEqual(want.provenance);
      drafted += want.stats.draftedTokens;
      accepted += want.stats.acceptedTokens;
    }
    // the runs exercised both outcomes of the sampled acceptance test
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(drafted);
  });

  it('--sidecar-addr connects to a running sidecar', async () => {
    const addr = pool.status()[1].addr!;
    const remote = await createSidecarVerifier({ addrs: [addr], log: quiet });
    try {
      const { firstToken } = await remote.open('r', [1, 2, 3], GREEDY);
      expect(firstToken).toBe(greedyRef(pair.newTarget(64), [1, 2, 3], 1)[0]);
      expect(remote.info().model).toBe('tiny');
    } finally {
      await remote.dispose();
    }
    // a pool whose members serve different models is refused at start
    const other = golden.get(shapes[0].name)!.status()[0].addr!;
    await expect(createSidecarVerifier({ addrs: [addr, other], log: quiet })).rejects.toBeInstanceOf(SidecarMismatchError);
  });

  it('a killed sidecar fails its sessions clearly, the other keeps serving, and the supervisor restarts it', async () => {
    for (const id of ['k0', 'k1', 'k2', 'k3']) await pool.open(id, [1, 2, 3], GREEDY);
    const st = pool.status();
    expect(st.map((m) => m.sessions)).toEqual([2, 2]);
    const victim = st[0];
    process.kill(victim.pid!, 'SIGKILL');
    const err = await pool.verifyBatch(['k0', 'k1', 'k2', 'k3'].map((sessionId) => ({ sessionId, draft: [] }))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SidecarBatchError);
    const be = err as SidecarBatchError;
    expect(be.results).toHaveLength(2); // the sessions on the live sidecar were served
    expect(be.failures.size).toBe(2);
    for (const e of be.failures.values()) {
      expect(e).toBeInstanceOf(SidecarSessionLostError);
      expect(e.message).toMatch(/open it again/);
    }
    const lost = [...be.failures.keys()][0];
    // wait for the restart (no sleeps: poll the supervisor's state)
    const deadline = Date.now() + 60_000;
    while (!(pool.status()[0].state === 'up' && pool.status()[0].restarts >= 1) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(pool.status()[0]).toMatchObject({ state: 'up' });
    expect(pool.status()[0].pid).not.toBe(victim.pid);
    // a lost session can be reopened, and new sessions land on the restarted sidecar again
    await pool.close(lost);
    await pool.open(lost, [1, 2, 3], GREEDY);
    await pool.open('after', [1, 2, 3], GREEDY);
    expect(pool.status()[0].sessions).toBe(2);
    const res = await pool.verifyBatch([{ sessionId: lost, draft: [] }, { sessionId: 'after', draft: [] }]);
    expect(res.map((r) => r.token)).toEqual(greedyRef(pair.newTarget(64), [1, 2, 3], 2).slice(1).concat(greedyRef(pair.newTarget(64), [1, 2, 3], 2).slice(1)));
  });
});

describe.skipIf(!HAVE_TORCH)('sidecar pieces', () => {
  it('the Python RNG is the same xoshiro128** stream as sampling.ts', () => {
    const seeds = [0, 1, 42, 0xffffffff];
    const py = spawnSync(PY, ['-c', `import sys; sys.path.insert(0, "server/sidecar")
from duet_sidecar.rng import Rng
for s in ${JSON.stringify(seeds)}:
    r = Rng(s, 1)
    print(" ".join(repr(r.uniform()) for _ in range(6)), r.next_u32())`], { encoding: 'utf8' });
    expect(py.status, py.stderr).toBe(0);
    const want = seeds.map((s) => {
      const r = new Rng(s, STREAM_TARGET);
      return [...Array.from({ length: 6 }, () => r.uniform()), r.nextU32()].join(' ');
    });
    expect(py.stdout.trim().split('\n').map((l) => l.split(' ').map(Number).join(' '))).toEqual(want);
  });

  it('the Python acceptance rule and sampler reproduce accept.ts / sampling.ts draw for draw on identical logits', () => {
    // 120 blocks over a 61-token vocab, k = 3, with several (T, top-k, top-p); q from a perturbed row
    const vocab = 61;
    const k = 3;
    const params = [
      { temperature: 0.7, topK: 0, topP: 1, seed: 1 }, { temperature: 1.3, topK: 9, topP: 1, seed: 2 },
      { temperature: 0.9, topK: 0, topP: 0.8, seed: 3 }, { temperature: 1, topK: 20, topP: 0.95, seed: 4 },
    ];
    const cases = Array.from({ length: 120 }, (_, i) => {
      const logits = randomF32((k + 1) * vocab, 1000 + i, 4);
      const sp = params[i % params.length];
      const dists = Array.from({ length: k }, (_, j) => processedDist(randomF32(vocab, 5000 + i * 7 + j, 4), sp));
      const draft = dists.map((d, j) => d.ids[(i + j) % d.ids.length]);
      return { logits, sp, dists, draft, seed: 77 + i };
    });
    const want = cases.map((c) => {
      const rng = new Rng(c.seed, STREAM_TARGET);
      const r = acceptBlock(c.logits, vocab, c.draft, c.dists, c.sp, rng);
      const p0 = processedDist(c.logits, c.sp, 0, vocab);
      return [r.accepted, r.token, Array.from(p0.ids), Array.from(p0.probs)];
    });
    const input = JSON.stringify(cases.map((c) => ({
      logits: Array.from(c.logits), sp: c.sp, draft: c.draft, seed: c.seed,
      dists: c.dists.map((d) => [Array.from(d.ids), Array.from(d.probs)]),
    })));
    const py = spawnSync(PY, ['-c', `import sys, json; sys.path.insert(0, "server/sidecar")
import numpy as np, torch
from duet_sidecar.sampling import Rng, SamplingParams, accept_block, processed_dist
out = []
for c in json.load(sys.stdin):
    sp = SamplingParams(c["sp"]["temperature"], c["sp"]["topK"], c["sp"]["topP"], c["sp"]["seed"])
    lg = torch.tensor(c["logits"], dtype=torch.float32).reshape(-1, ${vocab})
    dists = [(np.array(i, dtype=np.int32), np.array(p, dtype=np.float32)) for i, p in c["dists"]]
    n, tok = accept_block(lg, c["draft"], dists, sp, Rng(c["seed"], 1))
    ids, probs = processed_dist(lg[0], sp)
    out.append([n, tok, ids.tolist(), [float(x) for x in probs]])
print(json.dumps(out))`], { input, encoding: 'utf8', maxBuffer: 1 << 26 });
    expect(py.status, py.stderr).toBe(0);
    const got = JSON.parse(py.stdout) as unknown[];
    let mismatches = 0;
    got.forEach((g, i) => {
      if (JSON.stringify(g) !== JSON.stringify(want[i])) mismatches++;
    });
    expect(mismatches, `first mismatch: ${JSON.stringify(got.find((g, i) => JSON.stringify(g) !== JSON.stringify(want[i])))?.slice(0, 200)}`).toBe(0);
    // the cases exercised acceptance, rejection and bonus draws
    const accepted = want.map((w) => w[0] as number);
    expect(Math.min(...accepted)).toBe(0);
    expect(Math.max(...accepted)).toBe(k);
  });

  it('a sidecar that cannot start fails createSidecarVerifier with its own error message', async () => {
    const err = await createSidecarVerifier({ cmds: [[PY, 'server/sidecar/main.py', '--model', '/nonexistent-model-dir']], log: quiet }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SidecarStartError);
    expect((err as Error).message).toMatch(/exited \(code 2\)[\s\S]*config\.json/);
  });

  it('splits --sidecar-cmd like a shell', () => {
    expect(splitCommand(`python3 'a b' "c \\"d\\"" e\\ f  g`)).toEqual(['python3', 'a b', 'c "d"', 'e f', 'g']);
    expect(() => splitCommand(`python3 'oops`)).toThrow(/unterminated/);
  });

  const trained = 'public/models/tiny-target';
  it.skipIf(!existsSync(join(trained, 'config.json')))('the trained tiny target: sidecar logits and greedy output match the CPU reference', async () => {
    const m = await loadModelDir(trained);
    const v = await createSidecarVerifier({ cmds: [sidecarCmd(trained)], log: quiet });
    try {
      const cpu = new CpuLlama(m.config, m.weights, 128);
      const tokens = randomPrompts(1, m.config.vocabSize, 4, 1)[0].concat([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]);
      expectLogitsMatch(await v.logits(tokens), cpu.forwardSync(tokens, 0), m.config.vocabSize, 'tiny-target');
      const { firstToken } = await v.open('t', tokens, GREEDY);
      const gen = await v.generate('t', 16);
      expect([firstToken, ...gen]).toEqual(greedyRef(cpu, tokens, 17));
      // the hash travels as tokenizer.json bytes and is computed by the engine's own function
      expect(v.info().tokenizerHash).toBe(await tokenizerHash(m.tokenizerJson!));
    } finally {
      await v.dispose();
    }
  });
});
