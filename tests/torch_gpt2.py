"""An independent GPT-2 in PyTorch (float64) for `deno task gradcheck` to be compared against.

usage: torch_gpt2.py WEIGHTS.safetensors TOKENS.json OUT.safetensors STEPS LR WEIGHT_DECAY
Writes loss, grad.<name>, and with STEPS > 0 losses and param.<name>, under gradcheck's names.
"""
import json
import math
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        assert entry["dtype"] == "F32", entry["dtype"]
        begin, end = entry["data_offsets"]
        array = np.frombuffer(body[begin:end], dtype="<f4").reshape(entry["shape"])
        tensors[name] = torch.tensor(array, dtype=torch.float64)
    return tensors


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name, tensor in tensors.items():
        raw = tensor.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def gpt2_loss(p, config, inputs, targets):
    C, NH, L = config["n_embd"], config["n_head"], config["n_layer"]
    B, T = inputs.shape
    x = p["wte.weight"][inputs] + p["wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        h = lambda name: p[f"h.{l}.{name}"]
        a = F.layer_norm(x, (C,), h("ln_1.weight"), h("ln_1.bias"), 1e-5)
        q, k, v = (a @ h("attn.c_attn.weight") + h("attn.c_attn.bias")).split(C, dim=2)
        q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // NH)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ h("attn.c_proj.weight") + h("attn.c_proj.bias")
        m = F.layer_norm(x, (C,), h("ln_2.weight"), h("ln_2.bias"), 1e-5)
        m = F.gelu(m @ h("mlp.c_fc.weight") + h("mlp.c_fc.bias"), approximate="tanh")
        x = x + m @ h("mlp.c_proj.weight") + h("mlp.c_proj.bias")
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], 1e-5)
    logits = x @ p["wte.weight"].T
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main(weights, tokens, out, steps, lr, weight_decay):
    batch = json.load(open(tokens))
    config = batch["config"]
    inputs, targets = torch.tensor(batch["inputs"]), torch.tensor(batch["targets"])
    params = {name: t.requires_grad_() for name, t in read_safetensors(weights).items()}
    loss = gpt2_loss(params, config, inputs, targets)
    loss.backward()
    result = {"loss": loss.detach().reshape(())}
    result.update({f"grad.{name}": t.grad.clone() for name, t in params.items()})
    if steps > 0:
        optimizer = torch.optim.AdamW(params.values(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay)
        losses = []
        for _ in range(steps):
            optimizer.zero_grad()
            step_loss = gpt2_loss(params, config, inputs, targets)
            step_loss.backward()
            optimizer.step()
            losses.append(step_loss.item())
        result["losses"] = torch.tensor(losses)
        result.update({f"param.{name}": t.detach() for name, t in params.items()})
    write_safetensors(out, result)


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]))
