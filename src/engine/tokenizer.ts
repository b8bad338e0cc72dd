// Tokenizer: HF tokenizer.json through @huggingface/tokenizers, chat templates from
// tokenizer_config.json through @huggingface/jinja, a streaming decoder that never emits
// half a UTF-8 character, and tokenizerHash(): the identity draft and target must share
// (SHA-256 over vocab, merges and added/special tokens in canonical form, so JSON
// formatting and key order do not matter).

import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';

export class TokenizerError extends Error {
  override name = 'TokenizerError';
  constructor(readonly file: string, readonly field: string, message: string) {
    super(`${file}: ${field}: ${message}`);
  }
}

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

type Json = Record<string, unknown>;

/** A special token may be a string or {content: string} in tokenizer_config.json. */
function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return null;
}

export class Tokenizer {
  private readonly tok: HfTokenizer;
  private readonly template: Template | null;
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly bosId: number | null;
  readonly eosId: number | null;
  /** ids of every added token marked special (never shown when skipSpecialTokens) */
  readonly specialIds: ReadonlySet<number>;
  /** largest id + 1 over vocab and added tokens */
  readonly vocabSize: number;

  constructor(readonly tokenizerJson: Json, readonly tokenizerConfig: Json | null = null) {
    const model = tokenizerJson?.model as Json | undefined;
    if (!model || typeof model !== 'object' || typeof model.type !== 'string') {
      throw new TokenizerError('tokenizer.json', 'model', 'missing or has no "type"; is this a HF tokenizers file?');
    }
    try {
      this.tok = new HfTokenizer(tokenizerJson, tokenizerConfig ?? {});
    } catch (err) {
      throw new TokenizerError('tokenizer.json', `model.type=${model.type}`, `cannot build tokenizer: ${(err as Error).message}`);
    }
    const cfg = tokenizerConfig ?? {};
    this.bosToken = tokenString(cfg.bos_token);
    this.eosToken = tokenString(cfg.eos_token);
    this.bosId = this.bosToken === null ? null : (this.tok.token_to_id(this.bosToken) ?? null);
    this.eosId = this.eosToken === null ? null : (this.tok.token_to_id(this.eosToken) ?? null);
    const added = (tokenizerJson.added_tokens ?? []) as { id: number; special?: boolean }[];
    this.specialIds = new Set(added.filter((t) => t.special).map((t) => t.id));
    let maxId = -1;
    for (const id of this.tok.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this.template = this.compileTemplate(cfg.chat_template);
  }

  private compileTemplate(raw: unknown): Template | null {
    let src: unknown = raw;
    if (Array.isArray(raw)) src = (raw as { name: string; template: string }[]).find((t) => t.name === 'default')?.template;
    if (src === undefined || src === null) return null;
    if (typeof src !== 'string') throw new TokenizerError('tokenizer_config.json', 'chat_template', 'expected a string or [{name, template}]');
    try {
      return new Template(src);
    } catch (err) {
      throw new TokenizerError('tokenizer_config.json', 'chat_template', `does not parse: ${(err as Error).message}`);
    }
  }

  /** Token ids of `text`; addSpecialTokens applies the post-processor (e.g. Llama 3 prepends BOS). */
  encode(text: string, { addSpecialTokens = false }: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: ArrayLike<number>, { skipSpecialTokens = false }: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.tok.decode(Array.from(ids), { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false });
  }

  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  get hasChatTemplate(): boolean {
    return this.template !== null;
  }

  /** Render the model's chat template (adds BOS if the template does). */
  applyChatTemplate(messages: ChatMessage[], { addGenerationPrompt = true }: { addGenerationPrompt?: boolean } = {}): string {
    if (!this.template) {
      throw new TokenizerError('tokenizer_config.json', 'chat_template', 'this model has no chat template; pass a plain prompt instead');
    }
    return this.template.render({
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: this.bosToken ?? '',
      eos_token: this.eosToken ?? '',
    });
  }

  /** Ids of a chat prompt: the template's text, encoded without adding BOS a second time. */
  encodeChat(messages: ChatMessage[]): number[] {
    return this.encode(this.applyChatTemplate(messages), { addSpecialTokens: false });
  }

  streamDecoder(opts: { skipSpecialTokens?: boolean } = {}): StreamDecoder {
    return new StreamDecoder((ids) => this.decode(ids, opts));
  }
}

/**
 * Emits text as tokens arrive without splitting a UTF-8 character or a merge that changes
 * earlier text: decodes a small window [prefix, end) and emits only what extends the
 * window's already-emitted part, holding back while the tail is an incomplete character
 * (decoded as U+FFFD). The approach of text-generation-inference's decode_token.
 */
export class StreamDecoder {
  private ids: number[] = [];
  private prefix = 0;
  private read = 0;

  constructor(private readonly decodeFn: (ids: number[]) => string) {}

  /** Add one token; returns the text that is now final ('' while a character is incomplete). */
  push(id: number): string {
    this.ids.push(id);
    const prefixText = this.decodeFn(this.ids.slice(this.prefix, this.read));
    const text = this.decodeFn(this.ids.slice(this.prefix));
    if (text.length > prefixText.length && !text.endsWith('\uFFFD')) {
      const delta = text.slice(prefixText.length);
      this.prefix = this.read;
      this.read = this.ids.length;
      return delta;
    }
    return '';
  }

  /** Whatever is still held back (an incomplete character shows as U+FFFD). */
  flush(): string {
    const prefixText = this.decodeFn(this.ids.slice(this.prefix, this.read));
    const text = this.decodeFn(this.ids.slice(this.prefix));
    this.prefix = this.read = this.ids.length;
    return text.slice(prefixText.length);
  }
}

/**
 * Canonical identity of a tokenizer: model type, vocab as [token, id] sorted by id, merges
 * as [a, b] pairs in order (both the "a b" and ["a", "b"] spellings), and added tokens
 * (id, content, special) sorted by id. Formatting, key order, normalizer/decoder options
 * and padding/truncation settings do not enter.
 */
export function canonicalTokenizer(tokenizerJson: Json): unknown {
  const model = (tokenizerJson?.model ?? {}) as Json;
  const vocabRaw = model.vocab;
  let vocab: [string, number][];
  if (Array.isArray(vocabRaw)) vocab = vocabRaw.map((e, i) => [String((e as unknown[])[0]), i]); // Unigram: [piece, score][]
  else vocab = Object.entries((vocabRaw ?? {}) as Record<string, number>).sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1));
  const merges = ((model.merges ?? []) as (string | string[])[]).map((m) => (typeof m === 'string' ? splitMerge(m) : m));
  const added = ((tokenizerJson?.added_tokens ?? []) as { id: number; content: string; special?: boolean }[])
    .map((t) => [t.id, t.content, !!t.special] as const)
    .sort((a, b) => a[0] - b[0]);
  return { type: model.type ?? null, vocab, merges, added };
}

function splitMerge(m: string): string[] {
  const i = m.indexOf(' ', 1); // a merge side is never empty, so the separator is the first space after index 0
  return i < 0 ? [m] : [m.slice(0, i), m.slice(i + 1)];
}

/** Hex SHA-256 of canonicalTokenizer(json), via WebCrypto (Node 20+ and browsers). */
export async function tokenizerHash(tokenizerJson: Json): Promise<string> {
  const bytes = new TextEncoder().encode(JSON.stringify(canonicalTokenizer(tokenizerJson)));
  const digest = await globalThis.crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}
