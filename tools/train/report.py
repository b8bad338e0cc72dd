"""Measurements of the exported tiny pair, read back from the HF directories (so they describe
exactly the shipped bf16 / f16 weights): held-out perplexity, teacher-forced top-1 agreement,
greedy speculative acceptance at k=4 on the held-out prompts (checked token-for-token against
target-only greedy decoding), and text samples. Writes <out>/report.json."""
import json
import math
import os

import torch
import torch.nn.functional as F

import bpe
import export
from model import Config, Llama

K = 4
NEW_TOKENS = 64


def load_dir(d):
    with open(os.path.join(d, "config.json")) as f:
        hf = json.load(f)
    fields = Config.__dataclass_fields__
    m = Llama(Config(**{k: v for k, v in hf.items() if k in fields}))
    sd = export.load_safetensors(os.path.join(d, "model.safetensors"))
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected and not [k for k in missing if k != "inv_freq"], (missing, unexpected)
    return m.eval(), hf


@torch.no_grad()
def perplexity(m, docs, ctx):
    nll, n = 0.0, 0
    for doc in docs:
        for s in range(0, len(doc) - 1, ctx):
            chunk = torch.tensor([doc[s:s + ctx + 1]])
            logits = m(chunk[:, :-1])
            nll += F.cross_entropy(logits[0], chunk[0, 1:], reduction="sum").item()
            n += chunk.shape[1] - 1
    return math.exp(nll / n), n


@torch.no_grad()
def agreement(draft, target, docs, ctx):
    same = n = 0
    for doc in docs:
        x = torch.tensor([doc[:ctx]])
        same += (draft(x).argmax(-1) == target(x).argmax(-1)).sum().item()
        n += x.shape[1]
    return same / n


def _next(m, cache, ids, start):
    return m(torch.tensor([ids]), cache, start)[0].argmax(-1).tolist()


@torch.no_grad()
def greedy(m, ids, n, eos):
    """Target-only greedy decoding with a KV cache."""
    ids, cache = list(ids), m.new_cache()
    t = _next(m, cache, ids, 0)[-1]
    for _ in range(n):
        ids.append(t)
        if t in eos or len(ids) - 1 >= m.c.max_position_embeddings:
            break
        t = _next(m, cache, [t], len(ids) - 1)[-1]
    return ids


@torch.no_grad()
def sample(m, ids, n, eos, temperature):
    ids, cache = list(ids), m.new_cache()
    logits = m(torch.tensor([ids]), cache, 0)[0, -1]
    for _ in range(n):
        t = torch.multinomial(torch.softmax(logits / temperature, -1), 1).item()
        ids.append(t)
        if t in eos or len(ids) >= m.c.max_position_embeddings:
            break
        logits = m(torch.tensor([[t]]), cache, len(ids) - 1)[0, -1]
    return ids


@torch.no_grad()
def speculate(draft, target, ids, n, eos):
    """Greedy speculative decoding with k=K, both models with KV caches (cut back to the
    accepted length on the next call). Returns (ids, rounds, accepted draft tokens)."""
    ids, start = list(ids), len(ids)
    dc, tc = draft.new_cache(), target.new_cache()
    _next(target, tc, ids[:-1], 0)  # prefill all but the last token; each verify block starts there
    dlen = 0  # positions of the draft cache that hold accepted tokens
    rounds = accepted = 0
    while len(ids) - start < n and ids[-1] not in eos and len(ids) + K < target.c.max_position_embeddings:
        base = len(ids) - 1
        prop = [_next(draft, dc, ids[dlen:], dlen)[-1]]
        for j in range(1, K):
            prop.append(_next(draft, dc, [prop[-1]], base + j)[-1])
        tgt = _next(target, tc, [ids[-1]] + prop, base)  # K+1 target argmaxes
        a = 0
        while a < K and prop[a] == tgt[a] and prop[a] not in eos:
            a += 1
        dlen = base + 1 + min(a, K - 1)  # the draft never ran its own last proposal
        ids += prop[:a] + [tgt[a]]
        rounds += 1
        accepted += a
    return ids, rounds, accepted


def run(a):
    target, hf = load_dir(os.path.join(a.out, "tiny-target"))
    draft, _ = load_dir(os.path.join(a.out, "tiny-draft"))
    tok = bpe.Tokenizer.load(os.path.join(a.out, "tiny-target"))
    eos = set(hf["eos_token_id"])
    docs = torch.load(os.path.join(a.work, "heldout.pt"))
    ctx = hf["max_position_embeddings"]
    res = {}
    for name, m in (("target", target), ("draft", draft)):
        ppl, n = perplexity(m, docs, ctx)
        res[f"{name}_params"] = m.num_params()
        res[f"{name}_heldout_ppl"] = round(ppl, 3)
        print(f"{name}: {m.num_params()} params, held-out perplexity {ppl:.3f} over {n} tokens", flush=True)
    res["heldout_tokens"] = n
    res["top1_agreement"] = round(agreement(draft, target, docs, ctx), 4)
    print(f"teacher-forced top-1 agreement draft vs target: {res['top1_agreement']:.4f}", flush=True)
    with open(os.path.join(a.out, "heldout-prompts.json")) as f:
        prompts = json.load(f)["prompts"]
    rounds = acc = gen = 0
    for p in prompts:
        ids = tok.encode(p["text"] + "\n", bos=True)
        out, r, c = speculate(draft, target, ids, NEW_TOKENS, eos)
        # greedy output is the one sequence whose every token is the target's argmax after its
        # prefix: one teacher-forced pass checks it (selfcheck.py also compares with greedy())
        with torch.no_grad():
            am = target(torch.tensor([out[:-1]]))[0].argmax(-1).tolist()
        assert am[len(ids) - 1:] == out[len(ids):], f"speculative output differs from target greedy on {p['ref']}"
        rounds, acc, gen = rounds + r, acc + c, gen + len(out) - len(ids)
    res["k"] = K
    res["prompts"] = len(prompts)
    res["rounds"] = rounds
    res["mean_accepted_per_round"] = round(acc / rounds, 4)
    res["acceptance_rate"] = round(acc / (rounds * K), 4)
    res["tokens_per_target_pass"] = round(gen / rounds, 4)
    print(f"greedy k={K} on {len(prompts)} held-out prompts: {acc / rounds:.3f} accepted/round "
          f"({acc / (rounds * K):.1%} of drafted), {gen / rounds:.3f} tokens per target pass; "
          f"identical to target-only greedy", flush=True)
    samples = {}
    for label, text in (("plain", "And God said,"), ("chat", None)):
        ids = (tok.encode(text, bos=True) if text else
               tok.encode("<|start_header_id|>user<|end_header_id|>\n\nPsalms 23<|eot_id|>"
                          "<|start_header_id|>assistant<|end_header_id|>\n\n", bos=True))
        out = greedy(target, ids, 80, eos)
        torch.manual_seed(a.seed)
        sampled = sample(target, ids, 80, eos, temperature=0.7)
        samples[label] = {"prompt": tok.decode(ids, skip_special=False), "greedy": tok.decode(out[len(ids):]),
                          "sampled_t0.7": tok.decode(sampled[len(ids):])}
        for kind in ("greedy", "sampled_t0.7"):
            print(f"--- target sample ({label}, {kind}):\n{samples[label]['prompt']}{samples[label][kind]}\n", flush=True)
    res["samples"] = samples
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump(res, f, indent=1)
