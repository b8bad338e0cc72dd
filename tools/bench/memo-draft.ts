// A draft model for load generators: many headless sessions on one machine cannot each run a
// draft (in a deployment every browser runs its own), so sessions share one memo of the real
// draft's logits, keyed by the whole token sequence they condition on. A hit returns the row
// the real draft computed for that same sequence; a miss runs the real draft (kept in step with
// the session's sequence) and stores what it returns. Outputs are therefore the real draft's,
// for any sampling; only the compute is shared. Misses are counted, so a report can say how much
// of a run was served from the memo.

import type { LlamaConfig } from '../../src/engine/config.ts';
import type { CausalLM } from '../../src/engine/model.ts';

/** The shared part: the rows, the model that fills them, and the counts. */
export class DraftMemo {
  readonly rows = new Map<string, Float32Array>();
  hits = 0;
  misses = 0;
  /** Bytes held by the rows. */
  bytes = 0;
  constructor(readonly config: LlamaConfig, readonly maxContext: number, readonly makeModel: () => CausalLM, readonly maxBytes = 1 << 30) {}

  /** A per-session view (its own sequence and, lazily, its own real draft for misses). */
  session(): MemoDraft {
    return new MemoDraft(this);
  }

  put(key: string, row: Float32Array): void {
    if (this.rows.has(key) || this.bytes + row.byteLength > this.maxBytes) return;
    this.rows.set(key, row);
    this.bytes += row.byteLength;
  }

  resetCounts(): void {
    this.hits = 0;
    this.misses = 0;
  }
}

export class MemoDraft implements CausalLM {
  private seq: number[] = [];
  private inner: CausalLM | null = null;
  /** Tokens the inner model's cache holds (a prefix of what it was last fed). */
  private innerSeq: number[] = [];

  constructor(readonly memo: DraftMemo) {}

  private model(): CausalLM {
    return (this.inner ??= this.memo.makeModel());
  }

  get config(): LlamaConfig {
    return this.memo.config;
  }

  get maxContext(): number {
    return this.memo.maxContext;
  }

  get length(): number {
    return this.seq.length;
  }

  async forward(tokens: ArrayLike<number>, startPos: number): Promise<Float32Array> {
    if (startPos > this.seq.length) throw new RangeError(`forward at ${startPos} past the cached length ${this.seq.length}`);
    this.seq.length = startPos;
    for (let i = 0; i < tokens.length; i++) this.seq.push(tokens[i]);
    const n = tokens.length;
    const end = this.seq.length;
    const keys = prefixKeys(this.seq, startPos, end);
    const hit = keys.map((k) => this.memo.rows.get(k));
    if (hit.every((r) => r !== undefined)) {
      this.memo.hits += n;
      return concat(hit as Float32Array[]);
    }
    this.memo.misses += n;
    // bring the real draft in step: keep the longest prefix its cache shares with seq
    const m = this.model();
    let c = 0;
    while (c < this.innerSeq.length && c < startPos && this.innerSeq[c] === this.seq[c]) c++;
    m.rollback(Math.min(c, m.length));
    c = Math.min(c, m.length);
    const logits = await m.forward(this.seq.slice(c, end), c);
    this.innerSeq = this.seq.slice(0, end);
    const vocab = logits.length / (end - c);
    // store the rows of every position it ran (c..end-1), not only the asked ones
    prefixKeys(this.seq, c, end).forEach((k, i) => this.memo.put(k, logits.slice(i * vocab, (i + 1) * vocab)));
    return logits.slice((startPos - c) * vocab);
  }

  async forwardLast(tokens: ArrayLike<number>, startPos: number): Promise<Float32Array> {
    const all = await this.forward(tokens, startPos);
    const vocab = all.length / tokens.length;
    return all.slice(all.length - vocab);
  }

  rollback(length: number): void {
    if (length < this.seq.length) this.seq.length = length;
  }

  dispose(): void {
    this.inner?.dispose();
    this.inner = null;
    this.innerSeq = [];
  }
}

/** The memo keys of positions from..to-1: the sequence up to and including each position. */
function prefixKeys(seq: number[], from: number, to: number): string[] {
  const keys: string[] = [];
  let key = seq.slice(0, from).join(',');
  for (let p = from; p < to; p++) {
    key = p === 0 ? String(seq[0]) : `${key},${seq[p]}`;
    keys.push(key);
  }
  return keys;
}

function concat(rows: Float32Array[]): Float32Array {
  if (rows.length === 1) return rows[0].slice();
  const out = new Float32Array(rows.reduce((s, r) => s + r.length, 0));
  let o = 0;
  for (const r of rows) {
    out.set(r, o);
    o += r.length;
  }
  return out;
}
