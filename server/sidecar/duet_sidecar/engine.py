"""Sessions over a batched forward: the part of the sidecar every backend shares.

A backend supplies a `runner` with forward(slots, starts, tokens) -> [logits (T_b, vocab)],
plus max_slots, max_context and vocab_size. The engine owns sessions (a KV slot, how many
tokens the cache holds, the pending token the target produced but has not yet run, the
sampling params and RNG) and implements open / verify_batch / generate / close on top.

Verify semantics (server/verifiers/types.ts): the block is [pending, d_1..d_k] at position
`length`; with n accepted, the cache keeps pending + d_1..d_n (rollback = a shorter length)
and the verdict token becomes the new pending token.

A baseline decode step is a verify with an empty draft (k = 0): one position, the next token
drawn by accept_block's bonus draw, which is sample_row on the same RNG stream. So baseline
steps of many sessions, and speculative blocks, run in one forward (continuous batching).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import errors
from .sampling import STREAM_TARGET, Rng, SamplingParams, accept_block, sample_row


@dataclass
class Session:
    sid: str
    slot: int
    length: int
    pending: int
    sampling: SamplingParams
    rng: Rng
    owner: object = None
    passes: int = field(default=0)


@dataclass
class VerifyItem:
    sid: str
    draft: list[int]
    dists: list[tuple[np.ndarray, np.ndarray]] | None = None


class Engine:
    def __init__(self, runner, *, max_batch: int, max_draft: int = 64, prefill_chunk: int = 512):
        self.runner = runner
        self.max_batch = max_batch
        self.max_draft = max_draft
        self.prefill_chunk = prefill_chunk
        self.vocab_size = runner.vocab_size
        self.max_context = runner.max_context
        self.sessions: dict[str, Session] = {}
        # slot 0 is kept free for one-off `logits` requests
        self.free_slots = list(range(runner.max_slots - 1, 0, -1))
        self.forward_passes = 0

    # ---- validation ----
    def _tokens(self, what: str, toks: object, min_len: int = 0) -> list[int]:
        if not isinstance(toks, list) or len(toks) < min_len:
            raise errors.BadRequest(f"{what}: expected a list of at least {min_len} token ids")
        for t in toks:
            if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < self.vocab_size:
                raise errors.BadRequest(f"{what}: token id {t!r} outside the vocabulary [0, {self.vocab_size})")
        return toks

    def session(self, sid: str) -> Session:
        s = self.sessions.get(sid)
        if s is None:
            raise errors.UnknownSession(f"session {sid!r} is not open on this sidecar (closed, never opened, or lost in a restart); open it again")
        return s

    def _forward(self, slots, starts, tokens) -> list[torch.Tensor]:
        self.forward_passes += 1
        return self.runner.forward(slots, starts, tokens)

    def _prefill(self, slot: int, tokens: list[int]) -> torch.Tensor:
        """Chunked prefill from position 0; logits of the last chunk."""
        out = None
        for s in range(0, len(tokens), self.prefill_chunk):
            out = self._forward([slot], [s], [tokens[s : s + self.prefill_chunk]])[0]
        return out

    # ---- ops ----
    def open(self, sid: str, prompt: object, sp: SamplingParams, owner: object = None) -> int:
        if not isinstance(sid, str) or not sid:
            raise errors.BadRequest("open: session must be a non-empty string")
        if sid in self.sessions:
            raise errors.SessionExists(f"session {sid!r} is already open; close it first or use a new id")
        prompt = self._tokens("open: prompt", prompt, 1)
        if len(prompt) + 1 > self.max_context:
            raise errors.ContextFull(f"open: prompt of {len(prompt)} tokens does not fit the context of {self.max_context}; shorten it")
        if not self.free_slots:
            raise errors.NoCapacity(f"all {self.runner.max_slots - 1} session slots are in use; close a session or start the sidecar with a larger --max-sessions")
        slot = self.free_slots.pop()
        try:
            logits = self._prefill(slot, prompt)
        except BaseException:
            self.free_slots.append(slot)
            raise
        rng = Rng(sp.seed, STREAM_TARGET)
        first = sample_row(logits[-1], sp, rng)
        self.sessions[sid] = Session(sid, slot, len(prompt), first, sp, rng, owner, passes=1)
        return first

    def verify_batch(self, items: list[VerifyItem], return_logits: bool = False) -> tuple[list[dict], list[torch.Tensor | None], float]:
        """One forward over every valid item; per-item results or errors, in request order."""
        if len(items) > self.max_batch:
            raise errors.BatchTooLarge(f"verify_batch of {len(items)} sessions exceeds max batch {self.max_batch}; split it")
        results: list[dict] = [{} for _ in items]
        run: list[int] = []
        seen: set[str] = set()
        for i, it in enumerate(items):
            try:
                s = self.session(it.sid)
                if it.sid in seen:
                    raise errors.BadRequest(f"session {it.sid!r} appears twice in one verify_batch")
                seen.add(it.sid)
                draft = self._tokens("verify: draft", it.draft)
                if len(draft) > self.max_draft:
                    raise errors.BadRequest(f"verify: {len(draft)} draft tokens exceed the limit of {self.max_draft}")
                if s.length + len(draft) + 2 > self.max_context:
                    raise errors.ContextFull(f"session {it.sid!r}: {s.length} tokens + a block of {len(draft) + 1} exceed the context of {self.max_context}; start a new session")
                if not s.sampling.greedy and draft:
                    self._check_dists(it)
                run.append(i)
            except errors.SidecarError as e:
                results[i] = {"session": it.sid, "error": {"code": e.code, "message": str(e)}}
        logits_out: list[torch.Tensor | None] = [None] * len(items)
        ms = 0.0
        if run:
            sess = [self.sessions[items[i].sid] for i in run]
            t0 = time.perf_counter()
            logits = self._forward([s.slot for s in sess], [s.length for s in sess], [[s.pending] + items[i].draft for s, i in zip(sess, run)])
            if logits and logits[0].is_cuda:
                torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) * 1000
            for s, i, lg in zip(sess, run, logits):
                lg = lg.cpu()
                # k = 0 (a baseline step) carries no q's: accept_block wants an empty list then
                dists = items[i].dists if items[i].draft else []
                n, tok = accept_block(lg, items[i].draft, dists, s.sampling, s.rng)
                s.length += 1 + n
                s.pending = tok
                s.passes += 1
                results[i] = {"session": s.sid, "accepted": n, "token": tok}
                if return_logits:
                    logits_out[i] = lg
        return results, logits_out, ms

    def _check_dists(self, it: VerifyItem) -> None:
        if it.dists is None or len(it.dists) != len(it.draft):
            raise errors.BadRequest(f"verify: sampled session {it.sid!r} needs one draft distribution per draft token ({len(it.draft)})")
        for j, (ids, probs) in enumerate(it.dists):
            if len(ids) == 0 or len(ids) != len(probs):
                raise errors.BadRequest(f"verify: draft distribution {j} is empty or has mismatched ids/probs")
            if ids.min() < 0 or ids.max() >= self.vocab_size:
                raise errors.BadRequest(f"verify: draft distribution {j} has a token id outside [0, {self.vocab_size})")
            if len(np.unique(ids)) != len(ids):
                raise errors.BadRequest(f"verify: draft distribution {j} lists a token id twice")
            total = float(probs.astype(np.float64).sum())
            if not (np.all(probs >= 0) and np.all(probs <= 1)) or abs(total - 1) > 1e-3:
                raise errors.BadRequest(f"verify: draft distribution {j} is not a probability distribution (sum {total:.6g})")

    def check_generate(self, sid: str, n: object) -> Session:
        s = self.session(sid)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise errors.BadRequest("generate: n must be a non-negative integer")
        if s.length + n + 1 > self.max_context:
            raise errors.ContextFull(f"generate: {s.length} + {n} tokens exceed the context of {self.max_context}; start a new session")
        return s

    def step_batch(self, sids: list[str]) -> list[int | errors.SidecarError]:
        """Baseline decode for every session in sids in ONE forward: run each pending token,
        sample the next (a k = 0 verify). Per session: the token, or the error that session got."""
        results, _, _ = self.verify_batch([VerifyItem(sid, []) for sid in sids])
        out: list[int | errors.SidecarError] = []
        for r in results:
            if "error" in r:
                e = r["error"]
                err = getattr(errors, e["code"], errors.SidecarError)(e["message"])
                out.append(err if isinstance(err, errors.SidecarError) else errors.SidecarError(e["message"]))
            else:
                out.append(r["token"])
        return out

    def step(self, sid: str) -> int:
        """Baseline decode: run the pending token, sample the next one (one target pass)."""
        s = self.session(sid)
        if s.length + 2 > self.max_context:
            raise errors.ContextFull(f"generate: session {sid!r} filled the context of {self.max_context}")
        r = self.step_batch([sid])[0]
        if isinstance(r, errors.SidecarError):
            raise r
        return r

    def generate(self, sid: str, n: object, on_token=None) -> list[int]:
        self.check_generate(sid, n)
        out = []
        for _ in range(n):
            out.append(self.step(sid))
            if on_token is not None:
                on_token(out[-1])
        return out

    def close(self, sid: str) -> bool:
        s = self.sessions.pop(sid, None)
        if s is None:
            return False
        self.free_slots.append(s.slot)
        return True

    def close_owner(self, owner: object) -> int:
        mine = [sid for sid, s in self.sessions.items() if s.owner is owner]
        for sid in mine:
            self.close(sid)
        return len(mine)

    def logits(self, tokens: object) -> torch.Tensor:
        """All-position logits of a fresh sequence (tests, `duet logits`-style checks)."""
        if not getattr(self.runner, "all_logits", True):
            raise errors.BadRequest("the logits op needs every position's logits, which this backend does not return; use --backend torch")
        tokens = self._tokens("logits: tokens", tokens, 1)
        if len(tokens) > self.max_context:
            raise errors.ContextFull(f"logits: {len(tokens)} tokens exceed the context of {self.max_context}")
        rows = []
        for s in range(0, len(tokens), self.prefill_chunk):
            rows.append(self._forward([0], [s], [tokens[s : s + self.prefill_chunk]])[0].cpu())
        return torch.cat(rows, 0)
