// The gateway's Prometheus metrics (prom-client, one Registry per gateway so tests can run
// several in one process). Gauges that mirror gateway state (sessions, connections, queue
// depth, errors) are read at scrape time through a snapshot callback, so the gateway keeps a
// single source of truth; histograms and counters are fed at the moment things happen.
// The three speculative counters carry vLLM's names (vllm:spec_decode_num_*_total) with
// vLLM's meaning, so dashboards written for vLLM read duet unchanged; everything else is duet_*.

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface MetricsSnapshot {
  sessions: number;
  connections: number;
  queued: number;
  /** WebSocket protocol errors answered so far, by code (monotonic). */
  errors: Partial<Record<string, number>>;
}

/** Seconds; the CPU tiny target takes ~1-20 ms a pass, a 3B target on a CPU up to seconds. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128];

/**
 * Where a failure nobody awaits can happen: freeing the target KV of a WebSocket session whose
 * client left or closed it while a request was in flight (ws_session_close), or of an
 * OpenAI-API request's session (http_session_close).
 */
const BACKGROUND_WHERE = ['ws_session_close', 'http_session_close'] as const;
export type BackgroundWhere = (typeof BACKGROUND_WHERE)[number];

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly drafts: Counter;
  private readonly draftTokens: Counter;
  private readonly acceptedTokens: Counter;
  private readonly batchSize: Histogram;
  private readonly verifyBatchSeconds: Histogram;
  private readonly verifyRequestSeconds: Histogram;
  private readonly baselineSeconds: Histogram;
  private readonly prefillSeconds: Histogram;
  private readonly opened: Counter;
  private readonly promptTokens: Counter;
  private readonly generatedTokens: Counter;
  private readonly apiRequests: Counter;
  private readonly backgroundErrors: Counter;

  constructor(read: () => MetricsSnapshot) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    new Gauge({ name: 'duet_sessions', help: 'Open sessions (WebSocket and HTTP API), each holding a target KV cache', registers, collect() { this.set(read().sessions); } });
    new Gauge({ name: 'duet_connections', help: 'Open WebSocket connections', registers, collect() { this.set(read().connections); } });
    new Gauge({ name: 'duet_queue_depth', help: 'Verify requests and jobs (prefills, baseline steps) waiting in the batcher', registers, collect() { this.set(read().queued); } });
    // st.errors only grows, so republishing it whole keeps the counter monotonic
    new Counter({
      name: 'duet_protocol_errors_total', help: 'Typed errors answered on the WebSocket protocol, by code', labelNames: ['code'], registers,
      collect() {
        this.reset();
        for (const [code, n] of Object.entries(read().errors)) if (n) this.inc({ code }, n);
      },
    });
    this.drafts = new Counter({ name: 'vllm:spec_decode_num_drafts_total', help: 'Speculative rounds verified (vLLM-compatible name): one per verify request', registers });
    this.draftTokens = new Counter({ name: 'vllm:spec_decode_num_draft_tokens_total', help: 'Draft tokens proposed for verification (vLLM-compatible name)', registers });
    this.acceptedTokens = new Counter({ name: 'vllm:spec_decode_num_accepted_tokens_total', help: 'Draft tokens the target accepted (vLLM-compatible name)', registers });
    this.batchSize = new Histogram({ name: 'duet_batch_size', help: 'Verify requests per verifyBatch call', buckets: BATCH_BUCKETS, registers });
    this.verifyBatchSeconds = new Histogram({ name: 'duet_verify_batch_seconds', help: 'Wall time of one verifyBatch call (one target pass over the batch)', buckets: LATENCY_BUCKETS, registers });
    this.verifyRequestSeconds = new Histogram({ name: 'duet_verify_request_seconds', help: 'A verify request from arrival to verdict (queue wait + its batch)', buckets: LATENCY_BUCKETS, registers });
    this.baselineSeconds = new Histogram({ name: 'duet_baseline_step_seconds', help: 'One baseline token (target alone) from asking to having it: queue wait + target pass', buckets: LATENCY_BUCKETS, registers });
    this.prefillSeconds = new Histogram({ name: 'duet_prefill_seconds', help: 'Session open (prefill of the prompt) from asking to first token', buckets: LATENCY_BUCKETS, registers });
    this.opened = new Counter({ name: 'duet_sessions_opened_total', help: 'Sessions opened, by API (ws: the speculative protocol; http: the OpenAI-shaped API)', labelNames: ['api'], registers });
    this.promptTokens = new Counter({ name: 'duet_prompt_tokens_total', help: 'Prompt tokens prefilled', registers });
    this.generatedTokens = new Counter({ name: 'duet_generated_tokens_total', help: 'Tokens the target emitted after each session\'s first (prefill) token, by mode (speculative: accepted drafts + target token; baseline: target alone)', labelNames: ['mode'], registers });
    this.apiRequests = new Counter({ name: 'duet_http_api_requests_total', help: 'OpenAI-shaped API requests answered, by endpoint and HTTP status', labelNames: ['endpoint', 'status'], registers });
    this.backgroundErrors = new Counter({ name: 'duet_background_errors_total', help: 'Failures of work nobody awaits (freeing a session\'s target KV after its client left), by where; each is also logged', labelNames: ['where'], registers });
    // every where present from the start, at 0: an alert on the rate sees the series before the first failure
    for (const where of BACKGROUND_WHERE) this.backgroundErrors.inc({ where }, 0);
  }

  batch(size: number, ms: number): void {
    this.batchSize.observe(size);
    this.verifyBatchSeconds.observe(ms / 1000);
  }

  /** One verify answered: k draft tokens proposed, `accepted` of them stood. */
  verified(k: number, accepted: number, requestMs: number): void {
    this.drafts.inc();
    this.draftTokens.inc(k);
    this.acceptedTokens.inc(accepted);
    this.generatedTokens.inc({ mode: 'speculative' }, accepted + 1);
    this.verifyRequestSeconds.observe(requestMs / 1000);
  }

  baselineStep(ms: number): void {
    this.baselineSeconds.observe(ms / 1000);
    this.generatedTokens.inc({ mode: 'baseline' });
  }

  sessionOpened(api: 'ws' | 'http', promptTokens: number, ms: number): void {
    this.opened.inc({ api });
    this.promptTokens.inc(promptTokens);
    this.prefillSeconds.observe(ms / 1000);
  }

  apiRequest(endpoint: string, status: number): void {
    this.apiRequests.inc({ endpoint, status: String(status) });
  }

  /**
   * The one way a failure nobody awaits is handled: logged with what failed and counted in
   * duet_background_errors_total{where}, never swallowed. The promise returned never rejects.
   */
  background(where: BackgroundWhere, what: string, work: Promise<unknown>, log: (line: string) => void): Promise<void> {
    return work.then(
      () => undefined,
      (e: unknown) => {
        this.backgroundErrors.inc({ where });
        log(`${what}: ${e instanceof Error ? e.message : String(e)}`);
      },
    );
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
