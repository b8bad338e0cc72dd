// Rebuild a HF tokenizer.json from a GGUF file's tokenizer.ggml.* metadata, so a lone .gguf
// file is usable (and hashes like its HF original: same vocab, merges and special tokens).
// Supported: byte-level BPE ("gpt2") with Llama 3's pre-tokenizer ("llama-bpe"/"llama3") or
// GPT-2's default. Token types follow llama.cpp: 3 = control (special), 4 = user-defined.

type Meta = Record<string, unknown>;

const LLAMA3_SPLIT = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const LLAMA3_PRE = new Set(['llama-bpe', 'llama3', 'llama-v3']);
const CONTROL = 3;
const USER_DEFINED = 4;

export interface GgufTokenizer {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
}

/** null (with the reason) when the file has no tokenizer or one we cannot rebuild. */
export function ggufTokenizer(meta: Meta): GgufTokenizer | { unsupported: string } {
  const model = meta['tokenizer.ggml.model'];
  const tokens = meta['tokenizer.ggml.tokens'];
  if (model === undefined || !Array.isArray(tokens)) return { unsupported: 'the GGUF file carries no tokenizer (tokenizer.ggml.tokens)' };
  if (model !== 'gpt2') return { unsupported: `tokenizer.ggml.model "${String(model)}" is not rebuilt (only byte-level BPE "gpt2"); put the model's tokenizer.json beside the .gguf file` };
  const pre = String(meta['tokenizer.ggml.pre'] ?? 'default');
  if (!LLAMA3_PRE.has(pre) && pre !== 'default' && pre !== 'gpt-2') {
    return { unsupported: `tokenizer.ggml.pre "${pre}" is not rebuilt (supported: llama-bpe, gpt-2); put the model's tokenizer.json beside the .gguf file` };
  }
  const types = (meta['tokenizer.ggml.token_type'] as number[] | undefined) ?? [];
  const merges = (meta['tokenizer.ggml.merges'] as string[] | undefined) ?? [];
  const vocab: Record<string, number> = {};
  const added: Record<string, unknown>[] = [];
  tokens.forEach((t, id) => {
    const type = types[id] ?? 1;
    if (type === CONTROL || type === USER_DEFINED) {
      added.push({ id, content: String(t), single_word: false, lstrip: false, rstrip: false, normalized: type === USER_DEFINED, special: type === CONTROL });
    } else {
      vocab[String(t)] = id;
    }
  });
  const idOf = (key: string): number | null => (typeof meta[key] === 'number' ? (meta[key] as number) : typeof meta[key] === 'bigint' ? Number(meta[key]) : null);
  const bosId = idOf('tokenizer.ggml.bos_token_id');
  const eosId = idOf('tokenizer.ggml.eos_token_id');
  const bos = bosId === null ? null : String(tokens[bosId]);
  const addBos = meta['tokenizer.ggml.add_bos_token'] !== false && bos !== null;
  const byteLevel = (useRegex: boolean) => ({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: useRegex });
  const tokenizerJson = {
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: LLAMA3_PRE.has(pre)
      ? { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: LLAMA3_SPLIT }, behavior: 'Isolated', invert: false }, byteLevel(false)] }
      : byteLevel(true),
    post_processor: addBos
      ? {
        type: 'TemplateProcessing',
        single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
        pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
        special_tokens: { [bos!]: { id: bos, ids: [bosId], tokens: [bos] } },
      }
      : null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: LLAMA3_PRE.has(pre), vocab, merges,
    },
  };
  const tokenizerConfig: Record<string, unknown> = {
    bos_token: bos, eos_token: eosId === null ? null : String(tokens[eosId]), clean_up_tokenization_spaces: false,
  };
  if (typeof meta['tokenizer.chat_template'] === 'string') tokenizerConfig.chat_template = meta['tokenizer.chat_template'];
  return { tokenizerJson, tokenizerConfig };
}
