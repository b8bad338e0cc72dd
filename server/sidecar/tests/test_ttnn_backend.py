"""The ttnn backend without ttnn: it imports cleanly, fails with a typed, actionable error,
and its decode-row packing (the one-pass verify formulation) is right."""

import unittest

try:
    import torch
except ImportError as e:
    raise unittest.SkipTest(f"/usr/bin/python3 cannot import torch ({e}); install python3-torch to run the sidecar tests")

from duet_sidecar.config import parse_config
from duet_sidecar.ttnn_backend import TtnnRunner, TtnnUnavailableError, pack_decode_rows

from .util import tiny_config


class TtnnBackendTest(unittest.TestCase):
    def test_clear_error_without_ttnn(self):
        try:
            import ttnn  # noqa: F401
            self.skipTest("ttnn is installed here; this test covers hosts without it")
        except ImportError:
            pass
        with self.assertRaisesRegex(TtnnUnavailableError, "--backend torch"):
            TtnnRunner("/nonexistent", parse_config(tiny_config()))

    def test_pack_rows_one_pass_and_straddling(self):
        tables = [torch.full((3,), 10 + b, dtype=torch.int32) for b in range(4)]
        pad = torch.full((3,), 99, dtype=torch.int32)
        starts = [5, 0, 17, 2]
        tokens = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [10, 11]]
        (p,) = pack_decode_rows(starts, tokens, tables, 32, pad)
        self.assertEqual(len(p.owners), 11)
        self.assertEqual(p.tokens[:11].tolist(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
        self.assertEqual(p.positions[:11].tolist(), [5, 6, 7, 0, 17, 18, 19, 20, 21, 2, 3])
        self.assertEqual(p.page_table[:11, 0].tolist(), [10, 10, 10, 11, 12, 12, 12, 12, 12, 13, 13])
        self.assertTrue(bool((p.page_table[11:] == 99).all()))
        self.assertTrue(bool((p.positions[11:] == 0).all()))
        # batch 4: session 2 straddles passes, its earlier offsets in the earlier pass
        passes = pack_decode_rows(starts, tokens, tables, 4, pad)
        self.assertEqual([len(q.owners) for q in passes], [4, 4, 3])
        order = [o for q in passes for o in q.owners]
        self.assertEqual(order, [(b, t) for b in range(4) for t in range(len(tokens[b]))])


if __name__ == "__main__":
    unittest.main()
