"""Fake tt_transformers Generator: prefill_forward_text and decode_forward_text with the real
signatures, over the fake model. Decode always runs the 32 rows it is given."""

import torch

import ttnn

from .common import get_padded_prefill_len


class Generator:
    def __init__(self, models, model_args, mesh_device, tokenizer=None):
        self.model = models[0]
        self.args = model_args[0]
        self.mesh_device = mesh_device

    def prefill_forward_text(self, tokens, page_table=None, kv_cache=None, prompt_lens=None, empty_slots=None):
        out = []
        for i in range(tokens.shape[0]):
            n = int(prompt_lens[i])
            padded = get_padded_prefill_len(n)
            blocks = -(-padded // self.model.block_size)
            if padded > self.args.max_seq_len or blocks > page_table.shape[1]:
                raise RuntimeError(f"fake tt_transformers: prefill of {n} tokens pads to {padded}, past max_seq_len {self.args.max_seq_len}")
            toks = torch.zeros(padded, dtype=torch.long)
            toks[:n] = tokens[i, :n]
            out.append(self.model.prefill(toks, n, page_table[i], kv_cache[0]))
        ttnn.record("prefill", tokens.shape[0])
        return torch.stack(out)[:, None, :]

    def decode_forward_text(self, tokens, start_pos, page_table=None, kv_cache=None, enable_trace=True,
                            read_from_device=True, sampling_params=None):
        assert tokens.shape[0] == 32 and sampling_params is None
        ttnn.record("decode", enable_trace)
        cur = ttnn.from_torch(start_pos.to(torch.int32), dtype=ttnn.int32)
        table = ttnn.from_torch(page_table.to(torch.int32), dtype=ttnn.int32)
        return self.model.decode(tokens, start_pos, page_table, kv_cache[0], cur, table)[:, None, :]
