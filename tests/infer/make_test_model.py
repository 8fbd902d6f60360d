#!/usr/bin/env python3
"""Writes tiny random-weight models for Hearth's inference tests.

    make_test_model.py OUT_DIR --arch llama|mistral|qwen2|qwen3|gpt2|bert [--dtype f32|f16|bf16]
                       [--tokenizer gpt2|llama3|qwen|llama2|metaspace|bert|bert-cased|wordpiece] [--shards N]
                       [--gguf FILE --gguf-type f32|f16|q8_0|q4_0|q4_k|q6_k]

OUT_DIR gets the Hugging Face layout: config.json, model.safetensors (or shards + index),
tokenizer.json, tokenizer_config.json, generation_config.json (for bert: a sentence-transformers
encoder with modules.json and 1_Pooling/ instead). --gguf also writes the same
weights as a GGUF file through the `gguf` package (llama.cpp's own writer), with llama.cpp's
conventions (q/k rows permuted for the llama architecture, its tensor names, its tokenizer keys).

The tokenizer is trained here with the `tokenizers` package on a small built-in corpus, in one
of the layouts real models use. Nothing is downloaded.
"""
import argparse
import json
import os
import sys

import numpy as np

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 2024 and we're testing tokenizers!",
    "Hello, world! How are you doing today? I'd like 3 apples and 12 oranges, please.",
    "def main(argc, argv):\n    return sum(x * 2 for x in range(10))  # comment\n",
    "int main(void) { printf(\"%d\\n\", 42); return 0; }",
    "Machine learning models are trained on large datasets of text and code.",
    "    indented line with   multiple   spaces\tand tabs\n\nnew paragraph",
    "Numbers: 3.14159, 2.71828, 1000000, 0x1F, -7, 1e-5, 42%",
    "Café, naïve, résumé, über, Straße, façade — «quotes» and “smart quotes”.",
    "日本語のテキストと中文文本。한국어 텍스트도 있습니다.",
    "Emoji: 😀 🚀 🎉 👍🏽 ❤️ and symbols ∑ ∫ √ ≠ ≤ ≥ → ←",
    "Привет, мир! Ελληνικά γράμματα. مرحبا بالعالم. שלום עולם.",
    "SELECT name, COUNT(*) FROM users WHERE age > 21 GROUP BY name;",
    "<html><body><p class=\"x\">Some HTML &amp; entities</p></body></html>",
    "The model's weights were saved in safetensors format, then converted to GGUF.",
    "Once upon a time, there was a little girl who lived in a village near the forest.",
    "She loved to play with her friends and explore the world around her every day.",
]

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def training_corpus():
    lines = list(CORPUS) * 4
    words = " ".join(CORPUS).split()
    rng = np.random.default_rng(7)
    for _ in range(200):
        lines.append(" ".join(rng.choice(words, size=12)))
    return lines


def make_tokenizer(kind, vocab_size=600):
    """Returns (tokenizer.json text, special token dict: bos/eos/extra)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if kind in ("gpt2", "llama3", "qwen"):
        specials = {"gpt2": ["<|endoftext|>"],
                    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"],
                    "qwen": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]}[kind]
        tok = Tokenizer(models.BPE(ignore_merges=(kind == "llama3")))
        if kind == "gpt2":
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        else:
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(LLAMA3_REGEX if kind == "llama3" else QWEN_REGEX),
                                     behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        if kind == "qwen":
            tok.normalizer = normalizers.NFC()
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(training_corpus(), trainer)
        if kind == "llama3":
            bos = tok.token_to_id("<|begin_of_text|>")
            tok.post_processor = processors.TemplateProcessing(
                single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                special_tokens=[("<|begin_of_text|>", bos)])
            info = {"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "extra_eos": ["<|eot_id|>"]}
        elif kind == "qwen":
            tok.post_processor = processors.ByteLevel(trim_offsets=False)
            info = {"bos": None, "eos": "<|endoftext|>", "extra_eos": ["<|im_end|>"]}
        else:
            info = {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "extra_eos": []}
        return tok.to_str(), info

    if kind in ("bert", "bert-cased", "wordpiece"):
        return make_wordpiece_tokenizer(kind, vocab_size)

    # SentencePiece-style BPE: ▁ for spaces, <0xNN> byte fallback, <unk>/<s>/</s> first.
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 259, special_tokens=[], limit_alphabet=120,
                                  show_progress=False)
    tok.train_from_iterator(training_corpus(), trainer)
    data = json.loads(tok.to_str())
    trained = data["model"]["vocab"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for piece, _ in sorted(trained.items(), key=lambda kv: kv[1]):
        if piece not in vocab:
            vocab[piece] = len(vocab)
    data["model"]["vocab"] = vocab
    data["added_tokens"] = [
        {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])]
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    if kind == "llama2":
        # Llama-2 / Mistral / TinyLlama as shipped: normalizer does the ▁ work, no pre-tokenizer.
        data["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        data["pre_tokenizer"] = None
        data["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    elif kind == "metaspace":
        data["normalizer"] = None
        data["decoder"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}
    else:
        raise SystemExit("unknown tokenizer kind " + kind)
    text = json.dumps(data, ensure_ascii=False)
    Tokenizer.from_str(text)  # must load in the reference implementation
    return text, {"bos": "<s>", "eos": "</s>", "extra_eos": []}


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_wordpiece_tokenizer(kind, vocab_size):
    """WordPiece layouts: "bert" as bert-base-uncased ships it (BertNormalizer lowercasing and
    stripping accents, BertPreTokenizer, TemplateProcessing [CLS] $A [SEP]); "bert-cased" as
    cased BERTs do (no lowercase, no CJK spacing, BertProcessing, short max word so that long
    words become [UNK]); "wordpiece" from separate steps (NFD, StripAccents, Lowercase,
    Whitespace + Punctuation pre-tokenizers)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=12 if kind == "bert-cased" else 100))
    if kind == "bert":
        tok.normalizer = normalizers.BertNormalizer()
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    elif kind == "bert-cased":
        tok.normalizer = normalizers.BertNormalizer(lowercase=False, handle_chinese_chars=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    else:
        tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(),
                                               normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                     pre_tokenizers.Punctuation(behavior="contiguous")])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=kind != "wordpiece")
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=BERT_SPECIALS, show_progress=False)
    tok.train_from_iterator(training_corpus(), trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if kind == "bert-cased":
        tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok.to_str(), {"bos": "[CLS]", "eos": "[SEP]", "extra_eos": []}


ARCH_DEFAULTS = {
    "llama": dict(tokenizer="llama2", rope_theta=10000.0, tie=False),
    "mistral": dict(tokenizer="metaspace", rope_theta=1000000.0, tie=False),
    "qwen2": dict(tokenizer="qwen", rope_theta=1000000.0, tie=True),
    "qwen3": dict(tokenizer="qwen", rope_theta=1000000.0, tie=True),
    "gpt2": dict(tokenizer="gpt2", tie=True),
    "gemma": dict(tokenizer="llama2", rope_theta=10000.0, tie=True),
    "gemma2": dict(tokenizer="llama2", rope_theta=10000.0, tie=True),
    "gemma3": dict(tokenizer="llama2", rope_theta=1000000.0, tie=True),
}


def random_weights(arch, cfg, rng):
    """HF-named float32 weights."""
    def lin(out_dim, in_dim):
        return (rng.standard_normal((out_dim, in_dim)) / np.sqrt(in_dim)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def bias(n):
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {}
    V, D = cfg["vocab_size"], cfg.get("hidden_size", cfg.get("n_embd"))
    if arch == "gpt2":
        F = 4 * D
        w["wte.weight"] = rng.standard_normal((V, D)).astype(np.float32)
        w["wpe.weight"] = (0.5 * rng.standard_normal((cfg["n_positions"], D))).astype(np.float32)
        for i in range(cfg["n_layer"]):
            p = "h.%d." % i
            w[p + "ln_1.weight"], w[p + "ln_1.bias"] = norm(D), bias(D)
            w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"] = lin(3 * D, D).T.copy(), bias(3 * D)
            w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"] = lin(D, D).T.copy(), bias(D)
            w[p + "ln_2.weight"], w[p + "ln_2.bias"] = norm(D), bias(D)
            w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"] = lin(F, D).T.copy(), bias(F)
            w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"] = lin(D, F).T.copy(), bias(D)
        w["ln_f.weight"], w["ln_f.bias"] = norm(D), bias(D)
        return w
    H, KV, HD, F = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["intermediate_size"]
    w["model.embed_tokens.weight"] = rng.standard_normal((V, D)).astype(np.float32)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        w[p + "input_layernorm.weight"] = norm(D)
        w[p + "self_attn.q_proj.weight"] = lin(H * HD, D)
        w[p + "self_attn.k_proj.weight"] = lin(KV * HD, D)
        w[p + "self_attn.v_proj.weight"] = lin(KV * HD, D)
        w[p + "self_attn.o_proj.weight"] = lin(D, H * HD)
        if arch == "qwen2":
            w[p + "self_attn.q_proj.bias"] = bias(H * HD)
            w[p + "self_attn.k_proj.bias"] = bias(KV * HD)
            w[p + "self_attn.v_proj.bias"] = bias(KV * HD)
        if arch in ("qwen3", "gemma3"):
            w[p + "self_attn.q_norm.weight"] = norm(HD)
            w[p + "self_attn.k_norm.weight"] = norm(HD)
        w[p + "post_attention_layernorm.weight"] = norm(D)
        if arch in ("gemma2", "gemma3"):
            w[p + "pre_feedforward_layernorm.weight"] = norm(D)
            w[p + "post_feedforward_layernorm.weight"] = norm(D)
        w[p + "mlp.gate_proj.weight"] = lin(F, D)
        w[p + "mlp.up_proj.weight"] = lin(F, D)
        w[p + "mlp.down_proj.weight"] = lin(D, F)
    w["model.norm.weight"] = norm(D)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = lin(V, D) * 4
    return w


def make_config(arch, vocab_size, tok_info, tok_json, layers=2, hidden=64, heads=4, kv_heads=2, ffn=128,
                head_dim=None, ctx=256, rope_scaling=None):
    from tokenizers import Tokenizer
    t = Tokenizer.from_str(tok_json)
    bos = t.token_to_id(tok_info["bos"]) if tok_info["bos"] else None
    eos = t.token_to_id(tok_info["eos"])
    if arch == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab_size,
                "n_embd": hidden, "n_layer": layers, "n_head": heads, "n_positions": ctx,
                "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
                "bos_token_id": bos, "eos_token_id": eos, "torch_dtype": "float32"}
    d = ARCH_DEFAULTS[arch]
    names = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
             "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
             "gemma3": "Gemma3ForCausalLM"}
    cfg = {"architectures": [names[arch]], "model_type": arch, "vocab_size": vocab_size,
           "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv_heads, "intermediate_size": ffn, "max_position_embeddings": ctx,
           "rms_norm_eps": 1e-5, "rope_theta": d["rope_theta"], "hidden_act": "silu",
           "tie_word_embeddings": d["tie"], "bos_token_id": bos, "eos_token_id": eos,
           "torch_dtype": "float32", "head_dim": head_dim or hidden // heads, "rope_scaling": rope_scaling}
    if arch == "qwen3" and head_dim is None:
        cfg["head_dim"] = 2 * hidden // heads   # Qwen3: heads × head_dim ≠ hidden
    if arch == "mistral":
        cfg["sliding_window"] = None
    if arch.startswith("gemma"):
        # Gemma: GeGLU, (1+w) norms, √hidden embedding scale; 2/3 add soft-capping (2), q/k norms (3),
        # post-norms and sliding-window layers with a small window so that the tests exercise it.
        del cfg["hidden_act"]
        cfg["hidden_activation"] = "gelu_pytorch_tanh"
        cfg["rms_norm_eps"] = 1e-6
        if arch in ("gemma2", "gemma3"):
            cfg["query_pre_attn_scalar"] = cfg["head_dim"]   # as in Gemma 2B/9B (llama.cpp assumes it)
            cfg["sliding_window"] = 6
        if arch == "gemma2":
            cfg["attn_logit_softcapping"] = 50.0
            cfg["final_logit_softcapping"] = 30.0
        if arch == "gemma3":
            cfg["model_type"] = "gemma3_text"
            cfg["rope_local_base_freq"] = 10000.0
            cfg["sliding_window_pattern"] = 6   # llama.cpp hard-codes 6 for gemma3
            cfg["rope_scaling"] = {"rope_type": "linear", "factor": 8.0}
            cfg["attn_logit_softcapping"] = None
            cfg["final_logit_softcapping"] = None
    return cfg


def to_dtype(a, dtype):
    if dtype == "f32":
        return a.astype(np.float32)
    if dtype == "f16":
        return a.astype(np.float16)
    # bf16: round to nearest even in the top 16 bits, kept as uint16 then viewed by safetensors
    b = a.astype(np.float32).view(np.uint32)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    return r


def save_safetensors(path, tensors, dtype):
    """Writes a safetensors file by hand (bf16 needs no torch)."""
    header, blobs, off = {}, [], 0
    name = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
    for k, v in tensors.items():
        dt = "i64" if v.dtype == np.int64 else dtype   # BERT's position_ids buffer stays I64
        arr = v if dt == "i64" else to_dtype(v, dt)
        raw = np.ascontiguousarray(arr).tobytes()
        header[k] = {"dtype": dict(name, i64="I64")[dt], "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def stored_weights(w, dtype):
    """The float64 values the engine will see after the dtype round trip."""
    out = {}
    for k, v in w.items():
        a = to_dtype(v, dtype)
        if dtype == "bf16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[k] = a.astype(np.float64)
    return out


# ---- GGUF -------------------------------------------------------------------------------------

def q4_k_quantize(x):
    """A simple (not optimal) Q4_K quantizer, vectorised over blocks; llama.cpp's dequantizer is
    the judge of the layout."""
    x = x.reshape(-1, 256).astype(np.float32)
    nb = x.shape[0]
    sub = x.reshape(nb, 8, 32)
    mn = np.minimum(sub.min(axis=2), 0)                       # [nb, 8]
    scale = (sub.max(axis=2) - mn) / 15
    d = np.maximum(scale.max(axis=1) / 63, 1e-12)             # [nb]
    dmin = np.maximum((-mn).max(axis=1) / 63, 1e-12)
    sc = np.clip(np.round(scale / d[:, None]), 0, 63).astype(np.int32)
    m = np.clip(np.round(-mn / dmin[:, None]), 0, 63).astype(np.int32)
    dq = d.astype(np.float16).astype(np.float32)
    dm = dmin.astype(np.float16).astype(np.float32)
    s = dq[:, None] * sc                                      # [nb, 8]
    safe = np.where(s > 0, s, 1)
    q = np.where(s[:, :, None] > 0,
                 np.clip(np.round((sub + (dm[:, None] * m)[:, :, None]) / safe[:, :, None]), 0, 15), 0)
    q = q.astype(np.uint8).reshape(nb, 256)
    scales = np.zeros((nb, 12), np.uint8)
    scales[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    q4 = q.reshape(nb, 4, 2, 32)
    qs = (q4[:, :, 0, :] | (q4[:, :, 1, :] << 4)).reshape(nb, 128)
    out = np.zeros((nb, 144), np.uint8)
    out[:, 0:2] = d.astype(np.float16).view(np.uint8).reshape(nb, 2)
    out[:, 2:4] = dmin.astype(np.float16).view(np.uint8).reshape(nb, 2)
    out[:, 4:16] = scales
    out[:, 16:] = qs
    return out


def q6_k_quantize(x):
    x = x.reshape(-1, 256).astype(np.float32)
    nb = x.shape[0]
    sub = x.reshape(nb, 16, 16)
    scale = np.abs(sub).max(axis=2) / 31                       # [nb, 16]
    d = np.maximum(scale.max(axis=1) / 127, 1e-12)
    sc = np.clip(np.round(scale / d[:, None]), -128, 127).astype(np.int32)
    dq = d.astype(np.float16).astype(np.float32)
    s = dq[:, None] * sc
    safe = np.where(s > 0, s, 1)
    q = np.where(s[:, :, None] > 0, np.clip(np.round(sub / safe[:, :, None]), -32, 31), 0) + 32
    q = q.astype(np.uint8).reshape(nb, 2, 4, 32)              # [half, quarter, l]
    ql = np.zeros((nb, 2, 64), np.uint8)
    ql[:, :, :32] = (q[:, :, 0] & 0xF) | ((q[:, :, 2] & 0xF) << 4)
    ql[:, :, 32:] = (q[:, :, 1] & 0xF) | ((q[:, :, 3] & 0xF) << 4)
    qh = (q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6)
    out = np.zeros((nb, 210), np.uint8)
    out[:, :128] = ql.reshape(nb, 128)
    out[:, 128:192] = qh.reshape(nb, 64)
    out[:, 192:208] = sc.astype(np.int8).view(np.uint8)
    out[:, 208:210] = d.astype(np.float16).view(np.uint8).reshape(nb, 2)
    return out


def permute_qk(w, n_head, n_head_kv=None):
    """llama.cpp's convert_hf_to_gguf permutation for the llama architecture."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w, n_head, n_head_kv=None):
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


HF_TO_GGUF = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"), ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"), ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"), ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"), ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("pre_feedforward_layernorm.weight", "ffn_norm.weight"),
    ("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"), ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
]

GPT2_TO_GGUF = [
    ("wte.weight", "token_embd.weight"), ("wpe.weight", "position_embd.weight"),
    ("ln_f.weight", "output_norm.weight"), ("ln_f.bias", "output_norm.bias"),
    ("ln_1.weight", "attn_norm.weight"), ("ln_1.bias", "attn_norm.bias"),
    ("attn.c_attn.weight", "attn_qkv.weight"), ("attn.c_attn.bias", "attn_qkv.bias"),
    ("attn.c_proj.weight", "attn_output.weight"), ("attn.c_proj.bias", "attn_output.bias"),
    ("ln_2.weight", "ffn_norm.weight"), ("ln_2.bias", "ffn_norm.bias"),
    ("mlp.c_fc.weight", "ffn_up.weight"), ("mlp.c_fc.bias", "ffn_up.bias"),
    ("mlp.c_proj.weight", "ffn_down.weight"), ("mlp.c_proj.bias", "ffn_down.bias"),
]


GEMMA_POST_NORMS = [("post_attention_layernorm.weight", "post_attention_norm.weight"),
                    ("pre_feedforward_layernorm.weight", "ffn_norm.weight")]


def gguf_table(arch):
    if arch == "gpt2":
        return GPT2_TO_GGUF
    if arch in ("gemma2", "gemma3"):   # post-norm names differ from the llama family
        return GEMMA_POST_NORMS + [(a, b) for a, b in HF_TO_GGUF if a != "post_attention_layernorm.weight"]
    return [(a, b) for a, b in HF_TO_GGUF if not a.startswith(("pre_feedforward", "post_feedforward"))] + \
        [("post_feedforward_layernorm.weight", "post_ffw_norm.weight")]


def gguf_name(arch, hf):
    table = gguf_table(arch)
    layer = None
    rest = hf
    for prefix in ("model.layers.", "h."):
        if hf.startswith(prefix):
            layer, rest = hf[len(prefix):].split(".", 1)
    for a, b in table:
        if rest == a:
            return ("blk.%s.%s" % (layer, b)) if layer is not None else b
    raise KeyError(hf)


def write_gguf(path, arch, cfg, weights, tok_json, tok_info, qtype):
    import gguf
    from tokenizers import Tokenizer
    garch = "llama" if arch in ("llama", "mistral") else arch
    gemma = arch.startswith("gemma")
    wr = gguf.GGUFWriter(path, garch)
    wr.add_name("hearth-test-" + arch)
    if arch == "gpt2":
        D = cfg["n_embd"]
        wr.add_context_length(cfg["n_positions"])
        wr.add_embedding_length(D)
        wr.add_block_count(cfg["n_layer"])
        wr.add_feed_forward_length(4 * D)
        wr.add_head_count(cfg["n_head"])
        wr.add_layer_norm_eps(cfg["layer_norm_epsilon"])
    else:
        wr.add_context_length(cfg["max_position_embeddings"])
        wr.add_embedding_length(cfg["hidden_size"])
        wr.add_block_count(cfg["num_hidden_layers"])
        wr.add_feed_forward_length(cfg["intermediate_size"])
        wr.add_head_count(cfg["num_attention_heads"])
        wr.add_head_count_kv(cfg["num_key_value_heads"])
        wr.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        wr.add_rope_freq_base(cfg["rope_theta"])
        wr.add_rope_dimension_count(cfg["head_dim"])
        if gemma and cfg.get("sliding_window"):
            wr.add_sliding_window(cfg["sliding_window"])
        if cfg.get("attn_logit_softcapping"):
            wr.add_float32("%s.attn_logit_softcapping" % garch, cfg["attn_logit_softcapping"])
        if cfg.get("final_logit_softcapping"):
            wr.add_float32("%s.final_logit_softcapping" % garch, cfg["final_logit_softcapping"])
        rs = cfg.get("rope_scaling")
        if rs and rs.get("rope_type") == "linear":
            wr.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            wr.add_rope_scaling_factor(rs["factor"])
        if cfg["head_dim"] * cfg["num_attention_heads"] != cfg["hidden_size"]:
            wr.add_key_length(cfg["head_dim"])
            wr.add_value_length(cfg["head_dim"])
    wr.add_vocab_size(cfg["vocab_size"])
    # Tokenizer, the way convert_hf_to_gguf writes a byte-level BPE vocabulary.
    data = json.loads(tok_json)
    t = Tokenizer.from_str(tok_json)
    n = cfg["vocab_size"]
    inv = {i: s for s, i in t.get_vocab(with_added_tokens=True).items()}
    added = {a["id"]: a for a in data["added_tokens"]}
    tokens, types = [], []
    for i in range(n):
        tokens.append(inv.get(i, "[PAD%d]" % i))
        types.append(3 if i in added and added[i]["special"] else (4 if i in added else (1 if i in inv else 5)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    if tok_info["kind"] in ("llama2", "metaspace"):
        # SentencePiece-style ("llama" model): merge priority through scores, byte tokens typed 6.
        rank = {}
        for r, m in enumerate(merges):
            rank.setdefault(m.replace(" ", ""), r)
        scores = [-float(rank.get(tok, len(merges))) if tok in rank else 0.0 for tok in tokens]
        for i, tok in enumerate(tokens):
            if len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">") and types[i] == 1:
                types[i] = 6
        wr.add_tokenizer_model("llama")
        wr.add_token_list(tokens)
        wr.add_token_scores(scores)
        wr.add_token_types(types)
        wr.add_bos_token_id(t.token_to_id(tok_info["bos"]))
        wr.add_eos_token_id(t.token_to_id(tok_info["eos"]))
        wr.add_unk_token_id(0)
        wr.add_add_bos_token(True)
        wr.add_add_space_prefix(True)
    else:
        wr.add_tokenizer_model("gpt2")
        wr.add_tokenizer_pre({"llama3": "llama-bpe", "qwen": "qwen2", "gpt2": "gpt-2"}[tok_info["kind"]])
        wr.add_token_list(tokens)
        wr.add_token_types(types)
        wr.add_token_merges(merges)
        if tok_info["bos"]:
            wr.add_bos_token_id(t.token_to_id(tok_info["bos"]))
        wr.add_eos_token_id(t.token_to_id(tok_info["eos"]))
        wr.add_add_bos_token(tok_info["kind"] == "llama3")
    Q = gguf.GGMLQuantizationType
    for name, w in weights.items():
        if arch == "gpt2" and w.ndim == 2 and name not in ("wte.weight", "wpe.weight"):
            w = w.T.copy()   # Conv1D [in, out] → [out, in], as the converter does
        if garch == "llama" and name.endswith("q_proj.weight"):
            w = permute_qk(w, cfg["num_attention_heads"])
        if garch == "llama" and name.endswith("k_proj.weight"):
            w = permute_qk(w, cfg["num_attention_heads"], cfg["num_key_value_heads"])
        gname = gguf_name(arch, name)
        w = w.astype(np.float32)
        if gemma and name.endswith("norm.weight"):
            w = w + 1   # the converter folds Gemma's (1 + w) into the stored weight
        if w.ndim == 1 or qtype == "f32" or name == "wpe.weight":
            wr.add_tensor(gname, w)
        elif qtype == "f16":
            wr.add_tensor(gname, w.astype(np.float16))
        elif qtype in ("q8_0", "q4_0"):
            qt = Q.Q8_0 if qtype == "q8_0" else Q.Q4_0
            wr.add_tensor(gname, gguf.quants.quantize(w, qt), raw_dtype=qt)
        elif qtype in ("q4_k", "q6_k"):
            if w.shape[1] % 256:
                wr.add_tensor(gname, gguf.quants.quantize(w, Q.Q8_0), raw_dtype=Q.Q8_0)
            else:
                qt, fn = (Q.Q4_K, q4_k_quantize) if qtype == "q4_k" else (Q.Q6_K, q6_k_quantize)
                wr.add_tensor(gname, fn(w).reshape(w.shape[0], -1), raw_dtype=qt)
        else:
            raise SystemExit("unknown gguf type " + qtype)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def make_model(out, arch, dtype="f32", tokenizer=None, shards=1, gguf_path=None, gguf_type="f32",
               seed=0, **shape):
    os.makedirs(out, exist_ok=True)
    kind = tokenizer or ARCH_DEFAULTS[arch]["tokenizer"]
    tok_json, tok_info = make_tokenizer(kind)
    tok_info["kind"] = kind
    from tokenizers import Tokenizer
    vocab_size = Tokenizer.from_str(tok_json).get_vocab_size(with_added_tokens=True)
    cfg = make_config(arch, vocab_size, tok_info, tok_json, **shape)
    rng = np.random.default_rng(seed)
    w = random_weights(arch, cfg, rng)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        f.write(tok_json)
    t = Tokenizer.from_str(tok_json)
    eos_ids = [t.token_to_id(tok_info["eos"])] + [t.token_to_id(x) for x in tok_info["extra_eos"]]
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": tok_info["bos"], "eos_token": tok_info["eos"],
                   "model_max_length": 256, "tokenizer_class": "PreTrainedTokenizerFast"}, f)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": eos_ids}, f)
    names = list(w)
    if shards <= 1:
        save_safetensors(os.path.join(out, "model.safetensors"), w, dtype)
    else:
        weight_map = {}
        per = (len(names) + shards - 1) // shards
        for s in range(shards):
            fname = "model-%05d-of-%05d.safetensors" % (s + 1, shards)
            part = {k: w[k] for k in names[s * per:(s + 1) * per]}
            save_safetensors(os.path.join(out, fname), part, dtype)
            weight_map.update({k: fname for k in part})
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
    if gguf_path:
        write_gguf(gguf_path, arch, cfg, w, tok_json, tok_info, gguf_type)
    return cfg


POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens",
                 "lasttoken")


def make_bert_model(out, dtype="f32", tokenizer="bert", pooling=("mean_tokens",), normalize=True,
                    prefix="", hidden_act="gelu", max_seq_length=None, layers=2, hidden=64, heads=4,
                    ffn=128, ctx=128, seed=0):
    """A tiny random BERT sentence encoder in the sentence-transformers layout: config.json,
    model.safetensors (tensor names under `prefix`, e.g. "bert." as BertForMaskedLM saves them),
    tokenizer.json, modules.json (Transformer, Pooling, Normalize when asked),
    1_Pooling/config.json and, with max_seq_length, sentence_bert_config.json."""
    os.makedirs(os.path.join(out, "1_Pooling"), exist_ok=True)
    tok_json, _ = make_tokenizer(tokenizer)
    from tokenizers import Tokenizer
    vocab_size = Tokenizer.from_str(tok_json).get_vocab_size(with_added_tokens=True)
    cfg = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab_size,
           "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
           "intermediate_size": ffn, "max_position_embeddings": ctx, "type_vocab_size": 2,
           "layer_norm_eps": 1e-12, "hidden_act": hidden_act, "position_embedding_type": "absolute",
           "pad_token_id": 0, "torch_dtype": "float32"}
    rng = np.random.default_rng(seed)

    def lin(o, i):
        return (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)

    def vec(n, scale=0.1, base=0.0):
        return (base + scale * rng.standard_normal(n)).astype(np.float32)
    w = {"embeddings.word_embeddings.weight": rng.standard_normal((vocab_size, hidden)).astype(np.float32),
         "embeddings.position_embeddings.weight": vec((ctx, hidden), 0.5),
         "embeddings.token_type_embeddings.weight": vec((2, hidden), 0.5),
         "embeddings.LayerNorm.weight": vec(hidden, 0.1, 1.0), "embeddings.LayerNorm.bias": vec(hidden),
         "embeddings.position_ids": np.arange(ctx, dtype=np.int64)[None]}
    for i in range(layers):
        p = "encoder.layer.%d." % i
        for name, o, n in (("attention.self.query", hidden, hidden), ("attention.self.key", hidden, hidden),
                           ("attention.self.value", hidden, hidden), ("attention.output.dense", hidden, hidden),
                           ("intermediate.dense", ffn, hidden), ("output.dense", hidden, ffn)):
            w[p + name + ".weight"], w[p + name + ".bias"] = lin(o, n), vec(o)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + name + ".weight"], w[p + name + ".bias"] = vec(hidden, 0.1, 1.0), vec(hidden)
    w["pooler.dense.weight"], w["pooler.dense.bias"] = lin(hidden, hidden), vec(hidden)   # unused
    w = {prefix + k: v for k, v in w.items()}
    save_safetensors(os.path.join(out, "model.safetensors"), w, dtype)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        f.write(tok_json)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    with open(os.path.join(out, "modules.json"), "w") as f:
        json.dump(modules, f, indent=2)
    with open(os.path.join(out, "1_Pooling", "config.json"), "w") as f:
        json.dump(dict({"word_embedding_dimension": hidden},
                       **{"pooling_mode_" + m: m in pooling for m in POOLING_MODES}), f, indent=2)
    if max_seq_length:
        with open(os.path.join(out, "sentence_bert_config.json"), "w") as f:
            json.dump({"max_seq_length": max_seq_length, "do_lower_case": False}, f)
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--arch", default="llama", choices=sorted(ARCH_DEFAULTS) + ["bert"])
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--tokenizer", choices=["gpt2", "llama3", "qwen", "llama2", "metaspace", "bert", "bert-cased",
                                            "wordpiece"])
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--gguf")
    ap.add_argument("--gguf-type", default="f32", choices=["f32", "f16", "q8_0", "q4_0", "q4_k", "q6_k"])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    shape = dict(layers=a.layers, hidden=a.hidden, heads=a.heads, kv_heads=a.kv_heads, ffn=a.ffn, ctx=a.ctx)
    if a.arch == "bert":   # a sentence encoder: mean pooling + Normalize
        shape.pop("kv_heads")
        return make_bert_model(a.out, a.dtype, a.tokenizer or "bert", seed=a.seed, **shape) and 0
    if a.arch == "gpt2":
        shape.pop("kv_heads")
        shape.pop("ffn")
    make_model(a.out, a.arch, a.dtype, a.tokenizer, a.shards, a.gguf, a.gguf_type, a.seed, **shape)


if __name__ == "__main__":
    sys.exit(main())
