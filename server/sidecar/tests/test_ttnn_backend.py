"""The ttnn backend without ttnn: it imports cleanly, fails with a typed, actionable error,
and its decode-row planning is right: the split-update step (all rows in one step, one cache
write per row rank) and the single-decode steps (one row per session per step). The backend
on a fake card is tested in test_ttnn_fake.py."""

import unittest

try:
    import torch
except ImportError as e:
    raise unittest.SkipTest(f"/usr/bin/python3 cannot import torch ({e}); install python3-torch to run the sidecar tests")

from duet_sidecar.config import parse_config
from duet_sidecar.ttnn_backend import TtnnRunner, TtnnUnavailableError, pack_decode_rows, pack_single_decodes

from .util import tiny_config


class TtnnBackendTest(unittest.TestCase):
    def test_clear_error_without_ttnn(self):
        try:
            import ttnn  # noqa: F401
            self.skipTest("ttnn is installed here; this test covers hosts without it")
        except ImportError:
            pass
        with self.assertRaisesRegex(TtnnUnavailableError, "--backend torch"):
            TtnnRunner("/nonexistent", parse_config(tiny_config()), max_context=256)

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

        # one cache write per row rank: rank g holds each session's g-th row of the step, -1 elsewhere
        self.assertEqual(p.groups, [[0, 3, 4, 9], [1, 5, 10], [2, 6], [7], [8]])
        upd = p.update_positions()
        self.assertEqual(upd[0][:11].tolist(), [5, -1, -1, 0, 17, -1, -1, -1, -1, 2, -1])
        self.assertEqual(upd[4][:11].tolist(), [-1] * 8 + [21, -1, -1])
        self.assertTrue(all(bool((u[11:] == -1).all()) for u in upd))  # pad rows never write
        # a straddling session restarts its ranks in the later step (session 2: offsets 0..3, then 4)
        self.assertEqual([q.groups for q in passes[1:]], [[[0], [1], [2], [3]], [[0, 1], [2]]])

    def test_single_decodes_one_row_per_session_per_step(self):
        tables = [torch.full((3,), 10 + b, dtype=torch.int32) for b in range(3)]
        pad = torch.full((3,), 99, dtype=torch.int32)
        steps = pack_single_decodes([5, 0, 17], [[1, 2, 3], [4], [5, 6]], tables, 32, pad)
        self.assertEqual([s.owners for s in steps], [[(0, 0), (1, 0), (2, 0)], [(0, 1), (2, 1)], [(0, 2)]])
        self.assertEqual(steps[1].positions[:2].tolist(), [6, 18])
        self.assertTrue(all(len(s.groups) == 1 for s in steps))


if __name__ == "__main__":
    unittest.main()
