"""Byte-level BPE (GPT-2 style) trained from scratch, with an encoder that matches the HF
`tokenizers` BPE model, and writers for `tokenizer.json` / `tokenizer_config.json`.

Pre-tokenization is GPT-2's regex. Python's `re` lacks \\p{L}/\\p{N}, so letters are
[^\\W\\d_] and numbers \\d: identical to the Unicode classes on ASCII text (the whole KJV corpus
is ASCII); on other scripts the split can differ slightly from @huggingface/tokenizers."""
import collections
import json
import re

PAT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable unicode char map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_ENC = bytes_to_unicode()
BYTE_DEC = {c: b for b, c in BYTE_ENC.items()}


def pretokenize(text):
    return ["".join(BYTE_ENC[b] for b in piece.encode("utf-8")) for piece in PAT.findall(text)]


def train(texts, vocab_size):
    """Learn merges until len(bytes) + len(merges) + len(SPECIALS) == vocab_size.
    Incremental pair counts; ties broken by the pair itself so the result is deterministic."""
    counts = collections.Counter()
    for t in texts:
        counts.update(pretokenize(t))
    words = [list(w) for w in counts]
    freqs = [counts[w] for w in counts]
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pairs[a, b] += freqs[i]
            where[a, b].add(i)
    n_merges = vocab_size - 256 - len(SPECIALS)
    merges = []
    while len(merges) < n_merges and pairs:
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if pairs[best] <= 0:
            break
        merges.append(best)
        merged = best[0] + best[1]
        for i in list(where[best]):
            w, f = words[i], freqs[i]
            for a, b in zip(w, w[1:]):
                pairs[a, b] -= f
            j, nw = 0, []
            while j < len(w):
                if j + 1 < len(w) and w[j] == best[0] and w[j + 1] == best[1]:
                    nw.append(merged)
                    j += 2
                else:
                    nw.append(w[j])
                    j += 1
            words[i] = nw
            for a, b in zip(nw, nw[1:]):
                pairs[a, b] += f
                where[a, b].add(i)
        del pairs[best]
        del where[best]
        for k in [k for k, v in pairs.items() if v <= 0]:
            del pairs[k]
    return merges


class Tokenizer:
    def __init__(self, merges):
        self.merges = [tuple(m) for m in merges]
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.vocab = {BYTE_ENC[b]: b for b in range(256)}
        for a, b in self.merges:
            self.vocab.setdefault(a + b, len(self.vocab))
        for s in SPECIALS:
            self.vocab[s] = len(self.vocab)
        self.inv = {i: t for t, i in self.vocab.items()}
        self.bos, self.eos = self.vocab["<|begin_of_text|>"], self.vocab["<|end_of_text|>"]
        self.special_re = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")
        self.cache = {}

    def __len__(self):
        return len(self.vocab)

    def _bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            ranked = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            r, i = min(ranked)
            if r == 1 << 30:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        ids = [self.vocab[p] for p in parts]
        self.cache[word] = ids
        return ids

    def encode(self, text, bos=False):
        """Ids of `text`; special-token strings in the text become their ids (as in HF)."""
        ids = [self.bos] if bos else []
        for chunk in self.special_re.split(text):
            if chunk in SPECIALS:
                ids.append(self.vocab[chunk])
            elif chunk:
                for w in pretokenize(chunk):
                    ids.extend(self._bpe(w))
        return ids

    def decode(self, ids, skip_special=True):
        out, buf = [], bytearray()
        for i in ids:
            t = self.inv[i]
            if t in SPECIALS:
                if not skip_special:
                    out.append(buf.decode("utf-8", "replace") + t)
                    buf = bytearray()
                continue
            buf.extend(BYTE_DEC[c] for c in t)
        out.append(buf.decode("utf-8", "replace"))
        return "".join(out)

    def save(self, directory, model_max_length):
        specials = [{"id": self.vocab[s], "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                     "normalized": False, "special": True} for s in SPECIALS]
        base = {t: i for t, i in self.vocab.items() if t not in SPECIALS}
        bos = "<|begin_of_text|>"
        tok = {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": specials,
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [self.bos], "tokens": [bos]}},
            },
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": base, "merges": [[a, b] for a, b in self.merges]},
        }
        with open(f"{directory}/tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(tok, f, ensure_ascii=False, indent=1)
        cfg = {
            "added_tokens_decoder": {str(s["id"]): {k: v for k, v in s.items() if k != "id"} for s in specials},
            "bos_token": bos,
            "eos_token": "<|eot_id|>",
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": model_max_length,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        with open(f"{directory}/tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=1)

    @staticmethod
    def load(directory):
        with open(f"{directory}/tokenizer.json", encoding="utf-8") as f:
            tok = json.load(f)
        return Tokenizer([tuple(m) for m in tok["model"]["merges"]])
