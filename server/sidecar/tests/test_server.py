"""The socket server end to end (in-process, port 0): ops, streaming, and that bad frames,
bad requests and unknown ops get typed errors while the process keeps serving."""

import unittest

try:
    import torch  # noqa: F401
except ImportError as e:  # only CI images without python3-torch get here
    raise unittest.SkipTest(f"/usr/bin/python3 cannot import torch ({e}); install python3-torch to run the sidecar tests")

import json
import os
import socket
import struct
import tempfile
import threading

import numpy as np

from duet_sidecar import protocol
from duet_sidecar.engine import Engine
from duet_sidecar.safetensors_io import load_dir
from duet_sidecar.server import SidecarServer
from duet_sidecar.torch_llama import TorchLlama

from .util import reference_logits, tiny_config, write_model


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.next_id = 0

    def raw(self, data: bytes):
        self.sock.sendall(data)

    def read(self):
        return protocol.read_frame(self.sock)

    def call(self, op, payload=b"", **fields):
        self.next_id += 1
        self.sock.sendall(protocol.encode({"id": self.next_id, "op": op, **fields}, payload))
        events = []
        while True:
            h, body, err = self.read()
            assert err is None, err
            assert h["id"] == self.next_id, h
            if "event" in h:
                events.append(h)
                continue
            return h, body, events


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = os.path.join(cls.tmp.name, "m")
        cls.cfg, cls.w = write_model(d, tiny_config(), seed=5)
        with open(os.path.join(d, "tokenizer.json"), "w") as f:
            json.dump({"model": {"vocab": {"a": 0}}}, f)
        runner = TorchLlama(cls.cfg, load_dir(d), max_slots=5, max_context=64)
        engine = Engine(runner, max_batch=3, max_draft=8)
        cls.server = SidecarServer(engine, {"backend": "torch", "model": "m", "vocabSize": cls.cfg.vocab_size}, tokenizer_path=os.path.join(d, "tokenizer.json"))
        _, cls.port = cls.server.listen("127.0.0.1", 0)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.tmp.cleanup()

    def client(self):
        c = Client(self.port)
        self.addCleanup(c.sock.close)
        return c

    def test_hello_open_verify_generate_close(self):
        c = self.client()
        h, _, _ = c.call("hello")
        self.assertEqual((h["ok"], h["protocol"], h["vocabSize"]), (True, 1, 97))
        h, _, _ = c.call("open", session="a", prompt=[5, 6, 7], sampling={"temperature": 0})
        ref = reference_logits(self.cfg, self.w, [5, 6, 7])
        first = h["firstToken"]
        self.assertEqual(first, int(ref[-1].argmax()))
        h, body, _ = c.call("verify_batch", requests=[{"session": "a", "draft": [1, 2]}], returnLogits=True)
        self.assertTrue(h["ok"], h)
        self.assertEqual(h["logitsRows"], [3])
        lg = np.frombuffer(body, dtype="<f4").reshape(3, 97)
        ref = reference_logits(self.cfg, self.w, [5, 6, 7, first, 1, 2])[3:].numpy()
        self.assertLess(float(np.abs(lg - ref).max()), 1e-4)
        h, _, ev = c.call("generate", session="a", n=3, stream=True)
        self.assertEqual([e["token"] for e in ev], h["tokens"])
        self.assertEqual(len(h["tokens"]), 3)
        h, _, _ = c.call("health")
        self.assertEqual(h["sessions"], 1)
        h, _, _ = c.call("close", session="a")
        self.assertTrue(h["closed"])
        h, body, _ = c.call("tokenizer")
        self.assertEqual(json.loads(body), {"model": {"vocab": {"a": 0}}})

    def test_sampled_verify_with_binary_distributions(self):
        c = self.client()
        c.call("open", session="s", prompt=[9], sampling={"temperature": 0.8, "topK": 5, "topP": 0.9, "seed": 42})
        ids = np.array([3, 4], dtype="<i4")
        probs = np.array([0.25, 0.75], dtype="<f4")
        payload = (ids.tobytes() + probs.tobytes()) * 2
        h, _, _ = c.call("verify_batch", payload, requests=[{"session": "s", "draft": [4, 3], "distLens": [2, 2]}])
        r = h["results"][0]
        self.assertIn(r["accepted"], (0, 1, 2))
        self.assertTrue(0 <= r["token"] < 97)
        # a q that is not a distribution is refused for that session only
        bad = np.array([3], "<i4").tobytes() + np.array([0.5], "<f4").tobytes()
        h, _, _ = c.call("verify_batch", bad, requests=[{"session": "s", "draft": [3], "distLens": [1]}])
        self.assertEqual(h["results"][0]["error"]["code"], "BadRequest")

    def test_errors_are_typed_and_connection_survives(self):
        c = self.client()
        c.call("open", session="e1", prompt=[1, 2], sampling={})
        cases = [
            (("open", dict(session="e1", prompt=[1])), "SessionExists"),
            (("open", dict(session="e2", prompt=[1, 500])), "BadRequest"),
            (("open", dict(session="e2", prompt=[])), "BadRequest"),
            (("open", dict(session="e2", prompt=[1], sampling={"topP": 0})), "BadRequest"),
            (("open", dict(session="e2", prompt=list(range(64)))), "ContextFull"),
            (("generate", dict(session="nope", n=1)), "UnknownSession"),
            (("generate", dict(session="e1", n=-1)), "BadRequest"),
            (("frobnicate", {}), "UnknownOp"),
            (("verify_batch", dict(requests=[])), "BadRequest"),
            (("verify_batch", dict(requests=[{"session": "e1", "draft": [1]}] * 4)), "BatchTooLarge"),
            (("verify_batch", dict(requests=[{"session": "e1", "draft": [1], "distLens": [4]}])), "BadRequest"),
        ]
        for (op, fields), code in cases:
            h, _, _ = c.call(op, **fields)
            self.assertFalse(h["ok"], (op, fields))
            self.assertEqual(h["error"]["code"], code, (op, fields, h))
        # per-session errors inside a batch leave the other sessions' results intact
        h, _, _ = c.call("verify_batch", requests=[{"session": "e1", "draft": [1]}, {"session": "ghost", "draft": []},
                                                   {"session": "e1", "draft": [2]}])
        self.assertIn("accepted", h["results"][0])
        self.assertEqual(h["results"][1]["error"]["code"], "UnknownSession")
        self.assertEqual(h["results"][2]["error"]["code"], "BadRequest")  # duplicate session
        h, _, _ = c.call("verify_batch", requests=[{"session": "e1", "draft": [1] * 9}])
        self.assertEqual(h["results"][0]["error"]["code"], "BadRequest")
        # malformed frames: not JSON, not an object, wrong version — answered, connection kept
        for header, code in ((b"{nope", "BadFrame"), (b"[1,2]", "BadFrame"), (b'{"v":99,"id":5,"op":"hello"}', "VersionMismatch")):
            c.raw(struct.pack(">II", len(header), 0) + header)
            h, _, err = c.read()
            self.assertIsNone(err)
            self.assertEqual(h["error"]["code"], code)
        h, _, _ = c.call("health")
        self.assertTrue(h["ok"])
        # an unframeable length: answered, that connection closed, the server keeps serving
        c.raw(struct.pack(">II", 1 << 30, 0))
        h, _, _ = c.read()
        self.assertEqual(h["error"]["code"], "FrameTooLarge")
        self.assertIsNone(c.read())
        c2 = self.client()
        h, _, _ = c2.call("health")
        self.assertTrue(h["ok"])

    def test_sessions_freed_when_connection_closes(self):
        c = self.client()
        for i in range(4):
            h, _, _ = c.call("open", session=f"f{i}", prompt=[1], sampling={})
            self.assertTrue(h["ok"], h)
        h, _, _ = c.call("open", session="f4", prompt=[1], sampling={})
        self.assertEqual(h["error"]["code"], "NoCapacity")
        c.sock.close()
        c2 = self.client()
        for _ in range(50):  # the close is processed on the model thread; poll health
            h, _, _ = c2.call("health")
            if h["sessions"] == 0:
                break
        self.assertEqual(h["sessions"], 0)
        h, _, _ = c2.call("open", session="f0", prompt=[1], sampling={})
        self.assertTrue(h["ok"], h)
        c2.call("close", session="f0")


if __name__ == "__main__":
    unittest.main()
