#!/usr/bin/env python3
"""An independent reading of what `stlm-run export` writes, in NumPy only:
a GGUF parser and a safetensors parser of its own, and a llama forward pass
in each format's own convention -- llama.cpp's (adjacent RoPE pairs, GGUF
dimensions fastest first) and transformers' (rotate_half) -- so that the
exported weights are checked by what the formats mean, not by our code.

  llama_check.py gguf-dump FILE              metadata and tensors, one a line
  llama_check.py generate gguf FILE PROMPT N greedy continuation (bytes)
  llama_check.py generate hf DIR PROMPT N    the same from a transformers dir
  llama_check.py compare FILE_A FILE_B LIMIT the largest difference of any
                                             tensor of two GGUF files, relative
                                             to that tensor's largest value;
                                             exit 1 above LIMIT
  llama_check.py q4-check Q4_FILE F32_FILE   every Q4_0 tensor of Q4_FILE is
                                             F32_FILE's quantized by ggml's
                                             Q4_0 rule, value for value
"""
import json
import struct
import sys

import numpy as np

GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i",
                6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("<Q")
        s = self.data[self.at:self.at + n].decode("utf-8")
        self.at += n
        return s

    def value(self, t):
        if t == 8:
            return self.string()
        if t == 9:
            et, n = self.take("<I"), self.take("<Q")
            return [self.value(et) for _ in range(n)]
        return self.take(GGUF_SCALARS[t])


def read_gguf(path):
    data = open(path, "rb").read()
    r = Reader(data)
    assert data[:4] == b"GGUF", "not a GGUF file"
    r.at = 4
    version, n_tensors, n_kv = r.take("<I"), r.take("<Q"), r.take("<Q")
    meta = {"version": version}
    for _ in range(n_kv):
        k = r.string()
        meta[k] = r.value(r.take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        ne = [r.take("<Q") for _ in range(r.take("<I"))]
        infos.append((name, ne, r.take("<I"), r.take("<Q")))
    align = meta.get("general.alignment", 32)
    base = (r.at + align - 1) // align * align
    tensors = {}
    for name, ne, t, off in infos:
        shape = list(reversed(ne))
        n = int(np.prod(ne))
        at = base + off
        if t == 0:
            x = np.frombuffer(data, np.float32, n, at)
        elif t == 1:
            x = np.frombuffer(data, np.float16, n, at).astype(np.float32)
        elif t == 8:
            blocks = np.frombuffer(data, np.uint8, n // 32 * 34, at)
            blocks = blocks.reshape(-1, 34)
            d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
            q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
            x = (d * q).reshape(-1)
        elif t == 2:  # Q4_0: f16 d, 16 bytes: values 0-15 low, 16-31 high
            blocks = np.frombuffer(data, np.uint8, n // 32 * 18, at)
            blocks = blocks.reshape(-1, 18)
            d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
            qs = blocks[:, 2:]
            q = np.concatenate([qs & 15, qs >> 4], axis=1).astype(np.float32)
            x = (d * (q - 8)).reshape(-1)
        else:
            raise SystemExit("unknown ggml type %d of %s" % (t, name))
        tensors[name] = (x.reshape(shape).astype(np.float64), t)
    return meta, tensors


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack_from("<Q", data, 0)[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b],
                                  np.float32).reshape(info["shape"]).astype(
                                      np.float64)
    return out


def rmsnorm(x, g, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def forward(ids, w, cfg, rope):
    """Logits of the last position. `w` maps role names to arrays:
    emb, head, norm, and per layer l: (l, role)."""
    T, H, K, hd = len(ids), cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    x = w["emb"][ids]
    pos = np.arange(T)[:, None]
    inv = cfg["theta"] ** (-np.arange(0, hd, 2) / hd)
    ang = pos * inv[None, :]  # [T, hd/2]
    cos, sin = np.cos(ang), np.sin(ang)

    def rotate(v):  # v: [T, heads, hd]
        if rope == "adjacent":  # llama.cpp: pairs (2i, 2i + 1)
            a, b = v[..., 0::2], v[..., 1::2]
            c, s = cos[:, None, :], sin[:, None, :]
            out = np.empty_like(v)
            out[..., 0::2] = a * c - b * s
            out[..., 1::2] = a * s + b * c
            return out
        # transformers: rotate_half, pairs (i, i + hd/2)
        c = np.concatenate([cos, cos], -1)[:, None, :]
        s = np.concatenate([sin, sin], -1)[:, None, :]
        half = np.concatenate([-v[..., hd // 2:], v[..., :hd // 2]], -1)
        return v * c + half * s

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(cfg["layers"]):
        h = rmsnorm(x, w[(l, "attn_norm")], cfg["eps"])
        q = rotate((h @ w[(l, "wq")].T).reshape(T, H, hd))
        k = rotate((h @ w[(l, "wk")].T).reshape(T, K, hd))
        v = (h @ w[(l, "wv")].T).reshape(T, K, hd)
        att = np.empty((T, H, hd))
        for head in range(H):
            j = head // (H // K)
            s = q[:, head] @ k[:, j].T / np.sqrt(hd) + mask
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            att[:, head] = p @ v[:, j]
        x = x + att.reshape(T, H * hd) @ w[(l, "wo")].T
        h = rmsnorm(x, w[(l, "ffn_norm")], cfg["eps"])
        g = h @ w[(l, "w1")].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ w[(l, "w3")].T)) @ w[(l, "w2")].T
    return rmsnorm(x[-1], w["norm"], cfg["eps"]) @ w["head"].T


def load_gguf_model(path):
    meta, t = read_gguf(path)
    assert meta["general.architecture"] == "llama"
    cfg = {"layers": meta["llama.block_count"],
           "heads": meta["llama.attention.head_count"],
           "kv_heads": meta["llama.attention.head_count_kv"],
           "head_dim": meta["llama.rope.dimension_count"],
           "theta": meta["llama.rope.freq_base"],
           "eps": meta["llama.attention.layer_norm_rms_epsilon"]}
    roles = {"attn_norm": "attn_norm", "attn_q": "wq", "attn_k": "wk",
             "attn_v": "wv", "attn_output": "wo", "ffn_norm": "ffn_norm",
             "ffn_gate": "w1", "ffn_up": "w3", "ffn_down": "w2"}
    w = {"emb": t["token_embd.weight"][0],
         "norm": t["output_norm.weight"][0]}
    w["head"] = t["output.weight"][0] if "output.weight" in t else w["emb"]
    for name, (x, _) in t.items():
        if name.startswith("blk."):
            _, l, role, _ = name.split(".")
            w[(int(l), roles[role])] = x
    # The byte vocabulary: token i is byte i (U+2581 for the space).
    toks = meta["tokenizer.ggml.tokens"]
    for i, piece in enumerate(toks):
        want = "\u2581" if i == 32 else "<0x%02X>" % i
        assert piece == want, (i, piece)
    return cfg, w


def load_hf_model(path):
    c = json.load(open(path + "/config.json"))
    assert c["architectures"] == ["LlamaForCausalLM"]
    cfg = {"layers": c["num_hidden_layers"],
           "heads": c["num_attention_heads"],
           "kv_heads": c["num_key_value_heads"],
           "head_dim": c.get("head_dim",
                             c["hidden_size"] // c["num_attention_heads"]),
           "theta": c["rope_theta"], "eps": c["rms_norm_eps"]}
    t = read_safetensors(path + "/model.safetensors")
    roles = {"input_layernorm": "attn_norm", "self_attn.q_proj": "wq",
             "self_attn.k_proj": "wk", "self_attn.v_proj": "wv",
             "self_attn.o_proj": "wo", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "w1", "mlp.up_proj": "w3",
             "mlp.down_proj": "w2"}
    w = {"emb": t["model.embed_tokens.weight"], "norm": t["model.norm.weight"]}
    w["head"] = w["emb"] if c["tie_word_embeddings"] else t["lm_head.weight"]
    for name, x in t.items():
        if name.startswith("model.layers."):
            parts = name.split(".")
            w[(int(parts[2]), roles[".".join(parts[3:-1])])] = x
    return cfg, w


def main():
    cmd = sys.argv[1]
    if cmd == "gguf-dump":
        meta, t = read_gguf(sys.argv[2])
        for k in sorted(meta):
            v = meta[k]
            if isinstance(v, list):
                v = "[%d items] %s ..." % (len(v), v[:3])
            print("%s = %s" % (k, v))
        for name in t:
            x, ty = t[name]
            print("tensor %s %s type %d" % (name, list(x.shape), ty))
    elif cmd == "generate":
        kind, path, prompt, n = sys.argv[2:6]
        cfg, w = (load_gguf_model if kind == "gguf" else load_hf_model)(path)
        ids = list(prompt.encode())
        out = []
        for _ in range(int(n)):
            logits = forward(ids, w, cfg,
                             "adjacent" if kind == "gguf" else "halves")
            ids.append(int(np.argmax(logits)))
            out.append(ids[-1])
        sys.stdout.buffer.write(bytes(out))
    elif cmd == "compare":
        _, a = read_gguf(sys.argv[2])
        _, b = read_gguf(sys.argv[3])
        assert a.keys() == b.keys()
        worst = max(np.abs(a[k][0] - b[k][0]).max() /
                    max(np.abs(b[k][0]).max(), 1e-30) for k in a)
        print("largest relative difference %.2e" % worst)
        if worst > float(sys.argv[4]):
            raise SystemExit("above the limit %s" % sys.argv[4])
    elif cmd == "q4-check":
        # Q4_0 per block of 32, in float32 as ggml computes it: m the value
        # of largest magnitude (the first such), d = m / -8, q = min(15,
        # trunc(x / d + 8.5)), stored d as f16; value = d16 * (q - 8).
        _, q4 = read_gguf(sys.argv[2])
        _, f32 = read_gguf(sys.argv[3])
        checked = 0
        for name, (x, ty) in q4.items():
            if ty != 2:
                continue
            w = f32[name][0].astype(np.float32).reshape(-1, 32)
            m = w[np.arange(len(w)), np.abs(w).argmax(axis=1)]
            d = m / np.float32(-8)
            inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1),
                           np.float32(0)).astype(np.float32)
            q = np.minimum(15, (w * inv[:, None] + np.float32(8.5))
                           .astype(np.int32))
            want = (d.astype(np.float16).astype(np.float32)[:, None] *
                    (q - 8).astype(np.float32))
            got = x.reshape(-1, 32)
            if not np.array_equal(want.astype(np.float64), got):
                bad = np.argwhere(want != got)[0]
                raise SystemExit("%s: block %d value %d is %r, Q4_0 gives %r"
                                 % (name, bad[0], bad[1], got[tuple(bad)],
                                    want[tuple(bad)]))
            checked += 1
        print("%d Q4_0 tensors as ggml's rule gives" % checked)
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main()
