// /metrics read by an independent Prometheus text-format parser (npm parse-prometheus-text-format,
// a port of the Python client's parser) while WebSocket sessions run: the vLLM-compatible
// spec-decode counters move by exactly what the speculative clients report (rounds, drafted and
// accepted tokens), the batch-size histogram by the batcher's own count, the baseline histogram
// by one per streamed token, and the gauges follow open sessions and connections.
import parse, { type PromFamily } from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomPrompts } from '../src/engine/spec-fixtures.ts';
import { speculate } from '../src/engine/speculative.ts';
import { GREEDY } from '../src/engine/sampling.ts';
import { remote, startTestGateway, until, type TestGateway } from './testing.ts';

let t: TestGateway;
beforeAll(async () => {
  t = await startTestGateway({ pairOptions: { seed: 5, noise: 0.3, config: { hiddenSize: 64, intermediateSize: 131, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 389 } } });
});
afterAll(async () => t?.close());

async function scrape(): Promise<Map<string, PromFamily>> {
  const r = await fetch(`${t.gateway.url}/metrics`);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return new Map(parse(await r.text()).map((f) => [f.name, f]));
}

/** The value of a counter or gauge sample (matching labels), 0 when absent. */
function value(m: Map<string, PromFamily>, name: string, labels: Record<string, string> = {}): number {
  const f = m.get(name);
  const s = f?.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  return s?.value === undefined ? 0 : Number(s.value);
}

const histCount = (m: Map<string, PromFamily>, name: string): number => Number(m.get(name)?.metrics[0]?.count ?? 0);

describe('/metrics while sessions run', () => {
  it('names the families with their types, vLLM spec-decode counters included', async () => {
    const m = await scrape();
    for (const n of ['vllm:spec_decode_num_drafts_total', 'vllm:spec_decode_num_draft_tokens_total', 'vllm:spec_decode_num_accepted_tokens_total', 'duet_sessions_opened_total', 'duet_generated_tokens_total']) expect(m.get(n)?.type, n).toBe('COUNTER');
    for (const n of ['duet_sessions', 'duet_connections', 'duet_queue_depth']) expect(m.get(n)?.type, n).toBe('GAUGE');
    for (const n of ['duet_batch_size', 'duet_verify_batch_seconds', 'duet_verify_request_seconds', 'duet_baseline_step_seconds', 'duet_prefill_seconds']) expect(m.get(n)?.type, n).toBe('HISTOGRAM');
    expect(m.get('process_cpu_seconds_total')?.type).toBe('COUNTER'); // prom-client's default process metrics
  });

  it('counters move by what the speculative and baseline sessions did', async () => {
    const before = await scrape();
    const batches0 = t.gateway.stats().batches;
    const prompts = randomPrompts(3, t.pair.config.vocabSize, 5, 8);
    const results = await Promise.all(prompts.map(async (p, i) => {
      const link = remote(t.gateway);
      try {
        return await speculate(t.pair.newDraft(), link, p, { params: GREEDY, maxTokens: 14, k: 2 + i });
      } finally {
        await link.close();
      }
    }));
    const base = remote(t.gateway, { mode: 'baseline' });
    await base.open(prompts[0], GREEDY);
    await base.generate(5);
    const during = await scrape();
    expect(value(during, 'duet_sessions')).toBeGreaterThanOrEqual(1); // the baseline session is still open
    expect(value(during, 'duet_connections')).toBeGreaterThanOrEqual(1);
    await base.close();
    await until(() => t.gateway.stats().sessions === 0, 5_000, 'sessions freed');
    const after = await scrape();

    const d = (name: string, labels?: Record<string, string>) => value(after, name, labels) - value(before, name, labels);
    const sum = (f: (r: (typeof results)[number]) => number) => results.reduce((a, r) => a + f(r), 0);
    expect(d('vllm:spec_decode_num_drafts_total')).toBe(sum((r) => r.stats.rounds));
    expect(d('vllm:spec_decode_num_draft_tokens_total')).toBe(sum((r) => r.stats.draftedTokens));
    expect(d('vllm:spec_decode_num_accepted_tokens_total')).toBe(sum((r) => r.stats.acceptedTokens));
    expect(sum((r) => r.stats.acceptedTokens)).toBeGreaterThan(0);
    expect(d('duet_sessions_opened_total', { api: 'ws' })).toBe(4);
    expect(d('duet_generated_tokens_total', { mode: 'baseline' })).toBe(5);
    expect(histCount(after, 'duet_baseline_step_seconds') - histCount(before, 'duet_baseline_step_seconds')).toBe(5);
    expect(histCount(after, 'duet_batch_size') - histCount(before, 'duet_batch_size')).toBe(t.gateway.stats().batches - batches0);
    expect(histCount(after, 'duet_verify_request_seconds') - histCount(before, 'duet_verify_request_seconds')).toBe(sum((r) => r.stats.rounds));
    expect(value(after, 'duet_sessions')).toBe(0);
  });
});
