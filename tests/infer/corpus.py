"""A deterministic corpus of varied strings for tokenizer parity tests: Unicode scripts, emoji
(with modifiers and ZWJ sequences), CJK, code, whitespace runs, numbers, contractions, special
token look-alikes, and the cases normalizers care about: decomposed and stacked accents,
compatibility forms, case mappings, control and format characters."""
import random

BASE = [
    "", " ", "  ", "\n", "\t", "a", "Hello", " Hello", "Hello world", "hello  world", "Hello\nworld",
    "I'm", "you're", "they've", "she'll", "we'd", "IT'S", "don't", "O'Neil's",
    "12345", "1234567890", "3.14159", "-42", "1,000,000", "0x7f", "2024-01-01T12:00:00Z",
    "    def f(x):\n        return x\n", "if (a && b || !c) { x += 1; }", "<div class=\"a\">b</div>",
    "naïve café", "Straße", "ÅÉÎÕÜ", "日本語", "中文字符测试", "한국어", "Привет мир", "Ελληνικά",
    "مرحبا", "שלום", "हिन्दी", "ไทย", "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "❤️", "∑∫√≠", "→←↑↓",
    "\u00a0nbsp", "tab\there", "cr\r\nlf", "trailing   ", "   leading", "a\n\n\nb", "\u3000ideographic space",
    "<s>", "</s>", "<unk>", "<|endoftext|>", "<|im_start|>user\nhi<|im_end|>", "<|begin_of_text|>x",
    "<0x41>", "▁", "▁▁x", "Ġ", "Ċ", "\x00", "\x7f", "\u200b", "\ufeff",
]

WORDS = ("the quick brown fox jumps over lazy dog model weights tensor token hub inference "
         "safetensors GGUF llama mistral qwen gpt attention layer norm rope vocab merge byte "
         "café naïve résumé Straße 日本 中文 한국 мир γράμμα مرحبا 😀 🚀 ∑ ≤").split()
PUNCT = list(".,;:!?'\"()[]{}<>-_/\\|@#$%^&*+=~`")
CHARS = [chr(c) for c in list(range(32, 127)) + list(range(0xA0, 0x180)) + list(range(0x391, 0x3C9)) +
         list(range(0x410, 0x44F)) + list(range(0x4E00, 0x4E40)) + list(range(0x3040, 0x3090)) +
         list(range(0xAC00, 0xAC20)) + [0x1F600, 0x1F680, 0x1F389, 0x1F44D, 0x2764, 0xFE0F, 0x200D]]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "\u00a0", "    "]
# Normalizer cases: NFD vs NFC accents, marks stacked on one letter, compatibility forms (ligatures,
# fullwidth, superscripts), İ and final sigma, control / format / private-use characters,
# CJK outside the basic block, and the spacing the WordPiece decoder cleans up.
UNICODE = ["cafe\u0301", "e\u0301\u0302\u0323", "A\u030a", "\u1e9b\u0323", "ﬁne ﬂow", "Ｆｕｌｌ　ｗｉｄｔｈ",
           "x²+y³", "½ ⅓", "ℌ ℍ ℕ", "İstanbul", "ΣΑΣ σας ΟΔΟΣ", "ǅ ǈ", "ẞ ß", "Ωhm Å",
           "a\x01b", "\x1f", "\x0b\x0c", "\x85", "a\u200db", "\u200e\u200f", "\ue000pua", "\ufffd",
           "\U00020000\U0002a700", "\u3400\uf900", "𝐀𝐁𝐂", "ﾊﾝｶｸ", "한국어 한글", "\u1100\u1161\u11a8",
           "don't do not", "it ' s", "we 've", "I 'm", "they 're", "a . b , c ! d ?", "Mr. O'Neil's"]


def corpus(n=2000, seed=1234):
    rng = random.Random(seed)
    out = list(BASE) + list(UNICODE)
    while len(out) < n:
        kind = rng.randrange(7)
        if kind == 0:    # prose
            s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 15)))
        elif kind == 1:  # words, punctuation and whitespace runs
            s = "".join(rng.choice(WORDS) + rng.choice(PUNCT + SPACES) for _ in range(rng.randint(1, 8)))
        elif kind == 2:  # random characters
            s = "".join(rng.choice(CHARS) for _ in range(rng.randint(1, 30)))
        elif kind == 3:  # numbers
            s = " ".join(str(rng.randint(0, 10 ** rng.randint(1, 12))) for _ in range(rng.randint(1, 5)))
            s += rng.choice(["", ".5", "%", " km", "\n"])
        elif kind == 4:  # code-like
            s = "%s%s(%s) {\n%sreturn %s;\n}" % (rng.choice(["def ", "int ", "fn ", ""]), rng.choice(WORDS),
                                               rng.choice(WORDS), rng.choice(SPACES), rng.randint(0, 999))
        elif kind == 5:  # mixed with special-token look-alikes
            s = rng.choice(BASE) + rng.choice(SPACES) + rng.choice(WORDS) + rng.choice(BASE)
        else:            # normalizer cases among words
            s = " ".join(rng.choice(UNICODE + WORDS) for _ in range(rng.randint(1, 6)))
        out.append(s)
    return out[:n]


def mismatches(ref, strings, rows):
    """Where `hearth run --tokenize` rows ({"ids", "text"}) differ from the `tokenizers` package's
    encode and decode of the same strings: one line per string that differs."""
    assert len(rows) == len(strings)
    bad = []
    for s, row in zip(strings, rows):
        ids = ref.encode(s).ids
        if row["ids"] != ids:
            bad.append("encode %r: ours %s, tokenizers %s" % (s, row["ids"][:16], ids[:16]))
        elif row["text"] != ref.decode(ids):
            bad.append("decode %r: ours %r, tokenizers %r" % (s, row["text"], ref.decode(ids)))
    return bad
