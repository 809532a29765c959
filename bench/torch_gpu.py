#!/usr/bin/env python3
"""The PyTorch peer of the CUDA target (bench/cuda.sh runs it beside the
compiled artifact on the same GPU): the model of an stlm spec (token
embedding tied to the head, RMSNorm, RoPE, causal attention through
scaled_dot_product_attention with grouped KV heads, GELU or SwiGLU FFN),
AdamW (fused) with decay on matrices, global-norm clipping, in PyTorch's
three best forms for a training step:

  eager    bf16 autocast (fp32 with --fp32), fused AdamW;
  compile  the same with torch.compile(model);
  graph    the whole eager step (forward, backward, clipping, AdamW)
           captured once as one CUDA graph and replayed, as a user who
           knows the shapes would do by hand (capturable AdamW).

Each is timed as the median of 3 rounds of --steps steps (CUDA-synchronised
around each round); then batch-1 greedy generation with a KV cache (eager,
one token per step, from a 1-token prompt). Prints one JSON object.

    python3 bench/torch_gpu.py SPEC.json [--steps 30] [--generate 256]
        [--forms eager,compile,graph] [--fp32] [--profile] [--attention]

--profile adds, for each form, where its step's device time goes
(torch.profiler over --steps steps: the GPU kernels grouped as matmul,
attention, Triton-fused, elementwise and the rest, ms a step, and the ten
longest kernels) under "<form>_profile". --attention adds PyTorch's
scaled_dot_product_attention alone at the model's training shape (bf16,
causal, grouped kv heads as the model has them): forward and forward +
backward, median µs a layer (CUDA events, fresh random inputs), under
"sdpa".

SPEC.json is the spec as JSON (an artifact's manifest holds it under
"spec"; bench/cuda.sh passes that).
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F


def rmsnorm(x, g, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g


def rope(x, cos, sin):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        w, h, kv = c["width"], c["heads"], c.get("kv_heads", c["heads"])
        self.h, self.kv, self.hd, self.eps = h, kv, w // h, c.get("norm_eps", 1e-6)
        self.attn_norm = torch.nn.Parameter(torch.ones(w))
        self.wq = torch.nn.Linear(w, w, bias=False)
        self.wk = torch.nn.Linear(w, kv * self.hd, bias=False)
        self.wv = torch.nn.Linear(w, kv * self.hd, bias=False)
        self.wo = torch.nn.Linear(w, w, bias=False)
        self.ffn_norm = torch.nn.Parameter(torch.ones(w))
        self.swiglu = c["ffn"] == "swiglu"
        self.w1 = torch.nn.Linear(w, c["ffn_width"], bias=False)
        if self.swiglu:
            self.w3 = torch.nn.Linear(w, c["ffn_width"], bias=False)
        self.w2 = torch.nn.Linear(c["ffn_width"], w, bias=False)

    def forward(self, x, cos, sin, cache=None, pos=0):
        b, t, w = x.shape
        h = rmsnorm(x, self.attn_norm, self.eps)
        q = self.wq(h).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.wk(h).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.wv(h).view(b, t, self.kv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if cache is not None:
            cache[0][:, :, pos:pos + t], cache[1][:, :, pos:pos + t] = k, v
            k, v = cache[0][:, :, :pos + t], cache[1][:, :, :pos + t]
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=cache is None or t > 1,
            enable_gqa=self.kv != self.h)
        x = x + self.wo(y.transpose(1, 2).reshape(b, t, w))
        h = rmsnorm(x, self.ffn_norm, self.eps)
        a = F.silu(self.w1(h)) * self.w3(h) if self.swiglu else F.gelu(self.w1(h))
        return x + self.w2(a)


class Model(torch.nn.Module):
    def __init__(self, spec):
        super().__init__()
        c = spec["core"]
        self.c = c
        self.vocab = spec["embedder"].get("vocab_size", 256)
        self.embed = torch.nn.Embedding(self.vocab, c["width"])
        self.layers = torch.nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = torch.nn.Parameter(torch.ones(c["width"]))
        hd = c["width"] // c["heads"]
        theta = c.get("rope_theta", 10000.0)
        inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.arange(c["context"]).float()[:, None] * inv[None, :]
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, ids, caches=None, pos=0):
        t = ids.shape[1]
        cos, sin = self.cos[pos:pos + t], self.sin[pos:pos + t]
        x = self.embed(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, None if caches is None else caches[i], pos)
        return rmsnorm(x, self.norm, self.c.get("norm_eps", 1e-6)) @ self.embed.weight.t()


def optimizer(model, tr, capturable):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": tr.get("weight_decay", 0.1)},
         {"params": other, "weight_decay": 0.0}],
        lr=tr.get("lr", 1e-3), betas=tuple(tr.get("betas", [0.9, 0.99])),
        eps=tr.get("eps", 1e-8), fused=True, capturable=capturable)


def rounds_ms(fn, steps, rounds=3):
    """Median over `rounds` of the mean step time of `steps` steps."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3 / steps)
    return statistics.median(out)


def kernel_kind(name):
    """The group a profiled GPU kernel's time is counted under."""
    n = name.lower()
    if any(w in n for w in ("flash", "fmha", "attention", "sdpa", "cudnn")):
        return "attention"
    if any(w in n for w in ("gemm", "cutlass", "sm90_xmma", "cublas", "matmul",
                            "xmma", "nvjet", "wgmma")):
        return "matmul"
    if n.startswith("triton") or "triton_" in n:
        return "triton"
    if any(w in n for w in ("elementwise", "vectorized", "reduce", "foreach",
                            "adam", "unrolled")):
        return "elementwise"
    return "other"


def profile_step(fn, steps):
    """Device time of `fn` (one step) by kernel group and its longest
    kernels, ms a step, over `steps` steps after a warm-up."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    groups, kernels = {}, {}
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = e.device_time if hasattr(e, "device_time") else e.cuda_time
        k = kernel_kind(e.name)
        groups[k] = groups.get(k, 0.0) + us
        kernels[e.name] = kernels.get(e.name, 0.0) + us
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:10]
    return {"ms_per_step": {k: round(v / steps / 1e3, 3) for k, v in groups.items()},
            "top": [[name[:90], round(us / steps / 1e3, 3)] for name, us in top]}


def time_sdpa(spec, b, rounds=20):
    """F.scaled_dot_product_attention alone at a training shape (bf16,
    causal): median µs of the forward and of forward + backward."""
    c = spec["core"]
    h, kv, t = c["heads"], c.get("kv_heads", c["heads"]), c["context"]
    hd = c["width"] // h
    dev = torch.device("cuda")

    def inputs():
        q = torch.randn(b, h, t, hd, device=dev, dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(b, kv, t, hd, device=dev, dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(b, kv, t, hd, device=dev, dtype=torch.bfloat16, requires_grad=True)
        return q, k, v, torch.randn(b, h, t, hd, device=dev, dtype=torch.bfloat16)

    def median_us(body):
        times = []
        for i in range(rounds + 3):
            q, k, v, dy = inputs()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            body(q, k, v, dy)
            end.record()
            torch.cuda.synchronize()
            if i >= 3:
                times.append(start.elapsed_time(end) * 1e3)
        return statistics.median(times)

    def fwd(q, k, v, dy):
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv != h)

    def fwd_bwd(q, k, v, dy):
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv != h)
        y.backward(dy)

    f, fb = median_us(fwd), median_us(fwd_bwd)
    flop = 2.0 * b * h * t * t / 2 * hd  # one causal product
    return {"shape": [b, t, h, kv, hd], "forward_us": round(f, 1),
            "forward_tflops": round(2 * flop / f * 1e-6, 1),
            "forward_backward_us": round(fb, 1),
            "backward_tflops": round(5 * flop / (fb - f) * 1e-6, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--generate", type=int, default=256)
    ap.add_argument("--forms", default="eager,compile,graph")
    ap.add_argument("--fp32", action="store_true",
                    help="no bf16 autocast (fp32 matmuls, tf32 off)")
    ap.add_argument("--profile", action="store_true",
                    help="each form's device time by kernel group")
    ap.add_argument("--attention", action="store_true",
                    help="time scaled_dot_product_attention alone")
    a = ap.parse_args()
    spec = json.load(open(a.spec))
    if isinstance(spec, dict) and "spec" in spec and isinstance(spec["spec"], str):
        spec = json.loads(spec["spec"])  # an artifact manifest
    tr = spec.get("train", {})
    dev = torch.device("cuda")
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    b, t = tr.get("batch", 16), spec["core"]["context"]
    clip = tr.get("grad_clip", 1.0)
    bf16 = not a.fp32
    result = {"peer": "pytorch " + torch.__version__,
              "gpu": torch.cuda.get_device_name(), "model": spec["name"],
              "batch": b, "context": t, "bf16_autocast": bf16}

    def make(form):
        model = Model(spec).to(dev)
        V = model.vocab
        ids = torch.randint(0, V, (b, t), device=dev)
        tgt = torch.randint(0, V, (b, t), device=dev)
        run = torch.compile(model) if form == "compile" else model
        opt = optimizer(model, tr, capturable=form == "graph")

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                logits = run(ids)
            loss = F.cross_entropy(logits.float().view(-1, V), tgt.view(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            opt.zero_grad(set_to_none=form != "graph")
            return loss

        if form != "graph":
            return step
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            step()
        return g.replay

    for form in a.forms.split(","):
        t0 = time.perf_counter()
        fn = make(form)
        ms = rounds_ms(fn, a.steps)
        result[form + "_ms"] = ms
        result[form + "_tokens_per_s"] = b * t / ms * 1e3
        result[form + "_setup_s"] = time.perf_counter() - t0
        if a.profile:
            result[form + "_profile"] = profile_step(fn, a.steps)
        torch.cuda.empty_cache()

    if a.attention:
        result["sdpa"] = time_sdpa(spec, b)

    # Batch-1 greedy generation with a KV cache, eager (bf16 autocast).
    model = Model(spec).to(dev).eval()
    c = spec["core"]
    kv, hd = c.get("kv_heads", c["heads"]), c["width"] // c["heads"]
    n = min(a.generate, t)

    def generate():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            caches = [(torch.zeros(1, kv, t, hd, device=dev),
                       torch.zeros(1, kv, t, hd, device=dev))
                      for _ in range(c["layers"])]
            tok = torch.full((1, 1), 10, device=dev, dtype=torch.long)
            for pos in range(n):
                tok = model(tok, caches, pos)[:, -1].argmax(-1, keepdim=True)
            torch.cuda.synchronize()

    generate()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        generate()
        times.append((time.perf_counter() - t0) * 1e3)
    gm = statistics.median(times)
    result.update({"generate_tokens": n, "generate_ms": gm,
                   "generate_tokens_per_s": n / gm * 1e3})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
