#!/usr/bin/env python3
"""Python side of the [peer] parity tests (tests/test_builtin_peer.cpp).

Builds the default experiment exactly as grok_reference.py does (data split,
model, AdamW, float64 loss) and writes, under OUT:
  split_<seed>.bin       int64 [n_train, 3] train inputs for each --split-seeds seed
  init/<name>.bin        float32 initial parameters, under groklab's names
  logits0.bin            float32 [n_train, p+1] logits of the train split at init
  losses.bin             float64 [steps] training loss before each AdamW update
  final/<name>.bin       float32 parameters after --steps updates
All raw little-endian, C order.

The Model class and lecun_ are copied from grok_reference.py (groklab's peer
baseline, /work/shared/peers/grok_reference.py) unchanged except for
formatting, so the repository does not depend on the peers directory.
"""
import argparse, math, os, random

import torch
import torch.nn as nn
import torch.nn.functional as F


# --- copied from grok_reference.py -------------------------------------------
def lecun_(w):
    std = 1 / math.sqrt(w.size(1))
    nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)


class Model(nn.Module):
    def __init__(self, p, d=128, heads=4, d_ff=512):
        super().__init__()
        self.emb = nn.Embedding(p + 1, d)
        nn.init.normal_(self.emb.weight, std=(1 / d) ** 0.5)
        self.pos = nn.Parameter(torch.randn(3, d) * 0.02)
        self.attn = nn.MultiheadAttention(d, heads, bias=False, batch_first=True)
        self.ln_mlp = nn.LayerNorm(d, eps=0.0)
        self.fc1, self.fc2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)
        for lin in (self.attn.out_proj, self.fc1, self.fc2):
            lecun_(lin.weight)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)
        self.readout = nn.Parameter(torch.randn(d, p + 1) * (1 / d) ** 0.5)

    def forward(self, x):
        h = self.emb(x) + self.pos
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = h + self.fc2(F.relu(self.fc1(self.ln_mlp(h))))
        return h[:, -1] @ self.readout
# ------------------------------------------------------------------------------


def split(p, fraction, seed):
    """grok_reference.py's data: pairs (i, j) row-major, random.Random(seed).shuffle."""
    pairs = [(i, j) for i in range(p) for j in range(p)]
    random.Random(seed).shuffle(pairs)
    n_train = int(fraction * len(pairs))
    data = torch.tensor([[i, j, p] for i, j in pairs])
    labels = (data[:, 0] + data[:, 1]) % p
    return data[:n_train], labels[:n_train]


def groklab_state(model):
    """The model's parameters under groklab's transformer names."""
    d = model.pos.size(1)
    w = model.attn.in_proj_weight.detach()
    return {
        "embed.weight": model.emb.weight, "pos": model.pos,
        "blocks.0.attn.q_proj.weight": w[:d], "blocks.0.attn.k_proj.weight": w[d:2 * d],
        "blocks.0.attn.v_proj.weight": w[2 * d:],
        "blocks.0.attn.out_proj.weight": model.attn.out_proj.weight,
        "blocks.0.ln_mlp.weight": model.ln_mlp.weight, "blocks.0.ln_mlp.bias": model.ln_mlp.bias,
        "blocks.0.mlp.fc1.weight": model.fc1.weight, "blocks.0.mlp.fc1.bias": model.fc1.bias,
        "blocks.0.mlp.fc2.weight": model.fc2.weight, "blocks.0.mlp.fc2.bias": model.fc2.bias,
        "readout": model.readout,
    }


def dump(t, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(t.detach().contiguous().numpy().tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--p", type=int, default=113)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--split-seeds", type=int, nargs="*", default=[0, 1])
    a = ap.parse_args()

    torch.set_num_threads(1)
    for s in a.split_seeds:
        dump(split(a.p, 0.3, s)[0], os.path.join(a.out, f"split_{s}.bin"))

    torch.manual_seed(a.seed)
    xtr, ytr = split(a.p, 0.3, a.seed)
    model = Model(a.p)
    for name, t in groklab_state(model).items():
        dump(t, os.path.join(a.out, "init", name + ".bin"))
    with torch.no_grad():
        dump(model(xtr), os.path.join(a.out, "logits0.bin"))

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0)
    losses = []
    for _ in range(a.steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xtr).double(), ytr)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    dump(torch.tensor(losses, dtype=torch.float64), os.path.join(a.out, "losses.bin"))
    for name, t in groklab_state(model).items():
        dump(t, os.path.join(a.out, "final", name + ".bin"))


if __name__ == "__main__":
    main()
