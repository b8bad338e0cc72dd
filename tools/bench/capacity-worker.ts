// Worker-thread side of the capacity benchmark: the gateway and its cpu verifier run here, on
// their own thread, so the 64 in-process drafts (main thread) do not starve the verifier's
// event loop — as in a deployment, where drafts run in browsers, not in the gateway.

import { parentPort, workerData } from 'node:worker_threads';
import type { LlamaConfig } from '../../src/engine/config.ts';
import type { LlamaWeights } from '../../src/engine/weights.ts';
import { startGateway } from '../../server/gateway.ts';
import { NO_RATE_LIMITS } from '../../server/limits.ts';
import { createCpuVerifier } from '../../server/verifiers/cpu.ts';

interface Init {
  config: LlamaConfig;
  weights: LlamaWeights;
  name: string;
  tokenizerHash: string;
  maxContext: number;
  maxBatch: number;
  maxSessions: number;
  batchWindowMs: number;
}

const w = workerData as Init;
const verifier = createCpuVerifier({ config: w.config, weights: w.weights, model: w.name, tokenizerHash: w.tokenizerHash, maxContext: w.maxContext, maxBatch: w.maxBatch });
const gateway = await startGateway({ verifier, maxSessions: w.maxSessions, maxSessionsPerConnection: w.maxSessions, maxBatch: w.maxBatch, batchWindowMs: w.batchWindowMs, ...NO_RATE_LIMITS, ownsVerifier: true });
parentPort!.on('message', (m: { type: 'stats' | 'close' }) => {
  if (m.type === 'stats') parentPort!.postMessage({ type: 'stats', stats: gateway.stats() });
  else void gateway.close().then(() => parentPort!.postMessage({ type: 'closed' }));
});
parentPort!.postMessage({ type: 'ready', wsUrl: gateway.wsUrl, backend: verifier.info().backend });
