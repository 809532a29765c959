#!/usr/bin/python3
"""The PyTorch peer of bench/ref3m.sh: the same model as an stlm spec
(token embedding tied to the head, RMSNorm, RoPE, causal multi-head
attention, GELU or SwiGLU FFN), the same batch, AdamW with decay on matrices
and global-norm clipping. Times training steps, forward passes (loss only,
no_grad) and KV-cached generation; prints one JSON object.

    /usr/bin/python3 bench/torch_model.py SPEC.json --threads 2 --steps 20

Run it through bench/ref3m.sh, which sets the environment a fair
comparison needs (OPENBLAS_CORETYPE unset, OMP_WAIT_POLICY=passive).
"""
import argparse
import contextlib
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F


class LoRA(torch.nn.Module):
    """A shared linear layer plus this layer's own rank-r delta x·aᵀ·bᵀ
    (MODEL_SPEC's tying.lora_rank)."""

    def __init__(self, shared, r):
        super().__init__()
        self.shared = shared
        self.a = torch.nn.Linear(shared.in_features, r, bias=False)
        self.b = torch.nn.Linear(r, shared.out_features, bias=False)

    def forward(self, x):
        return self.shared(x) + self.b(self.a(x))


class Block(torch.nn.Module):
    def __init__(self, c, shared=None, lora=0):
        """`shared`: {"wo", "w1", "w3", "w2"} -> a Linear shared with other
        layers (MODEL_SPEC's tying); `lora` > 0 adds this layer's deltas."""
        super().__init__()
        shared = shared or {}
        w, h, kv = c["width"], c["heads"], c.get("kv_heads", c["heads"])
        self.h, self.kv, self.hd = h, kv, w // h
        self.attn_norm = torch.nn.Parameter(torch.ones(w))
        self.wq = torch.nn.Linear(w, w, bias=False)
        self.wk = torch.nn.Linear(w, kv * self.hd, bias=False)
        self.wv = torch.nn.Linear(w, kv * self.hd, bias=False)
        self.ffn_norm = torch.nn.Parameter(torch.ones(w))
        self.swiglu = c["ffn"] == "swiglu"

        def linear(name, i, o):
            if name in shared:
                return LoRA(shared[name], lora) if lora else shared[name]
            return torch.nn.Linear(i, o, bias=False)

        self.wo = linear("wo", w, w)
        self.w1 = linear("w1", w, c["ffn_width"])
        if self.swiglu:
            self.w3 = linear("w3", w, c["ffn_width"])
        self.w2 = linear("w2", c["ffn_width"], w)

    def forward(self, x, cos, sin, cache=None, pos=0):
        b, t, w = x.shape
        h = rmsnorm(x, self.attn_norm)
        q = self.wq(h).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.wk(h).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.wv(h).view(b, t, self.kv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if cache is not None:
            cache[0][:, :, pos:pos + t], cache[1][:, :, pos:pos + t] = k, v
            k, v = cache[0][:, :, :pos + t], cache[1][:, :, :pos + t]
        if self.kv != self.h:
            k = k.repeat_interleave(self.h // self.kv, dim=1)
            v = v.repeat_interleave(self.h // self.kv, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        n = k.shape[2]
        mask = torch.ones(t, n, dtype=torch.bool).tril(diagonal=n - t)
        s = s.masked_fill(~mask, float("-inf"))
        y = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, w)
        x = x + self.wo(y)
        h = rmsnorm(x, self.ffn_norm)
        a = F.silu(self.w1(h)) * self.w3(h) if self.swiglu else F.gelu(self.w1(h))
        return x + self.w2(a)


def rmsnorm(x, g, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g


def rope(x, cos, sin):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


class Model(torch.nn.Module):
    def __init__(self, spec):
        super().__init__()
        c = spec["core"]
        self.c = c
        vocab, w, f = spec["embedder"].get("vocab_size", 256), c["width"], c["ffn_width"]
        self.embed = torch.nn.Embedding(vocab, w)
        # Tying (MODEL_SPEC): FFN and/or attention output weights shared by
        # all layers or the interior ones [k, L - k), each with its own
        # LoRA delta when lora_rank > 0; the head tied to the embedding or
        # its own.
        ty, n = spec.get("tying", {}), c["layers"]
        keep, lora = ty.get("interior_keep", 1), ty.get("lora_rank", 0)
        shares = {
            "attn_out": lambda l: ty.get("attn_out", "none") == "all" or (
                ty.get("attn_out") == "interior" and keep <= l < n - keep),
            "ffn": lambda l: ty.get("ffn", "none") == "all" or (
                ty.get("ffn") == "interior" and keep <= l < n - keep)}
        self.shared = torch.nn.ModuleDict()
        if ty.get("attn_out", "none") != "none":
            self.shared["wo"] = torch.nn.Linear(w, w, bias=False)
        if ty.get("ffn", "none") != "none":
            self.shared["w1"] = torch.nn.Linear(w, f, bias=False)
            if c["ffn"] == "swiglu":
                self.shared["w3"] = torch.nn.Linear(w, f, bias=False)
            self.shared["w2"] = torch.nn.Linear(f, w, bias=False)
        layers = []
        for l in range(n):
            mine = {}
            if shares["attn_out"](l):
                mine["wo"] = self.shared["wo"]
            if shares["ffn"](l):
                mine.update({k: self.shared[k] for k in ("w1", "w3", "w2")
                             if k in self.shared})
            layers.append(Block(c, mine, lora if mine else 0))
        self.layers = torch.nn.ModuleList(layers)
        self.norm = torch.nn.Parameter(torch.ones(w))
        self.head = None if ty.get("embed_head", False) else \
            torch.nn.Linear(w, vocab, bias=False)
        hd = w // c["heads"]
        theta = c.get("rope_theta", 10000.0)
        inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.arange(c["context"]).float()[:, None] * inv[None, :]
        self.cos, self.sin = ang.cos(), ang.sin()

    def forward(self, ids, caches=None, pos=0):
        t = ids.shape[1]
        cos, sin = self.cos[pos:pos + t], self.sin[pos:pos + t]
        x = self.embed(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, None if caches is None else caches[i], pos)
        x = rmsnorm(x, self.norm)
        return self.head(x) if self.head is not None else x @ self.embed.weight.t()


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def median_ms(fn, steps):
    for _ in range(3):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--generate", type=int, default=128)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    spec = json.load(open(a.spec))
    tr = spec.get("train", {})
    model = Model(spec)
    b, t = tr.get("batch", 16), spec["core"]["context"]
    ids = torch.randint(0, 256, (b, t))
    tgt = torch.randint(0, 256, (b, t))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tr.get("weight_decay", 0.1)},
         {"params": other, "weight_decay": 0.0}],
        lr=tr.get("lr", 1e-3), betas=tuple(tr.get("betas", [0.9, 0.99])), eps=1e-8)

    # train.precision: bf16 as PyTorch users run it on a CPU: autocast to
    # bfloat16 (oneDNN's bf16 matmuls where the CPU has them), fp32 master
    # weights and optimizer.
    bf16 = tr.get("precision", "fp32") == "bf16"

    def cast():
        return (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())

    def train_step():
        with cast():
            logits = model(ids)
        loss = F.cross_entropy(logits.float().view(-1, 256), tgt.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tr.get("grad_clip", 1.0))
        opt.step()

    def forward():
        with torch.no_grad(), cast():
            F.cross_entropy(model(ids).float().view(-1, 256), tgt.view(-1))

    train_ms = median_ms(train_step, a.steps)
    forward_ms = median_ms(forward, a.steps)

    # Greedy generation with a KV cache, one sequence, from a 1-byte prompt
    # (median of 5 after one warm-up).
    c = spec["core"]
    kv, hd = c.get("kv_heads", c["heads"]), c["width"] // c["heads"]
    n = min(a.generate, t)

    def generate():
        with torch.no_grad(), cast():
            caches = [(torch.zeros(1, kv, t, hd), torch.zeros(1, kv, t, hd))
                      for _ in range(c["layers"])]
            tok = torch.tensor([[10]])
            for pos in range(n):
                tok = model(tok, caches, pos)[:, -1].argmax(-1, keepdim=True)

    generate()
    gen_ms = statistics.median(
        [timed(generate) for _ in range(5)])

    # Sanity of the peer's BLAS: a [1024, 256] x [256, 1024] matmul.
    x, y = torch.randn(1024, 256), torch.randn(256, 1024)
    mm_ms = median_ms(lambda: x @ y, 20)
    print(json.dumps({
        "peer": "pytorch " + torch.__version__, "threads": a.threads,
        "precision": "bf16" if bf16 else "fp32",
        "batch": b, "context": t,
        "train_ms": train_ms, "train_bytes_per_s": b * t / train_ms * 1e3,
        "forward_ms": forward_ms, "forward_bytes_per_s": b * t / forward_ms * 1e3,
        "generate_tokens": n, "generate_ms": gen_ms,
        "generate_bytes_per_s": n / gen_ms * 1e3,
        "matmul_gflops": 2 * 1024 * 256 * 1024 / mm_ms / 1e6}))


if __name__ == "__main__":
    main()
