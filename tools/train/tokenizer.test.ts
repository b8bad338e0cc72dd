// The bundled tiny pair's tokenizer (trained by tools/train/bpe.py) loaded by the maintained
// JS library: ids must equal the Python encoder's (fixture written by `train.py data`), text
// must round-trip, BOS comes from the post-processor, and draft + target share one tokenizer.
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';

const models = join(import.meta.dirname, '../../public/models');
const readJson = (p: string): Record<string, unknown> => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;

function load(dir: string): { tok: Tokenizer; json: Record<string, unknown>; cfg: Record<string, unknown> } {
  const json = readJson(join(models, dir, 'tokenizer.json'));
  const cfg = readJson(join(models, dir, 'tokenizer_config.json'));
  return { tok: new Tokenizer(json, cfg), json, cfg };
}

const fixture = readJson(join(import.meta.dirname, 'fixtures/tokenizer-ids.json')) as unknown as {
  samples: { text: string; ids: number[] }[];
};
const prompts = (readJson(join(models, 'heldout-prompts.json')) as unknown as { prompts: { text: string }[] }).prompts;

describe('tiny pair tokenizer', () => {
  const { tok, json, cfg } = load('tiny-target');
  const vocab = (json.model as { vocab: Record<string, number> }).vocab;
  const added = json.added_tokens as { id: number; content: string }[];
  const id = (s: string): number => added.find((t) => t.content === s)!.id;

  it('has a 4096-token byte-level BPE vocabulary with the special tokens at the end', () => {
    expect((json.model as { type: string }).type).toBe('BPE');
    expect(Object.keys(vocab).length + added.length).toBe(4096);
    expect(added.map((t) => t.id)).toEqual([4091, 4092, 4093, 4094, 4095]);
    expect(tok.decode([id('<|begin_of_text|>')], { skip_special_tokens: false })).toBe('<|begin_of_text|>');
  });

  it('encodes exactly as the Python trainer does', () => {
    expect(fixture.samples.length).toBeGreaterThan(8);
    for (const s of fixture.samples) {
      const ids = tok.encode(s.text, { add_special_tokens: false }).ids;
      expect(ids, JSON.stringify(s.text.slice(0, 60))).toEqual(s.ids);
    }
  });

  it('prepends <|begin_of_text|> by default and round-trips held-out text', () => {
    expect(prompts.length).toBeGreaterThan(10);
    for (const p of prompts) {
      const ids = tok.encode(p.text).ids;
      expect(ids[0]).toBe(id('<|begin_of_text|>'));
      expect(ids.length).toBeLessThan(p.text.length / 2); // BPE actually merges
      expect(tok.decode(ids, { skip_special_tokens: true })).toBe(p.text);
    }
    const odd = 'Odd  input:\n\n\tnumbers 1234567, unicode café ✓ 😀 and <|eot_id|> inline';
    expect(tok.decode(tok.encode(odd, { add_special_tokens: false }).ids)).toBe(odd);
  });

  it('renders the chat template into the special-token layout the model was trained on', () => {
    const text = new Template(cfg.chat_template as string).render({
      messages: [{ role: 'user', content: 'Psalms 23' }],
      bos_token: cfg.bos_token as string,
      add_generation_prompt: true,
    });
    expect(text).toBe('<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nPsalms 23<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n');
    const ids = tok.encode(text, { add_special_tokens: false }).ids;
    expect(ids[0]).toBe(id('<|begin_of_text|>'));
    expect(ids.filter((i) => i === id('<|eot_id|>')).length).toBe(1);
  });

  it('is the same tokenizer in the draft and the target', () => {
    if (!existsSync(join(models, 'tiny-draft'))) throw new Error('public/models/tiny-draft missing: run tools/train/train.py');
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
      expect(readFileSync(join(models, 'tiny-draft', f), 'utf8')).toBe(readFileSync(join(models, 'tiny-target', f), 'utf8'));
    }
  });
});
