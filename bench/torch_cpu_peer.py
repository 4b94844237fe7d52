"""PyTorch CPU peer of bench/cpu_train_bench.ts and bench/cpu_generate_bench.ts: a nanoGPT-style GPT-2
(pre-LayerNorm blocks, tanh GELU, tied LM head, AdamW) trained on the same three configs, one thread,
fp32; and greedy generation (6 layers x 384, 1 and 8 prompts of 16 tokens, KV cache).

    /usr/bin/python3 bench/torch_cpu_peer.py                   # all three configs + generation
    /usr/bin/python3 bench/torch_cpu_peer.py --config 6x384 --kiln 120.5   # also prints kiln / PyTorch

Debian's python3-torch needs OpenBLAS (libopenblas0-pthread) for its matmuls; the script prints
torch's BLAS so a run on the reference BLAS is not mistaken for PyTorch's speed.
"""

import argparse
import math
import os
import time

# One thread for OpenBLAS and OpenMP too (torch.set_num_threads alone leaves OpenBLAS's pool as it is).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

CONFIGS = {
    "tiny": dict(layers=2, dim=64, heads=4, context=32, vocab=256, B=4, T=32, steps=20),
    "6x384": dict(layers=6, dim=384, heads=6, context=256, vocab=8192, B=4, T=256, steps=5),
    "gpt2": dict(layers=12, dim=768, heads=12, context=1024, vocab=50257, B=1, T=256, steps=3),
}


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def attend(self, x, cache=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
        # nanoGPT's explicit attention (torch 1.13, Debian's, has no scaled_dot_product_attention).
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))
        if T > 1:
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            att = att.masked_fill(~causal, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    def forward(self, x, cache=None):
        x = x + self.attend(self.ln_1(x), cache)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, layers, dim, heads, context, vocab, **_):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(context, dim)
        self.h = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, idx, targets=None, caches=None, start=0):
        pos = torch.arange(start, start + idx.shape[1])
        x = self.wte(idx) + self.wpe(pos)
        for i, block in enumerate(self.h):
            x = block(x, caches[i] if caches is not None else None)
        logits = self.ln_f(x) @ self.wte.weight.t()
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def train_tokens_per_s(name):
    c = CONFIGS[name]
    torch.manual_seed(1)
    model = GPT(**c)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    idx = torch.randint(0, c["vocab"], (c["B"], c["T"]))
    targets = (idx * 31 + 7) % c["vocab"]

    def step():
        loss = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(c["steps"]):
        step()
    ms = (time.perf_counter() - start) * 1000 / c["steps"]
    return c["B"] * c["T"] * 1000 / ms, ms


@torch.no_grad()
def generate_tokens_per_s(rows, new_tokens=64):
    c = CONFIGS["6x384"]
    torch.manual_seed(3)
    model = GPT(**c).eval()
    idx = torch.randint(0, c["vocab"], (rows, 16))
    start = time.perf_counter()
    caches = [[] for _ in model.h]
    logits = model(idx, caches=caches)
    pos = idx.shape[1]
    for _ in range(new_tokens):
        token = logits[:, -1].argmax(-1, keepdim=True)
        logits = model(token, caches=caches, start=pos)
        pos += 1
    return rows * new_tokens / (time.perf_counter() - start)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", action="append", choices=list(CONFIGS))
    parser.add_argument("--kiln", type=float, action="append", help="kiln tokens/s, in --config order")
    parser.add_argument("--no-generate", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = torch.__config__.show()
    blas = next((p.strip() for p in config.replace(",", "\n").splitlines() if "BLAS_INFO" in p), "BLAS_INFO=?")
    libblas = "/usr/lib/x86_64-linux-gnu/libblas.so.3"
    target = os.path.realpath(libblas) if os.path.exists(libblas) else "none"
    print(f"torch {torch.__version__}, 1 thread; {blas}, {libblas} -> {target}")
    for i, name in enumerate(args.config or list(CONFIGS)):
        tps, ms = train_tokens_per_s(name)
        c = CONFIGS[name]
        line = f"pytorch cpu {name} (B{c['B']}xT{c['T']}): {ms:.1f} ms/step, {tps:.1f} tokens/s"
        if args.kiln and i < len(args.kiln):
            line += f"; kiln {args.kiln[i]:.1f} tokens/s = {args.kiln[i] / tps:.2f}x PyTorch"
        print(line, flush=True)
    if not args.no_generate:
        one, eight = generate_tokens_per_s(1), generate_tokens_per_s(8)
        print(f"pytorch cpu greedy 6x384, 64 new tokens, KV cache: 1 prompt {one:.1f} tokens/s, "
              f"8 prompts {eight:.1f} tokens/s ({eight / one:.2f}x)")
