"""HF-format export of a trained tiny model: safetensors written by hand (u64 little-endian
header length + JSON header + raw little-endian tensor bytes; the `safetensors` package is not
in Debian), config.json, generation_config.json, the tokenizer files, and a PyTorch-logits
fixture that the TypeScript engines are checked against."""
import json
import os
import shutil
import struct

import torch

DTYPES = {"bf16": (torch.bfloat16, "BF16", "bfloat16"), "f16": (torch.float16, "F16", "float16"),
          "f32": (torch.float32, "F32", "float32")}


def hf_state(m):
    """HF tensor names -> tensors; tied lm_head is not stored (as HF does for tied models)."""
    return {k: v.detach().contiguous() for k, v in m.state_dict().items() if k.startswith("model.")}


def save_safetensors(tensors, path, dtype, metadata=None):
    tdt, tag, _ = DTYPES[dtype]
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        t = tensors[name].to(tdt).contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if tdt != torch.float32 else t.numpy().tobytes()
        header[name] = {"dtype": tag, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # keep the data 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    """Reader used to check our own writer; returns f32 tensors."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        tdt = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}[h["dtype"]]
        buf = bytearray(data[a:b])
        t = torch.frombuffer(buf, dtype=torch.int16 if tdt != torch.float32 else torch.float32)
        out[name] = (t.view(tdt) if tdt != torch.float32 else t).reshape(h["shape"]).float()
    return out


def load_weights(m, d):
    """Load a model folder's model.safetensors into m (HF names; only inv_freq may be missing)."""
    sd = load_safetensors(os.path.join(d, "model.safetensors"))
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected and not [k for k in missing if k != "inv_freq"], (missing, unexpected)
    return m


def load_rounded(m, dtype):
    """A copy of m whose weights are exactly what the export stores (rounded to dtype, as f32)."""
    import copy
    m2 = copy.deepcopy(m)
    with torch.no_grad():
        for p in m2.parameters():
            p.copy_(p.to(DTYPES[dtype][0]).float())
    return m2.eval()


def hf_config(c, dtype, bos, eos):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False, "hidden_act": "silu",
        "bos_token_id": bos, "eos_token_id": eos,
        "head_dim": c.head_dim, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "initializer_range": 0.02, "max_position_embeddings": c.max_position_embeddings,
        "num_attention_heads": c.num_attention_heads, "num_hidden_layers": c.num_hidden_layers,
        "num_key_value_heads": c.num_key_value_heads, "pretraining_tp": 1, "rms_norm_eps": c.rms_norm_eps,
        "rope_scaling": dict(c.rope_scaling), "rope_theta": c.rope_theta, "tie_word_embeddings": True,
        "torch_dtype": DTYPES[dtype][2], "transformers_version": "4.45.0", "use_cache": True,
        "vocab_size": c.vocab_size,
    }


def write_model_dir(m, d, dtype, tok_dir):
    import bpe
    os.makedirs(d, exist_ok=True)
    tok = bpe.Tokenizer.load(tok_dir)
    bos, eos = tok.vocab["<|begin_of_text|>"], [tok.vocab["<|end_of_text|>"], tok.vocab["<|eot_id|>"]]
    save_safetensors(hf_state(m), os.path.join(d, "model.safetensors"), dtype, {"format": "pt"})
    back = load_safetensors(os.path.join(d, "model.safetensors"))
    for k, v in hf_state(m).items():
        assert torch.equal(back[k], v.to(DTYPES[dtype][0]).float()), k
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(m.c, dtype, bos, eos), f, indent=2)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos, "do_sample": True, "temperature": 0.6,
                   "top_p": 0.9, "transformers_version": "4.45.0"}, f, indent=2)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, fn), os.path.join(d, fn))


def write_logits_fixture(m, tokens, path, model_dir):
    """Logits of m (the exported weights in f32) at every position of `tokens`: full rows at
    the first, middle and last position; argmax and top-2 gap everywhere."""
    with torch.no_grad():
        logits = m(torch.tensor([tokens]))[0].double()
    n = len(tokens)
    full = [0, n // 2, n - 1]
    top2 = logits.topk(2, -1).values
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"model": os.path.basename(os.path.normpath(model_dir)),
                   "tokens": tokens, "vocab": logits.shape[1], "argmax": logits.argmax(-1).tolist(),
                   "top2_gap": [float(f"{g:.7g}") for g in (top2[:, 0] - top2[:, 1]).tolist()],
                   "full_positions": full,
                   "logits": [[float(f"{v:.7g}") for v in logits[i].tolist()] for i in full]}, f)
