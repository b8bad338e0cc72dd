"""safetensors reader/writer: round trips per dtype, and typed errors on broken files."""

import unittest

try:
    import torch  # noqa: F401
except ImportError as e:  # only CI images without python3-torch get here
    raise unittest.SkipTest(f"/usr/bin/python3 cannot import torch ({e}); install python3-torch to run the sidecar tests")

import json
import os
import struct
import tempfile

import torch

from duet_sidecar.safetensors_io import WeightsFormatError, load_dir, load_file, read_header, save_file


class SafetensorsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def test_round_trip(self):
        g = torch.Generator().manual_seed(0)
        t = {"a": torch.randn(3, 5, generator=g), "b": torch.randn(7, generator=g) * 100, "one": torch.tensor([1.5])}
        for dtype, tdt in (("F32", torch.float32), ("F16", torch.float16), ("BF16", torch.bfloat16)):
            path = os.path.join(self.tmp.name, f"m-{dtype}.safetensors")
            save_file(t, path, dtype)
            header, base = read_header(path)
            self.assertEqual(base % 8, 0)
            self.assertEqual(header["a"]["dtype"], dtype)
            back = load_file(path)
            for k, v in t.items():
                self.assertEqual(back[k].dtype, tdt)
                self.assertTrue(torch.equal(back[k], v.to(tdt)), f"{dtype} {k}")

    def test_broken_files(self):
        p = os.path.join(self.tmp.name, "x.safetensors")
        with open(p, "wb") as f:
            f.write(b"abc")
        with self.assertRaisesRegex(WeightsFormatError, "too short"):
            load_file(p)
        with open(p, "wb") as f:
            h = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
            f.write(struct.pack("<Q", len(h)) + h + b"\0" * 8)
        with self.assertRaisesRegex(WeightsFormatError, "truncated"):
            load_file(p)
        with open(p, "wb") as f:
            h = json.dumps({"w": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]}}).encode()
            f.write(struct.pack("<Q", len(h)) + h + b"\0" * 4)
        with self.assertRaisesRegex(WeightsFormatError, "I8"):
            load_file(p)
        with self.assertRaisesRegex(WeightsFormatError, "no \\*.safetensors"):
            load_dir(os.path.join(self.tmp.name, "empty"))


if __name__ == "__main__":
    unittest.main()
