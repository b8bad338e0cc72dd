"""The socket server: one reader thread per connection, one model thread for every op that
touches the model (so ops are serialized and the model needs no locking), `hello`/`health`
answered inline so a long verify never makes the sidecar look dead to the supervisor.
`generate` streams of all sessions are continuously batched: each model-thread turn runs ONE
forward with the next baseline step of every session that is generating (a k = 0 verify each,
see engine.py), and other ops interleave between those turns.

A bad frame or a failing op gets a typed error reply; only an unframeable stream (an
oversized length prefix) closes that one connection. Sessions belong to the connection that
opened them and are freed when it closes.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import PROTOCOL_VERSION, errors, protocol
from .engine import Engine, VerifyItem
from .sampling import SamplingParams


def parse_sampling(j: object) -> SamplingParams:
    if j is None:
        return SamplingParams()
    if not isinstance(j, dict):
        raise errors.BadRequest("sampling: expected an object {temperature, topK, topP, seed}")
    t, k, p, seed = j.get("temperature", 0), j.get("topK", 0), j.get("topP", 1), j.get("seed", 0)
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not (0 <= t < float("inf")):
        raise errors.BadRequest(f"sampling.temperature: expected a finite number >= 0 (0 = greedy), got {t!r}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise errors.BadRequest(f"sampling.topK: expected an integer >= 0 (0 = off), got {k!r}")
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not (0 < p <= 1):
        raise errors.BadRequest(f"sampling.topP: expected a number in (0, 1] (1 = off), got {p!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= 0xFFFFFFFF:
        raise errors.BadRequest(f"sampling.seed: expected an integer in [0, 2^32), got {seed!r}")
    return SamplingParams(float(t), k, float(p), seed)


def parse_verify(header: dict, payload: bytes) -> list[VerifyItem]:
    """requests: [{session, draft, distLens?}]; payload: per request, per position, i32 ids then f32 probs (LE)."""
    reqs = header.get("requests")
    if not isinstance(reqs, list) or not reqs:
        raise errors.BadRequest("verify_batch: `requests` must be a non-empty list")
    items, off = [], 0
    for r in reqs:
        if not isinstance(r, dict) or not isinstance(r.get("session"), str):
            raise errors.BadRequest("verify_batch: each request needs a string `session`")
        draft = r.get("draft")
        if not isinstance(draft, list):
            raise errors.BadRequest(f"verify_batch: session {r['session']!r}: `draft` must be a list of token ids")
        dists = None
        lens = r.get("distLens")
        if lens is not None:
            if not isinstance(lens, list) or not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 1 << 21 for n in lens):
                raise errors.BadRequest(f"verify_batch: session {r['session']!r}: `distLens` must list positive support sizes")
            dists = []
            for n in lens:
                if off + 8 * n > len(payload):
                    raise errors.BadRequest("verify_batch: payload is shorter than `distLens` says")
                ids = np.frombuffer(payload, dtype="<i4", count=n, offset=off).astype(np.int64)
                probs = np.frombuffer(payload, dtype="<f4", count=n, offset=off + 4 * n).astype(np.float32)
                off += 8 * n
                dists.append((ids, probs))
        items.append(VerifyItem(r["session"], draft, dists))
    if off != len(payload):
        raise errors.BadRequest(f"verify_batch: payload has {len(payload) - off} bytes beyond the distributions `distLens` describes")
    return items


class Connection:
    def __init__(self, sock: socket.socket, server: "SidecarServer"):
        self.sock = sock
        self.server = server
        self.write_lock = threading.Lock()
        self.alive = True

    def send(self, header: dict, payload: bytes = b"") -> None:
        frame = protocol.encode(header, payload)
        with self.write_lock:
            if not self.alive:
                return
            try:
                self.sock.sendall(frame)
            except OSError:
                self.alive = False

    def send_error(self, rid: object, e: errors.SidecarError) -> None:
        self.send({"id": rid, "ok": False, "error": {"code": e.code, "message": str(e)}})


class _Stream:
    """One `generate` op in progress: who asked, how many tokens, what it has so far."""

    def __init__(self, conn: Connection, rid: object, sid: str, n: int, done: list[int], stream: bool):
        self.conn, self.rid, self.sid, self.n, self.done, self.stream = conn, rid, sid, n, done, stream


class SidecarServer:
    def __init__(self, engine: Engine, info: dict, *, tokenizer_path: str | None = None, log=sys.stderr):
        self.engine = engine
        self.info = {"protocol": PROTOCOL_VERSION, **info}
        self.tokenizer_path = tokenizer_path
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.started = time.time()
        self.log = log
        self.listener: socket.socket | None = None
        # generate streams waiting for their next step; one _run_steps job serves them all
        self.steps_lock = threading.Lock()
        self.steps: list[_Stream] = []
        self.steps_scheduled = False
        self.step_passes = 0
        self.step_rows = 0

    # ---- ops ----
    def handle(self, conn: Connection, h: dict, payload: bytes) -> None:
        rid, op = h.get("id"), h.get("op")
        try:
            if op in ("hello", "info"):
                conn.send({"id": rid, "ok": True, **self.info})
            elif op == "health":
                conn.send({"id": rid, "ok": True, "sessions": len(self.engine.sessions), "uptimeS": round(time.time() - self.started, 3),
                           "forwardPasses": self.engine.forward_passes, "stepPasses": self.step_passes, "stepRows": self.step_rows})
            elif op in ("open", "verify_batch", "generate", "close", "logits", "tokenizer"):
                self._submit(self._model_op, conn, rid, op, h, payload)
            else:
                raise errors.UnknownOp(f"unknown op {op!r}; this sidecar serves hello, info, health, open, verify_batch, generate, close, logits, tokenizer")
        except errors.SidecarError as e:
            conn.send_error(rid, e)

    def _model_op(self, conn: Connection, rid: object, op: str, h: dict, payload: bytes) -> None:
        try:
            e = self.engine
            if op == "open":
                first = e.open(h.get("session"), h.get("prompt"), parse_sampling(h.get("sampling")), owner=conn)
                conn.send({"id": rid, "ok": True, "firstToken": first})
            elif op == "verify_batch":
                want = bool(h.get("returnLogits"))
                results, logits, ms = e.verify_batch(parse_verify(h, payload), return_logits=want)
                out = {"id": rid, "ok": True, "results": results, "forwardMs": ms}
                body = b""
                if want:
                    out["vocab"] = e.vocab_size
                    out["logitsRows"] = [0 if lg is None else lg.shape[0] for lg in logits]
                    body = b"".join(lg.float().numpy().astype("<f4").tobytes() for lg in logits if lg is not None)
                conn.send(out, body)
            elif op == "generate":
                sid, n = self._sid(h), h.get("n")
                e.check_generate(sid, n)
                self._queue_step(_Stream(conn, rid, sid, n, [], bool(h.get("stream"))))
            elif op == "close":
                conn.send({"id": rid, "ok": True, "closed": e.close(self._sid(h))})
            elif op == "logits":
                lg = e.logits(h.get("tokens"))
                conn.send({"id": rid, "ok": True, "positions": lg.shape[0], "vocab": lg.shape[1]}, lg.numpy().astype("<f4").tobytes())
            elif op == "tokenizer":
                if not self.tokenizer_path or not os.path.exists(self.tokenizer_path):
                    raise errors.BadRequest("this model directory has no tokenizer.json; the gateway cannot check the draft's tokenizer against it")
                with open(self.tokenizer_path, "rb") as f:
                    conn.send({"id": rid, "ok": True, "bytes": os.path.getsize(self.tokenizer_path)}, f.read())
        except errors.SidecarError as err:
            conn.send_error(rid, err)
        except Exception as err:  # a bug or an OOM in one op must not take the sidecar down
            traceback.print_exc(file=self.log)
            conn.send_error(rid, errors.SidecarError(f"{type(err).__name__}: {err}"))

    def _queue_step(self, st: "_Stream") -> None:
        """A stream wants its next step (or its final answer): it joins the next batched turn."""
        if len(st.done) >= st.n or not st.conn.alive:
            st.conn.send({"id": st.rid, "ok": True, "tokens": st.done})
            return
        with self.steps_lock:
            self.steps.append(st)
            if self.steps_scheduled:
                return
            self.steps_scheduled = True
        self._submit(self._run_steps)

    def _run_steps(self) -> None:
        """One model-thread turn: the next step of every waiting stream, max_batch per forward."""
        with self.steps_lock:
            todo, self.steps = self.steps, []
            self.steps_scheduled = False
        mb = self.engine.max_batch
        for i in range(0, len(todo), mb):
            chunk = todo[i : i + mb]
            try:
                got = self.engine.step_batch([st.sid for st in chunk])
            except Exception as err:  # the forward itself failed: every stream of the chunk gets it
                traceback.print_exc(file=self.log)
                got = [errors.SidecarError(f"{type(err).__name__}: {err}")] * len(chunk)
            self.step_passes += 1
            self.step_rows += len(chunk)
            for st, r in zip(chunk, got):
                if isinstance(r, errors.SidecarError):
                    st.conn.send_error(st.rid, r)
                    continue
                st.done.append(r)
                if st.stream:
                    st.conn.send({"id": st.rid, "event": "token", "token": r})
                self._queue_step(st)

    def _submit(self, fn, *args) -> None:
        try:
            self.model_thread.submit(fn, *args)
        except RuntimeError:  # shutting down: nothing left to serve
            pass

    @staticmethod
    def _sid(h: dict) -> str:
        sid = h.get("session")
        if not isinstance(sid, str):
            raise errors.BadRequest("`session` must be a string")
        return sid

    # ---- sockets ----
    def serve_connection(self, sock: socket.socket) -> None:
        conn = Connection(sock, self)
        try:
            while conn.alive:
                try:
                    frame = protocol.read_frame(sock)
                except protocol.Desync as e:
                    conn.send_error(None, errors.FrameTooLarge(str(e) + "; closing this connection"))
                    break
                if frame is None:
                    break
                header, payload, err = frame
                if err is not None:
                    conn.send_error(header.get("id") if header else None, err)
                    continue
                self.handle(conn, header, payload)
        except OSError:
            pass
        finally:
            conn.alive = False
            try:
                sock.close()
            except OSError:
                pass
            # free this connection's sessions on the model thread, after its queued ops
            self._submit(self.engine.close_owner, conn)

    def listen(self, host: str, port: int) -> tuple[str, int]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(64)
        self.listener = s
        return s.getsockname()[:2]

    def serve_forever(self, poll_s: float = 0.5) -> None:
        assert self.listener is not None
        # accept() wakes every poll_s: a SIGTERM the kernel hands to another thread (the model
        # thread, a connection thread, torch's pool) only sets a flag, and the main thread runs
        # the Python handler when it next executes bytecode. A plain blocking accept() would sit
        # there until the next connection arrives (seen in CI: no exit 90 s after SIGTERM).
        self.listener.settimeout(poll_s)
        while True:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(None)  # connection sockets block; only the listener polls
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.serve_connection, args=(sock,), daemon=True).start()

    def shutdown(self) -> None:
        if self.listener is not None:
            self.listener.close()
        self.model_thread.shutdown(wait=False)
