#!/usr/bin/env python3
"""Inference benchmark: Hearth vs llama.cpp (node-llama-cpp's prebuilt CPU build) on the same GGUF.

    bench/infer_bench.py [--threads N] [--prompt 512] [--gen 128] [--types f16,q8_0,q4_k] [--size 0.5b|tiny]
                         [--repeat 2]      (--types also takes q4_0)

For each weight type it writes (once, cached in build/bench-infer/) a random-weight llama-architecture
model of about 0.5 B parameters, then measures prompt (prefill) and decode tokens/s and peak RSS of
`build/hearth run` and of llama.cpp with the same thread count and the same prompt token ids, in one
run, and prints the ratios. Results also go to bench/out/infer.json.
"""
import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "infer"))
import llamacpp  # noqa: E402
import make_test_model as mtm  # noqa: E402

SIZES = {
    # hidden, layers, heads, kv heads, ffn, vocab  →  ~0.48 B parameters
    "0.5b": (1024, 28, 16, 4, 4096, 32000),
    "tiny": (256, 4, 4, 2, 512, 32000),
}


def write_model(path, qtype, size, seed=0):
    import gguf
    D, L, H, KV, F, V = SIZES[size]
    hd = D // H
    rng = np.random.default_rng(seed)
    Q = gguf.GGMLQuantizationType
    wr = gguf.GGUFWriter(path, "llama")
    wr.add_name("hearth-bench-%s" % size)
    wr.add_context_length(4096)
    wr.add_embedding_length(D)
    wr.add_block_count(L)
    wr.add_feed_forward_length(F)
    wr.add_head_count(H)
    wr.add_head_count_kv(KV)
    wr.add_layer_norm_rms_eps(1e-5)
    wr.add_rope_freq_base(10000.0)
    wr.add_rope_dimension_count(hd)
    wr.add_vocab_size(V)
    # A synthetic SentencePiece vocabulary: specials, the 256 byte tokens, then filler pieces.
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    tokens += ["\u2581t%d" % i for i in range(V - len(tokens))]
    wr.add_tokenizer_model("llama")
    wr.add_token_list(tokens)
    wr.add_token_scores([0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(V - 259)])
    wr.add_token_types([2, 3, 3] + [6] * 256 + [1] * (V - 259))
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)

    def mat(rows, cols, name):
        w = (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float32)
        t = qtype
        if name == "output.weight" and qtype == "q4_k":
            t = "q6_k"   # as in Q4_K_M
        if t == "f16":
            wr.add_tensor(name, w.astype(np.float16))
        elif t == "q8_0":
            wr.add_tensor(name, gguf.quants.quantize(w, Q.Q8_0), raw_dtype=Q.Q8_0)
        elif t == "q4_0":
            wr.add_tensor(name, gguf.quants.quantize(w, Q.Q4_0), raw_dtype=Q.Q4_0)
        elif t == "q4_k":
            wr.add_tensor(name, mtm.q4_k_quantize(w).reshape(rows, -1), raw_dtype=Q.Q4_K)
        elif t == "q6_k":
            wr.add_tensor(name, mtm.q6_k_quantize(w).reshape(rows, -1), raw_dtype=Q.Q6_K)
        else:
            raise SystemExit("unknown type " + t)

    mat(V, D, "token_embd.weight")
    for i in range(L):
        p = "blk.%d." % i
        wr.add_tensor(p + "attn_norm.weight", np.ones(D, np.float32))
        mat(H * hd, D, p + "attn_q.weight")
        mat(KV * hd, D, p + "attn_k.weight")
        mat(KV * hd, D, p + "attn_v.weight")
        mat(D, H * hd, p + "attn_output.weight")
        wr.add_tensor(p + "ffn_norm.weight", np.ones(D, np.float32))
        mat(F, D, p + "ffn_gate.weight")
        mat(F, D, p + "ffn_up.weight")
        mat(D, F, p + "ffn_down.weight")
    wr.add_tensor("output_norm.weight", np.ones(D, np.float32))
    mat(V, D, "output.weight")
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def hearth_bin():
    b = os.environ.get("HEARTH_BIN")
    if b:
        return b
    subprocess.run(["make", "-s", "build/hearth"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "build", "hearth")


def run_hearth(binary, model, n_prompt, n_gen, threads):
    ids = ",".join(str(100 + (i * 7) % 1000) for i in range(n_prompt))
    p = subprocess.run([binary, "run", model, "--ids", ids, "-n", str(n_gen), "--threads", str(threads),
                        "--ignore-eos", "--ctx", str(n_prompt + n_gen + 8)],
                       capture_output=True, timeout=1800)
    err = p.stderr.decode()
    if p.returncode != 0:
        raise RuntimeError("hearth failed: " + err[-2000:])
    m = re.search(r"prompt: (\d+) tokens, ([\d.]+) tokens/s \| generation: (\d+) tokens, ([\d.]+) tokens/s"
                  r".*peak memory (\d+) MiB", err)
    return {"prompt_tps": float(m.group(2)), "decode_tps": float(m.group(4)), "peak_rss_mib": float(m.group(5))}


def best(a, b):
    """Best of two runs: highest speeds, lowest peak memory."""
    if a is None:
        return b
    return {"prompt_tps": max(a["prompt_tps"], b["prompt_tps"]), "decode_tps": max(a["decode_tps"], b["decode_tps"]),
            "peak_rss_mib": min(a["peak_rss_mib"], b["peak_rss_mib"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--types", default="f16,q8_0,q4_k")
    ap.add_argument("--size", default="0.5b", choices=sorted(SIZES))
    ap.add_argument("--repeat", type=int, default=2,
                    help="alternate the two engines this many times and keep each one's best "
                         "(the machine may be shared)")
    a = ap.parse_args()
    cache = os.path.join(ROOT, "build", "bench-infer")
    os.makedirs(cache, exist_ok=True)
    binary = hearth_bin()
    try:
        llamacpp.install()
        peer = True
    except llamacpp.Unavailable as ex:
        print("llama.cpp unavailable (%s): measuring Hearth alone" % ex)
        peer = False
    D, L, H, KV, F, V = SIZES[a.size]
    params = V * D * 2 + L * (2 * D * D + 2 * D * (D // H) * KV + 3 * D * F)
    print("load average before the run: %.2f %.2f %.2f (numbers are best of %d alternating runs)"
          % (os.getloadavg() + (a.repeat,)))
    print("model: llama, %.2f B parameters (hidden %d, %d layers, ffn %d, vocab %d); prompt %d, decode %d, "
          "threads %d" % (params / 1e9, D, L, F, V, a.prompt, a.gen, a.threads))
    results = []
    print("%-6s %12s %12s %8s %12s %12s %8s %10s %10s" % ("type", "hearth pp/s", "llama pp/s", "ratio",
                                                          "hearth tg/s", "llama tg/s", "ratio",
                                                          "hearth MiB", "llama MiB"))
    for t in a.types.split(","):
        path = os.path.join(cache, "bench-%s-%s.gguf" % (a.size, t))
        if not os.path.exists(path):
            t0 = time.time()
            # In a child process: the writer grows to gigabytes, and Linux counts a parent's
            # resident size at fork into the peak RSS a child reports (ru_maxrss survives exec),
            # so writing here would inflate every peak RSS figure after it.
            w = multiprocessing.Process(target=write_model, args=(path + ".tmp", t, a.size))
            w.start()
            w.join()
            if w.exitcode != 0:
                raise SystemExit("writing %s failed" % path)
            os.rename(path + ".tmp", path)
            print("  wrote %s (%.0f MiB) in %.0f s" % (path, os.path.getsize(path) / 2 ** 20, time.time() - t0))
        h = c = None
        for _ in range(a.repeat):
            h = best(h, run_hearth(binary, path, a.prompt, a.gen, a.threads))
            if peer:
                c = best(c, json.loads(llamacpp.node("bench.mjs", path, a.prompt, a.gen, a.threads)))
        row = {"type": t, "hearth": h, "llama.cpp": c}
        results.append(row)
        if c:
            print("%-6s %12.1f %12.1f %7.2fx %12.1f %12.1f %7.2fx %10.0f %10.0f" % (
                t, h["prompt_tps"], c["prompt_tps"], h["prompt_tps"] / c["prompt_tps"], h["decode_tps"],
                c["decode_tps"], h["decode_tps"] / c["decode_tps"], h["peak_rss_mib"], c["peak_rss_mib"]))
        else:
            print("%-6s %12.1f %12s %8s %12.1f %12s %8s %10.0f" % (t, h["prompt_tps"], "-", "-", h["decode_tps"],
                                                                   "-", "-", h["peak_rss_mib"]))
    out = os.path.join(ROOT, "bench", "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "infer.json"), "w") as f:
        json.dump({"threads": a.threads, "prompt": a.prompt, "gen": a.gen, "size": a.size, "results": results}, f,
                  indent=2)


if __name__ == "__main__":
    main()
