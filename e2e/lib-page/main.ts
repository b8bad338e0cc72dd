// Test fixture (not shipped): what an app author writes. It imports the library by its package
// name only (`duet`, resolved through package.json `exports`), and offers window.__lib for
// e2e/library.spec.ts to drive: load a draft, then stream and non-stream chat completions.

import { createDuet, CreateWebWorkerDuetEngine, DuetError, type ChatCompletion, type ChatCompletionRequest, type DuetEngine, type LoadProgress } from 'duet';

export interface StreamResult {
  text: string;
  /** Text of each chunk, in order. */
  deltas: string[];
  finish: string | null;
  usage: ChatCompletion['usage'] | null;
  /** Token ids of the reply (from the `duet` field), and where each came from. */
  tokens: number[];
  provenance: string[];
  targetPasses: number;
  chunkObjects: string[];
  /** Chunks seen before the first one with content (role first, OpenAI-style). */
  roleFirst: boolean;
}

export interface LibFixture {
  load(draft: string, device: 'auto' | 'cpu'): Promise<{ name: string; backend: string; phases: string[] }>;
  stream(req: ChatCompletionRequest, abortAfterChunks?: number): Promise<StreamResult>;
  complete(req: ChatCompletionRequest): Promise<ChatCompletion>;
  /** The code of the DuetError a request fails with, or 'none'. */
  errorCode(req: ChatCompletionRequest): Promise<string>;
}

declare global {
  interface Window {
    __lib?: LibFixture;
  }
}

const params = new URLSearchParams(location.search);
const gateway = { url: params.get('gateway') ?? '', token: params.get('token') ?? undefined };
/** ?own-worker: the app makes the Worker (worker.ts) and loads through CreateWebWorkerDuetEngine. */
const ownWorker = params.has('own-worker');
let engine: DuetEngine | null = null;

async function duet(): Promise<DuetEngine> {
  engine ??= await createDuet({ gateway });
  return engine;
}

window.__lib = {
  async load(draft, device) {
    const phases = new Set<string>();
    const onProgress = (p: LoadProgress): void => void phases.add(p.phase);
    if (ownWorker && !engine) {
      engine = await CreateWebWorkerDuetEngine(new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' }), draft, { gateway, device, onProgress });
    } else await (await duet()).load(draft, { device, onProgress });
    const info = engine!.draft!;
    return { name: info.name, backend: info.backend, phases: [...phases] };
  },

  async stream(req, abortAfterChunks) {
    const abort = new AbortController();
    const chunks = await (await duet()).chat.completions.create({ ...req, stream: true }, { signal: abort.signal });
    const r: StreamResult = { text: '', deltas: [], finish: null, usage: null, tokens: [], provenance: [], targetPasses: 0, chunkObjects: [], roleFirst: false };
    let n = 0;
    for await (const c of chunks) {
      const choice = c.choices[0];
      if (n === 0) r.roleFirst = choice.delta.role === 'assistant';
      r.chunkObjects.push(c.object);
      const d = choice.delta.content ?? '';
      if (d) r.deltas.push(d);
      r.text += d;
      for (const t of c.duet.tokens) if (t.id >= 0) {
        r.tokens.push(t.id);
        r.provenance.push(t.prov);
      }
      r.targetPasses = c.duet.stats.targetPasses;
      if (choice.finish_reason) r.finish = choice.finish_reason;
      if (c.usage) r.usage = c.usage;
      if (++n === abortAfterChunks) abort.abort();
    }
    return r;
  },

  async complete(req) {
    return (await duet()).chat.completions.create({ ...req, stream: false });
  },

  async errorCode(req) {
    try {
      await (await duet()).chat.completions.create({ ...req, stream: false });
      return 'none';
    } catch (err) {
      return err instanceof DuetError ? err.code : `not a DuetError: ${String(err)}`;
    }
  },
};
document.getElementById('out')!.textContent = 'ready';
