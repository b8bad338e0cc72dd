#!/usr/bin/python3
"""Train the bundled tiny draft/target pair on the KJV Bible and export it in HF format.

  /usr/bin/python3 tools/train/train.py all --out public/models     # everything, resumable

Stages (each also a subcommand): data -> tokenizer -> target -> draft -> export -> report.
Work files (token streams, checkpoints) live in --work (default /tmp/duet-train); rerunning a
stage resumes from its last checkpoint unless --fresh is given. See tools/train/README.md."""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import corpus  # noqa: E402
import export  # noqa: E402
from model import Config, Llama  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 4096
CTX = 512
TARGET = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=6, num_attention_heads=8,
              num_key_value_heads=2, head_dim=32)
DRAFT = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, head_dim=32)
CHAT_EVERY = 10  # chapters with index % 10 < CHAT_KINDS are rendered as chat turns
CHAT_KINDS = 4   # 0, 3: "<Book> <n>" -> the chapter; 1: "<Book> <n>:<v>" -> verse v on; 2: a verse's opening words -> verse on
CHAT_OPENING_WORDS = 5


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def model_config(shape):
    return Config(vocab_size=VOCAB, max_position_embeddings=CTX, **shape)


# ---------------------------------------------------------------- data + tokenizer

def chat_turn(user, reply=None):
    """The Llama-3 chat rendering of one user turn (and the assistant's reply, when given)."""
    s = ("<|start_header_id|>user<|end_header_id|>\n\n" + user
         + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    return s if reply is None else s + reply + "<|eot_id|>"


def chat_example(i, chapter):
    """(user text, reply) for chat document i: the three kinds of question the Chat view suggests.
    Verse choice is seeded by i, so the data stage is reproducible."""
    verses = chapter[2]
    kind = i % CHAT_EVERY
    if kind in (0, 3) or len(verses) < 2:
        return corpus.chapter_title(chapter), "\n".join(verses)
    v = random.Random(i).randrange(len(verses))
    if kind == 1:
        return f"{corpus.chapter_title(chapter)}:{v + 1}", "\n".join(verses[v:])
    return opening(verses[v]), "\n".join(verses[v:])


def opening(verse):
    """A verse's first few words, its trailing punctuation dropped: what a user would type."""
    return " ".join(verse.split()[:CHAT_OPENING_WORDS]).rstrip(",;:.")


def render(tok, i, chapter):
    """Token ids of one training document."""
    if i % CHAT_EVERY < CHAT_KINDS:
        return tok.encode(chat_turn(*chat_example(i, chapter)), bos=True)
    return tok.encode(corpus.chapter_text(chapter), bos=True) + [tok.eos]


def stage_data(a):
    os.makedirs(a.work, exist_ok=True)
    chapters = corpus.load_chapters()
    train, held = corpus.split(chapters)
    log(f"{len(chapters)} chapters: {len(train)} train, {len(held)} held out")
    merges = bpe.train([corpus.chapter_title(c) + "\n" + corpus.chapter_text(c) for c in train], VOCAB)
    tok = bpe.Tokenizer(merges)
    assert len(tok) == VOCAB, len(tok)
    tok_dir = os.path.join(a.work, "tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    tok.save(tok_dir, CTX)
    stream = []
    for i, c in enumerate(train):
        stream += render(tok, i, c)
    torch.save(torch.tensor(stream, dtype=torch.int16), os.path.join(a.work, "train.pt"))
    held_docs = [tok.encode(corpus.chapter_text(c), bos=True) for c in held]
    torch.save(held_docs, os.path.join(a.work, "heldout.pt"))
    # Prompts for acceptance measurements: the first verse of each held-out chapter.
    prompts = [{"ref": corpus.chapter_title(c) + ":1", "text": c[2][0]} for c in held]
    # Chat prompts of the three trained kinds on held-out chapters (the report's reply quality).
    chat = []
    for j, c in enumerate(held):
        v = random.Random(10_000 + j).randrange(len(c[2]))
        whole, tail = "\n".join(c[2])[:1000], "\n".join(c[2][v:])[:1000]  # the true reply (report.py)
        chat += [{"ref": corpus.chapter_title(c), "user": corpus.chapter_title(c), "reply": whole},
                 {"ref": f"{corpus.chapter_title(c)}:{v + 1}", "user": f"{corpus.chapter_title(c)}:{v + 1}", "reply": tail},
                 {"ref": f"{corpus.chapter_title(c)}:{v + 1}", "user": opening(c[2][v]), "reply": tail}]
    with open(os.path.join(a.work, "heldout-prompts.json"), "w") as f:
        json.dump({"prompts": prompts, "chat": chat}, f, indent=1)
    log(f"train stream {len(stream)} tokens; held-out {sum(map(len, held_docs))} tokens in {len(held_docs)} docs")
    write_tokenizer_fixture(tok, held, os.path.join(HERE, "fixtures", "tokenizer-ids.json"))


def write_tokenizer_fixture(tok, held, path):
    samples = [corpus.chapter_text(c)[:400] for c in held[:6]]
    samples += ["In the beginning God created the heaven and the earth.",
                "  two  spaces,\ttab\nnewline\n\nand   runs   of spaces   ",
                "Numbers 3:16 and 144000; it's they'll we've I'm you'd 'tis", "",
                "Psalms 23<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nThe LORD",
                "under_score & punctuation!? (parens) [brackets] {braces} ---"]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"note": "ids from tools/train/bpe.py (no BOS); regenerate with train.py data",
                   "samples": [{"text": s, "ids": tok.encode(s)} for s in samples]}, f, indent=1)


def load_tok(a):
    return bpe.Tokenizer.load(os.path.join(a.work, "tokenizer"))


# ---------------------------------------------------------------- training

def lr_at(progress, peak, warmup_frac=0.03):
    """Linear warmup, then cosine decay to 10% of peak; progress in [0, 1]."""
    if progress < warmup_frac:
        return peak * max(progress, 1e-3) / warmup_frac
    p = (progress - warmup_frac) / (1 - warmup_frac)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def train_loop(a, name, shape, teacher=None):
    torch.manual_seed(a.seed)
    stream = torch.load(os.path.join(a.work, "train.pt")).long()
    m = Llama(model_config(shape))
    opt = torch.optim.AdamW(m.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    ckpt = os.path.join(a.work, f"{name}.ckpt")
    step, elapsed = 0, 0.0
    g = torch.Generator().manual_seed(a.seed + (1 if teacher else 0))
    if os.path.exists(ckpt) and not a.fresh:
        st = torch.load(ckpt)
        m.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, elapsed = st["step"], st.get("elapsed", 0.0)
        g.set_state(st["rng"])
        log(f"{name}: resumed at step {step}")
    elif a.init_from:
        # continue from exported weights (a new schedule and fresh AdamW moments; the warmup
        # covers the moments' start): e.g. more training of the committed target
        export.load_weights(m, a.init_from)
        log(f"{name}: initialised from {a.init_from}")
    budget = a.minutes * 60 if a.minutes else float("inf")
    log(f"{name}: {m.num_params()} params, {a.steps} steps of {a.batch}x{a.seq} tokens"
        + (f" or {a.minutes} minutes, whichever ends first" if a.minutes else ""))

    def progress():
        # the schedule follows whichever limit is nearer, so a time-boxed run still anneals
        return max(step / a.steps, elapsed / budget)

    t0, last_ckpt = time.time() - elapsed, time.time()
    while progress() < 1:
        starts = torch.randint(0, len(stream) - a.seq - 1, (a.batch,), generator=g)
        xy = torch.stack([stream[s:s + a.seq + 1] for s in starts.tolist()])
        x, y = xy[:, :-1], xy[:, 1:]
        for pg in opt.param_groups:
            pg["lr"] = lr_at(progress(), a.lr)
        logits = m(x)
        ce = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        if teacher is not None:
            with torch.no_grad():
                t_logp = F.log_softmax(teacher(x), -1)
            # forward KL(target || draft), DistillSpec's FKL: pushes the draft's mass onto the
            # target's likely tokens, which is what greedy and sampled acceptance reward
            kl = F.kl_div(F.log_softmax(logits, -1).reshape(-1, VOCAB), t_logp.reshape(-1, VOCAB),
                          log_target=True, reduction="batchmean")
            loss = a.kl_weight * kl + (1 - a.kl_weight) * ce
        else:
            kl, loss = None, ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        step += 1
        elapsed = time.time() - t0
        done = progress() >= 1
        if step % 10 == 0 or done:
            log(f"{name} step {step}/{a.steps} ce {ce.item():.3f}" + (f" kl {kl.item():.3f}" if kl is not None else "")
                + f" lr {opt.param_groups[0]['lr']:.2e} {elapsed:.0f}s")
        if time.time() - last_ckpt > a.ckpt_minutes * 60 or done:
            torch.save({"model": m.state_dict(), "opt": opt.state_dict(), "step": step, "rng": g.get_state(),
                        "elapsed": elapsed, "config": m.c.to_dict()}, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
            last_ckpt = time.time()
            log(f"{name}: checkpoint at step {step}")
    return m


def load_model(a, name, shape):
    m = Llama(model_config(shape))
    m.load_state_dict(torch.load(os.path.join(a.work, f"{name}.ckpt"))["model"])
    return m.eval()


def stage_target(a):
    train_loop(a, "target", TARGET)


def stage_draft(a):
    teacher = load_model(a, "target", TARGET)
    for p in teacher.parameters():
        p.requires_grad_(False)
    train_loop(a, "draft", DRAFT, teacher=teacher)


# ---------------------------------------------------------------- export + report

def stage_export(a):
    tok_dir = os.path.join(a.work, "tokenizer")
    os.makedirs(a.out, exist_ok=True)
    for name, shape, dtype in [("target", TARGET, "bf16"), ("draft", DRAFT, "f16")]:
        if not os.path.exists(os.path.join(a.work, f"{name}.ckpt")):
            # e.g. only the target was trained further (--init-from): the committed draft stays
            log(f"no {name} checkpoint in {a.work}: public/models/tiny-{name} and its fixture are kept as they are")
            continue
        m = load_model(a, name, shape)
        d = os.path.join(a.out, f"tiny-{name}")
        export.write_model_dir(m, d, dtype, tok_dir)
        m2 = export.load_rounded(m, dtype)  # what the exported file holds, back in f32
        tokens = bpe.Tokenizer.load(tok_dir).encode("And God said, Let there be light", bos=True)[:11]
        export.write_logits_fixture(m2, tokens, os.path.join(HERE, "fixtures", f"{name}-logits.json"), d)
        log(f"exported {d}")
    with open(os.path.join(a.work, "heldout-prompts.json")) as f:
        held = json.load(f)
    with open(os.path.join(a.out, "heldout-prompts.json"), "w") as f:
        json.dump({"note": "held-out KJV chapters (every 50th chapter), never trained on. prompts: the first verse of"
                           " each; chat: per chapter, the three kinds of chat question the pair learned"
                           " (\"<Book> <n>\", \"<Book> <n>:<v>\", a verse's opening words)",
                   "prompts": held["prompts"], "chat": [{k: v for k, v in c.items() if k != "reply"} for c in held["chat"]]},
                  f, indent=1)


def stage_report(a):
    import report
    report.run(a)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["all", "data", "target", "draft", "export", "report"])
    p.add_argument("--out", default=os.path.join(HERE, "..", "..", "public", "models"))
    p.add_argument("--work", default="/tmp/duet-train")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--fresh", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--target-steps", type=int, default=1000)
    p.add_argument("--draft-steps", type=int, default=2000)
    p.add_argument("--target-minutes", type=float, default=None, help="time box for the target (cosine follows it)")
    p.add_argument("--draft-minutes", type=float, default=None, help="time box for the draft")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--ckpt-minutes", type=float, default=3.0)
    p.add_argument("--kl-weight", type=float, default=0.8)
    p.add_argument("--init-from", default=None, help="a model folder (config.json + model.safetensors) to start the stage from")
    p.add_argument("--peak-lr", type=float, default=None, help="peak learning rate (default 3e-3 target, 4e-3 draft)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    stages = ["data", "target", "draft", "export", "report"] if a.stage == "all" else [a.stage]
    for s in stages:
        if s == "data" and a.stage == "all" and os.path.exists(os.path.join(a.work, "train.pt")) and not a.fresh:
            continue
        a.steps = a.target_steps if s == "target" else a.draft_steps
        a.minutes = a.target_minutes if s == "target" else a.draft_minutes
        a.lr = a.peak_lr or (3e-3 if s == "target" else 4e-3)
        log(f"== {s}")
        globals()[f"stage_{s}"](a)


if __name__ == "__main__":
    main()
