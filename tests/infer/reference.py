#!/usr/bin/env python3
"""An independent float64 numpy forward pass: the oracle for Hearth's logits.

Written from the Hugging Face modeling code's definitions (LlamaForCausalLM & co., GPT2LMHeadModel),
not from Hearth's C, so the two agree only if both are right.

    reference.py MODEL_DIR --ids 1,2,3 [-n 32] [--top 5]      prints the same JSON lines as
                                                              `hearth run --dump-logits`
    reference.py GGUF_FILE --hf-config DIR ...                 weights from GGUF (dequantised by the
                                                              gguf package), config from DIR
"""
import argparse
import json
import math
import os

import numpy as np


class Weights(dict):
    """Weights by HF name; `quantised` names the matrices stored in a block type (GGUF Q8_0, Q4_0,
    Q4_K, Q6_K, or --quantize), whose prompt products use quantised activations."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.quantised = {}


def quantize_activations(x, qtype):
    """x (rows × cols) rounded the way llama.cpp (and Hearth's prompt kernels) quantise the
    activations that meet quantised weights in integer products: Q8_0 blocks of 32 (scale amax/127
    stored as f16) for Q8_0 / Q4_0 weights, Q8_K blocks of 256 (scale of the signed extreme / -127,
    f32) for the K-quants; float32 arithmetic, rounding to nearest even."""
    x32 = x.astype(np.float32)
    if qtype in ("Q8_0", "Q4_0"):
        b = x32.reshape(-1, 32)
        d = np.abs(b).max(1, keepdims=True) / np.float32(127)
        inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d > 0)
        q = np.rint(b * inv)
        return (q * d.astype(np.float16).astype(np.float64)).reshape(x.shape)
    b = x32.reshape(-1, 256)
    mx = b[np.arange(len(b)), np.abs(b).argmax(1)][:, None]   # the first extreme, with its sign
    iscale = np.divide(np.float32(-127), mx, out=np.zeros_like(mx), where=mx != 0)
    q = np.minimum(np.rint(iscale * b), 127)
    d = np.divide(np.float32(1), iscale, out=np.zeros_like(iscale), where=iscale != 0)
    return (q * d.astype(np.float64)).reshape(x.shape)


def matmul(x, w, name, prompt, transposed=True):
    """x @ W.T (or x @ W for GPT-2's Conv1D). The prompt's rows are processed as one chunk; when
    there are several and W is quantised, they meet W as quantised activations (a single token,
    as in decoding, stays float)."""
    a = w[name]
    qt = getattr(w, "quantised", {}).get(name)
    if qt and prompt > 1:
        x = x.copy()
        x[:prompt] = quantize_activations(x[:prompt], qt)
    return x @ (a.T if transposed else a)


def load_safetensors_dir(d):
    from safetensors.numpy import load_file
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    w = Weights()
    for f in files:
        path = os.path.join(d, f)
        header_len = int.from_bytes(open(path, "rb").read(8), "little")
        header = json.loads(open(path, "rb").read(8 + header_len)[8:])
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
        for k, v in header.items():
            if k == "__metadata__":
                continue
            b, e = v["data_offsets"]
            chunk = np.array(raw[b:e])
            if v["dtype"] == "BF16":
                a = (chunk.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                a = chunk.view({"F32": np.float32, "F16": np.float16, "I64": np.int64}[v["dtype"]])
            w[k] = a.reshape(v["shape"]).astype(np.float64)
    return w


def load_gguf(path, cfg):
    """Weights from a GGUF file under their HF names, q/k un-permuted for the llama architecture."""
    import gguf
    from make_test_model import gguf_table, unpermute_qk
    r = gguf.GGUFReader(path)
    arch = cfg["model_type"]
    arch = "gemma3" if arch == "gemma3_text" else arch
    table = dict((b, a) for a, b in reversed(gguf_table(arch)))
    w = Weights()
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        shape = [int(x) for x in reversed(t.shape)]
        a = a.reshape(shape)
        name = t.name
        if name.startswith("blk."):
            _, layer, rest = name.split(".", 2)
            hf = table[rest]
            hf = ("h.%s.%s" if arch == "gpt2" else "model.layers.%s.%s") % (layer, hf)
        else:
            hf = table[name]
        if arch in ("llama", "mistral") and hf.endswith("q_proj.weight"):
            a = unpermute_qk(a, cfg["num_attention_heads"])
        if arch in ("llama", "mistral") and hf.endswith("k_proj.weight"):
            a = unpermute_qk(a, cfg["num_attention_heads"], cfg["num_key_value_heads"])
        if arch == "gpt2" and a.ndim == 2 and hf not in ("wte.weight", "wpe.weight"):
            a = a.T  # back to Conv1D [in, out]
        if arch.startswith("gemma") and hf.endswith("norm.weight"):
            a = a - 1  # undo the converter's (1 + w)
        w[hf] = a
        if t.tensor_type.name in ("Q8_0", "Q4_0", "Q4_K", "Q6_K"):
            w.quantised[hf] = t.tensor_type.name
    return w


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def rope_inv_freq(cfg, head_dim):
    inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    rs = cfg.get("rope_scaling")
    if rs:
        t = rs.get("rope_type", rs.get("type"))
        if t == "linear":
            inv = inv / rs["factor"]
        elif t == "llama3":
            f, lo, hi, orig = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
            wl = 2 * np.pi / inv
            smooth = (orig / wl - lo) / (hi - lo)
            scaled = np.where(wl > orig / lo, inv / f, inv)
            mid = (wl <= orig / lo) & (wl >= orig / hi)
            inv = np.where(mid, (1 - smooth) * inv / f + smooth * inv, scaled)
        elif t == "yarn":
            # transformers' _compute_yarn_parameters
            import math
            f = rs["factor"]
            orig = rs.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
            base = cfg.get("rope_theta", 10000.0)

            def corr(rot):
                return head_dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))
            low = max(math.floor(corr(rs.get("beta_fast") or 32)), 0)
            high = min(math.ceil(corr(rs.get("beta_slow") or 1)), head_dim - 1)
            if low == high:
                high += 0.001
            ramp = np.clip((np.arange(head_dim // 2) - low) / (high - low), 0, 1)
            extra = 1 - ramp
            inv = inv / f * (1 - extra) + inv * extra
    return inv


def rope_attention_factor(cfg):
    rs = cfg.get("rope_scaling") or {}
    if rs.get("rope_type", rs.get("type")) != "yarn":
        return 1.0
    import math
    f = rs["factor"]
    if rs.get("attention_factor"):
        return rs["attention_factor"]
    return 0.1 * math.log(f) + 1.0 if f > 1 else 1.0


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def attention(q, k, v, n_kv, window=None):
    # q [T, H, hd], k/v [T, KV, hd]; causal
    T, H, hd = q.shape
    group = H // n_kv
    out = np.zeros_like(q)
    for h in range(H):
        kh, vh = k[:, h // group], v[:, h // group]
        s = q[:, h] @ kh.T / np.sqrt(hd)
        mask = np.triu(np.ones((T, T), bool), 1)
        if window:
            mask |= np.tril(np.ones((T, T), bool), -window)
        s[mask] = -np.inf
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        out[:, h] = s @ vh
    return out


def forward_gemma(cfg, w, ids, prompt=0):
    """Gemma 1/2/3 as in transformers' modeling_gemma*.py: RMSNorm times (1 + w), embeddings
    times sqrt(hidden), GeGLU (tanh GELU), attention scaled by query_pre_attn_scalar^-0.5 with
    optional tanh soft-capping, post-attention and pre/post-feed-forward norms (2, 3), q/k norms
    and local/global RoPE bases (3), sliding-window layers (2: even layers, 3: all but every n-th)."""
    mt = cfg["model_type"]
    D, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // H
    eps = cfg["rms_norm_eps"]
    T = len(ids)

    def norm(x, name):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (1.0 + w[name])

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    x = w["model.embed_tokens.weight"][ids] * np.sqrt(D)
    scale = cfg.get("query_pre_attn_scalar", hd) ** -0.5
    cap = cfg.get("attn_logit_softcapping")
    pos = np.arange(T)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        if mt == "gemma2":
            sliding = i % 2 == 0
        elif mt == "gemma3_text":
            sliding = (i + 1) % cfg.get("sliding_window_pattern", 6) != 0
        else:
            sliding = False
        if mt == "gemma3_text" and sliding:
            inv = 1.0 / (cfg["rope_local_base_freq"] ** (np.arange(0, hd, 2) / hd))
        else:
            inv = rope_inv_freq(cfg, hd)
        ang = pos[:, None] * inv[None, :]
        cos = np.cos(np.concatenate([ang, ang], -1))[:, None, :]
        sin = np.sin(np.concatenate([ang, ang], -1))[:, None, :]
        n = norm(x, p + "input_layernorm.weight")
        q = matmul(n, w, p + "self_attn.q_proj.weight", prompt).reshape(T, H, hd)
        k = matmul(n, w, p + "self_attn.k_proj.weight", prompt).reshape(T, KV, hd)
        v = matmul(n, w, p + "self_attn.v_proj.weight", prompt).reshape(T, KV, hd)
        if p + "self_attn.q_norm.weight" in w:
            q = norm(q, p + "self_attn.q_norm.weight")
            k = norm(k, p + "self_attn.k_norm.weight")
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        out = np.zeros((T, H, hd))
        for h in range(H):
            s = (q[:, h] @ k[:, h // (H // KV)].T) * scale
            if cap:
                s = np.tanh(s / cap) * cap
            mask = np.triu(np.ones((T, T), bool), 1)
            if sliding:
                mask |= np.tril(np.ones((T, T), bool), -cfg["sliding_window"])
            s[mask] = -np.inf
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            out[:, h] = s @ v[:, h // (H // KV)]
        a = matmul(out.reshape(T, H * hd), w, p + "self_attn.o_proj.weight", prompt)
        if mt == "gemma":
            x = x + a
            n = norm(x, p + "post_attention_layernorm.weight")
        else:
            x = x + norm(a, p + "post_attention_layernorm.weight")
            n = norm(x, p + "pre_feedforward_layernorm.weight")
        m = matmul(gelu(matmul(n, w, p + "mlp.gate_proj.weight", prompt)) *
                   matmul(n, w, p + "mlp.up_proj.weight", prompt), w, p + "mlp.down_proj.weight", prompt)
        x = x + (m if mt == "gemma" else norm(m, p + "post_feedforward_layernorm.weight"))
    x = norm(x, "model.norm.weight")
    logits = x[-1] @ w["model.embed_tokens.weight"].T
    fcap = cfg.get("final_logit_softcapping")
    return np.tanh(logits / fcap) * fcap if fcap else logits


def forward_llama(cfg, w, ids, prompt=0):
    D, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // H
    eps = cfg["rms_norm_eps"]
    T = len(ids)
    x = w["model.embed_tokens.weight"][ids]
    inv = rope_inv_freq(cfg, hd)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos = np.cos(np.concatenate([ang, ang], -1))[:, None, :] * rope_attention_factor(cfg)
    sin = np.sin(np.concatenate([ang, ang], -1))[:, None, :] * rope_attention_factor(cfg)
    window = cfg.get("sliding_window") if cfg["model_type"] == "mistral" or cfg.get("use_sliding_window") else None
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        n = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = matmul(n, w, p + "self_attn.q_proj.weight", prompt) + w.get(p + "self_attn.q_proj.bias", 0)
        k = matmul(n, w, p + "self_attn.k_proj.weight", prompt) + w.get(p + "self_attn.k_proj.bias", 0)
        v = matmul(n, w, p + "self_attn.v_proj.weight", prompt) + w.get(p + "self_attn.v_proj.bias", 0)
        q, k, v = q.reshape(T, H, hd), k.reshape(T, KV, hd), v.reshape(T, KV, hd)
        if p + "self_attn.q_norm.weight" in w:
            q = rmsnorm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rmsnorm(k, w[p + "self_attn.k_norm.weight"], eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        a = attention(q, k, v, KV, window).reshape(T, H * hd)
        x = x + matmul(a, w, p + "self_attn.o_proj.weight", prompt)
        n = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = matmul(n, w, p + "mlp.gate_proj.weight", prompt)
        u = matmul(n, w, p + "mlp.up_proj.weight", prompt)
        x = x + matmul(g / (1 + np.exp(-g)) * u, w, p + "mlp.down_proj.weight", prompt)
    x = rmsnorm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x[-1] @ head.T


def forward_gpt2(cfg, w, ids, prompt=0):
    D, H = cfg["n_embd"], cfg["n_head"]
    hd = D // H
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    pre = "transformer." if "transformer.wte.weight" in w else ""
    T = len(ids)
    x = w[pre + "wte.weight"][ids] + w[pre + "wpe.weight"][:T]
    for i in range(cfg["n_layer"]):
        p = pre + "h.%d." % i
        n = layernorm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = matmul(n, w, p + "attn.c_attn.weight", prompt, False) + w[p + "attn.c_attn.bias"]
        q, k, v = (qkv[:, j * D:(j + 1) * D].reshape(T, H, hd) for j in range(3))
        a = attention(q, k, v, H).reshape(T, D)
        x = x + matmul(a, w, p + "attn.c_proj.weight", prompt, False) + w[p + "attn.c_proj.bias"]
        n = layernorm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        h = matmul(n, w, p + "mlp.c_fc.weight", prompt, False) + w[p + "mlp.c_fc.bias"]
        h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))
        x = x + matmul(h, w, p + "mlp.c_proj.weight", prompt, False) + w[p + "mlp.c_proj.bias"]
    x = layernorm(x, w[pre + "ln_f.weight"], w[pre + "ln_f.bias"], eps)
    return x[-1] @ w[pre + "wte.weight"].T


def forward_bert(cfg, w, ids):
    """BertModel's last hidden state (transformers' modeling_bert: post-LayerNorm, erf GELU,
    absolute positions, token type 0, no attention mask for one unpadded text)."""
    p = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
    eps, H = cfg.get("layer_norm_eps", 1e-12), cfg["num_attention_heads"]
    ids = np.asarray(ids)
    n = len(ids)
    x = (w[p + "embeddings.word_embeddings.weight"][ids] + w[p + "embeddings.position_embeddings.weight"][:n]
         + w[p + "embeddings.token_type_embeddings.weight"][0])
    x = layernorm(x, w[p + "embeddings.LayerNorm.weight"], w[p + "embeddings.LayerNorm.bias"], eps)
    act = {"gelu": lambda v: 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2))),
           "gelu_new": lambda v: 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))),
           "relu": lambda v: np.maximum(v, 0)}[cfg.get("hidden_act", "gelu")]
    for i in range(cfg["num_hidden_layers"]):
        L = "%sencoder.layer.%d." % (p, i)

        def lin(name, v):
            return v @ w[L + name + ".weight"].T + w[L + name + ".bias"]
        q, k, v = (lin("attention.self." + t, x) for t in ("query", "key", "value"))
        D = q.shape[1]
        hd = D // H
        q, k, v = (a.reshape(n, H, hd).transpose(1, 0, 2) for a in (q, k, v))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, D)
        x = layernorm(lin("attention.output.dense", ctx) + x, w[L + "attention.output.LayerNorm.weight"],
                      w[L + "attention.output.LayerNorm.bias"], eps)
        h = act(lin("intermediate.dense", x))
        x = layernorm(lin("output.dense", h) + x, w[L + "output.LayerNorm.weight"], w[L + "output.LayerNorm.bias"], eps)
    return x


def sentence_embedding(model_dir, cfg, w, ids):
    """sentence-transformers' Pooling (+ Normalize) over forward_bert, read from modules.json and
    the Pooling module's config.json; mean pooling when the model lists no modules."""
    tokens = forward_bert(cfg, w, ids)
    modules, pool_cfg = [], {"pooling_mode_mean_tokens": True}
    if os.path.exists(os.path.join(model_dir, "modules.json")):
        modules = json.load(open(os.path.join(model_dir, "modules.json")))
        for m in modules:
            if m["type"].endswith("Pooling"):
                pool_cfg = json.load(open(os.path.join(model_dir, m["path"], "config.json")))
    n = len(ids)
    parts = []
    if pool_cfg.get("pooling_mode_cls_token"):
        parts.append(tokens[0])
    if pool_cfg.get("pooling_mode_max_tokens"):
        parts.append(tokens.max(0))
    if pool_cfg.get("pooling_mode_mean_tokens"):
        parts.append(tokens.mean(0))
    if pool_cfg.get("pooling_mode_mean_sqrt_len_tokens"):
        parts.append(tokens.sum(0) / math.sqrt(n))
    if pool_cfg.get("pooling_mode_weightedmean_tokens"):
        weights = np.arange(1, n + 1, dtype=np.float64)
        parts.append((tokens * weights[:, None]).sum(0) / weights.sum())
    if pool_cfg.get("pooling_mode_lasttoken"):
        parts.append(tokens[-1])
    out = np.concatenate(parts)
    if any(m["type"].endswith("Normalize") for m in modules):
        out = out / max(np.linalg.norm(out), 1e-12)
    return out


def greedy(cfg, w, ids, n, top):
    """Yields one dict a step, like `hearth run --dump-logits`."""
    mt = cfg["model_type"]
    fwd = forward_gpt2 if mt == "gpt2" else forward_gemma if mt.startswith("gemma") else forward_llama
    ids = list(ids)
    prompt = len(ids)
    for step in range(n):
        logits = fwd(cfg, w, ids, prompt)
        order = np.argsort(-logits, kind="stable")[:top]
        nxt = int(order[0])
        yield {"step": step, "token": nxt, "top": [[int(i), float(logits[i])] for i in order]}
        ids.append(nxt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--hf-config")
    ap.add_argument("--ids", required=True)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--top", type=int, default=5)
    a = ap.parse_args()
    cfg_dir = a.hf_config or a.model
    cfg = json.load(open(os.path.join(cfg_dir, "config.json")))
    w = load_gguf(a.model, cfg) if a.model.endswith(".gguf") else load_safetensors_dir(a.model)
    for row in greedy(cfg, w, [int(x) for x in a.ids.split(",")], a.n, a.top):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
