#!/work/pyenv/bin/python
"""Writes the tokenizer test fixtures under tests/data/tokenizer/.

  corpus.txt            one JSON string per line (so newlines, tabs and NULs fit)
  smollm2.ids.jsonl     per corpus line {"ids": [...]} from SmolLM2-135M-Instruct's
                        GGUF vocabulary, plus "plain" when parse_special=false differs
  llama3.tokenizer.json a tiny byte-level BPE trained here with the Llama-3 Split
                        regex (merges stored as ["a","b"] pairs, ignore_merges on)
  qwen2.tokenizer.json  the same with the Qwen2 regex (merges stored as "a b")
  {llama3,qwen2}.tokenizer_config.json, {llama3,qwen2}.ids.jsonl

SmolLM2 references: transformers (AutoTokenizer over the GGUF) and llama.cpp
(llama-cpp-python, vocab_only). transformers' GGUF converter does not know the
"smollm" pre-tokenizer and falls back to plain GPT-2 splitting, so we give it
SmolLM2's own (tokenizer.json: digits isolated, then ByteLevel) and report how
often the unpatched conversion differs. The script fails if the references
disagree. The C++ tests read only the files written here; they need no Python.

Usage: scripts/make-tokenizer-fixtures.py [--models DIR] [--out DIR]
"""
import argparse
import json
import random
import sys
import unicodedata
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parent.parent
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# ---------------------------------------------------------------- the corpus
HANDWRITTEN = [
    "", " ", "  ", "\t", "\n", "a", "Hello", "Hello world", " Hello world", "Hello world ",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you'll see they've done what he'd said; it's what we're told.",
    "IT'S LOUD, WE'LL GO, THEY'VE LEFT, I'D STAY, YOU'RE RIGHT, I'M OUT, DON'T.",
    "It'S mixed: We'Ll, They'vE, 'tis, 'twas, o'clock, rock'n'roll.",
    "'s 't 're 've 'm 'll 'd at the start", "''s '''", "it'ſ a long s", "don’t use curly ’s",
    "Mr. O'Neil's dog's toy's colour.",
    "Numbers: 0 1 12 123 1234 12345 123456 1234567 12345678901234567890",
    "Prices $3.50, €12,99, £1,000,000.00 and ¥500; 50% off; -42; +7; 1e-9; 6.02e23.",
    "Version v1.2.3-rc4, build 20240517, port :8080, IP 192.168.0.1, 0x1F 0b1010 0o777.",
    "Dates 2024-05-17T12:34:56Z and 17/05/2024; time 09:05.",
    "Other digits: ٣٤٥ ۱۲۳ १२३ ১২৩ ๑๒๓ 一二三 ①②③ ½ ¾ Ⅻ ⅷ ² ³ ¹",
    "x1y22z333w4444", "a1b2c3", "1a2b3c", "123abc456def", "  123", " 1 2 3 ", "007 0000 00001",
    "def add(a, b):\n    return a + b\n",
    "class Foo:\n\tdef __init__(self):\n\t\tself.x = [1, 2, 3]\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "#include <vector>\nint main() {\n  std::vector<int> v{1, 2, 3};\n  return v.size() > 2 ? 0 : 1;\n}\n",
    "if (x != nullptr && *x >= 0) { return x->value(); } // comment",
    "const f = async (x) => { await fetch(`/api/${x}`); };",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
    "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\"}}",
    "$ ls -la /usr/local/bin | grep -E '^d' && echo \"done\" >> log.txt 2>&1",
    "<html><body><div class=\"x\">Hi &amp; bye</div></body></html>",
    "x+=1;y-=2;z*=3;w/=4;a%=5;b**=6;c//=7;d<<=1;e>>=2;f&=g|h^i;",
    "=== !== <=> ... ;;; ::: ,,, ??? !!! ### @@@ ~~~ ``` ***",
    "path/to/file.txt C:\\Windows\\System32 ../../etc/passwd ~/.bashrc",
    "https://example.com/search?q=tokenizer&lang=en#results",
    "email: first.last+tag@example.co.uk",
    "    four spaces", "        eight spaces then text", "text then four    ", "a    b",
    "a                                        b",
    " " * 64, "\t" * 8, "\n" * 6, "\r\n\r\n", "a\r\nb\r\n", "\n \n \n", " \n", "\n ",
    "line one\nline two\n\nline four", "tabs\tbetween\twords", "\t leading tab space",
    "mixed \t \n \r whitespace \t\t\n\n", "trailing newline\n", "\n\nleading newlines",
    "end with spaces and newline   \n", "  \n  \n  indented block",
    "nbsp:\u00a0here, thin:\u2009here, ideographic:\u3000here, line sep:\u2028here, nel:\u0085here",
    "zero width:\u200bhere, joiner:\u200dhere, bom:\ufeffhere",
    "control chars: \u0001\u0002\u0007\u001b[31m red \u001b[0m \u007f",
    "bytes SmolLM2 lacks: a\u0004b\u0006c\u0013d\u0014e\u0016f\u001dg",
    "nul\u0000inside",
    "Emoji: 😀 😃 😄 👍 👍🏽 🎉🎉🎉 🚀",
    "Family: 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵🇺🇸 and hearts ❤️ 💙",
    "text😀text😀😀text", "😀", "🙂 🙃", "(╯°□°)╯︵ ┻━┻", "¯\\_(ツ)_/¯",
    "café naïve résumé façade coöperate jalapeño",
    "Ångström Œuvre Æsir Øresund Ŋ ß ẞ ĳ ŉ",
    "Tiếng Việt có dấu: Chào bạn, hôm nay thế nào?",
    "Ελληνικά: Καλημέρα κόσμε, ΑΒΓΔ αβγδ.",
    "Русский текст: Привет, мир! Съешь же ещё этих мягких французских булок.",
    "العربية: مرحبا بالعالم ١٢٣", "עברית: שלום עולם",
    "हिन्दी: नमस्ते दुनिया, यह एक परीक्षण है।",
    "ไทย: สวัสดีชาวโลก", "ქართული ენა", "Հայերեն", "ᚠᛇᚻ᛫ᛒᛦᚦ",
    "中文：你好，世界！这是一个测试。", "日本語：こんにちは世界。カタカナとひらがな、漢字。",
    "한국어: 안녕하세요 세계", "混合 mixed 文字 text 123 数字",
    "全角：ＡＢＣ１２３！？", "mathematical: ∀x ∈ ℝ, ∃y: x² + y² ≤ 1 ⇒ ∑ ∫ ∂ ∞ ≠ ≈",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒶𝓁𝓅𝒽𝒶", "𠜎𠜱𠝹𠱓 rare CJK ext B",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
    "before<|endoftext|>after", "<|endoftext|><|endoftext|>", "<|im_start|><|im_end|>",
    "<|im_start|", "<|im_start |>", "<<|im_end|>>", "x<|im_end|>y<|im_start|>z",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|eot_id|> trailing", " <|eot_id|>", "<think>\nLet me think step by step.\n</think>\nThe answer is 42.",
    "<think></think>", "</think>done", "<repo_name>flint<file_sep>main.cpp<filename>x",
    "<|reserved|> is not a token", "< | im_start | >", "<|IM_START|>",
    "A very long word: Pneumonoultramicroscopicsilicovolcanoconiosis and supercalifragilisticexpialidocious",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ababababababababababababababababababababababababababab",
    "--------------------------------------------------------------------------------",
    "================================================================",
    "!!!!!!!!!!????????........", "\\\\\\\\////////", "''''''''\"\"\"\"\"\"",
    "Markdown **bold** _italic_ `code` [link](http://x.y) - item\n- item 2\n1. first",
    "| col1 | col2 |\n|------|------|\n| a    | b    |",
    "Q: What is 2+2?\nA: 4.\n\nQ: And 15*17?\nA: 255.",
    "The year 1999 was followed by 2000, then 2001.",
    "He said, \"Hello!\" and she replied: 'Hi...' — then left–quickly.",
    "snake_case camelCase PascalCase kebab-case SCREAMING_SNAKE_CASE",
    "e.g. i.e. etc. vs. Dr. Mr. Mrs. U.S.A.",
    "   ", "\t\t", "\n\n", " \t\n", "x ", " x", "  x", "x  ", " x ",
]

FRAGMENTS = [
    "the", " of", " and", "ing", " tokenizer", " model", "Hello", " world", "!", "?", ".", ",",
    " 42", "2024", "3.14", " 1000000", "'s", "'LL", "n't", " ", "  ", "    ", "\t", "\n", "\n\n",
    "\r\n", "😀", "👍🏽", "é", "ñ", "ü", "中文", "日本", "한국", "Ж", "λ", "<|im_start|>",
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<think>", "</think>", "{", "}", "()", "[]",
    "->", "::", "==", "//", "#", "$", "%", "&&", "||", "_", "-", "x", "y", "z", "foo", "Bar",
    "BAZ", "café", "naïve", "\u00a0", "\u3000", "123abc", "a1", "™", "©", "§", "¶", "°",
]


def make_corpus():
    lines = list(HANDWRITTEN)
    rng = random.Random(20240517)
    for _ in range(110):
        lines.append("".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(2, 14))))
    # A long prompt-like line (several hundred tokens).
    lines.append(" ".join(HANDWRITTEN[10:40]).replace("\n", " ") * 2)
    for line in lines:
        assert unicodedata.is_normalized("NFC", line), f"corpus line is not NFC: {line!r}"
    return lines


# ---------------------------------------------------------- SmolLM2 references
def smollm2_references(models_dir, lines):
    """Returns (ids, plain_ids) per line, after checking the references agree."""
    from transformers import AutoTokenizer

    gguf_path = models_dir / GGUF_NAME
    hf = AutoTokenizer.from_pretrained(str(models_dir), gguf_file=GGUF_NAME)
    unpatched = [hf.encode(line, add_special_tokens=False) for line in lines]
    # SmolLM2's own tokenizer.json: Digits(individual_digits) then ByteLevel(use_regex).
    hf.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    hf_ids = [hf.encode(line, add_special_tokens=False) for line in lines]
    hf_plain = [hf(line, add_special_tokens=False, split_special_tokens=True)["input_ids"] for line in lines]
    differs = sum(a != b for a, b in zip(unpatched, hf_ids))
    print(f"transformers GGUF conversion without SmolLM2's digit split differs on {differs}/{len(lines)} lines")

    try:
        from llama_cpp import Llama
    except ImportError:
        print("llama-cpp-python is not installed: SmolLM2 ids come from transformers alone", file=sys.stderr)
        return hf_ids, hf_plain, False
    llm = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    bad = []
    for i, line in enumerate(lines):
        raw = line.encode("utf-8")
        lc = llm.tokenize(raw, add_bos=False, special=True)
        lc_plain = llm.tokenize(raw, add_bos=False, special=False)
        if lc != hf_ids[i] or lc_plain != hf_plain[i]:
            bad.append((i, line, hf_ids[i], lc, hf_plain[i], lc_plain))
    for i, line, a, b, c, d in bad[:10]:
        print(f"line {i} {line!r}\n  transformers {a}\n  llama.cpp    {b}\n  plain tf {c}\n  plain lc {d}")
    if bad:
        sys.exit(f"SmolLM2 references disagree on {len(bad)} lines")
    print(f"SmolLM2: transformers and llama.cpp agree on all {len(lines)} lines (parse_special on and off)")
    return hf_ids, hf_plain, True


# ------------------------------------------------------ trained tiny tokenizers
def train_tiny(lines, split, specials_in_training, specials_added, normal_added):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + len(specials_in_training) + 420, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=specials_in_training)
    tok.train_from_iterator(lines * 3, trainer)
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials_added])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in normal_added])
    return tok


def llama3_tokenizer(lines):
    tok = train_tiny(lines, LLAMA3_SPLIT, [],
                     ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                      "<|eot_id|>"], ["<think>", "</think>"])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    spec = json.loads(tok.to_str())
    spec["model"]["ignore_merges"] = True  # as in Llama-3's tokenizer.json
    spec["model"]["merges"] = [list(m) if isinstance(m, (list, tuple)) else m.split(" ", 1)
                               for m in spec["model"]["merges"]]
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "model_max_length": 131072,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    return spec, config


def qwen2_tokenizer(lines):
    tok = train_tiny(lines, QWEN2_SPLIT, ["<|endoftext|>"], ["<|im_start|>", "<|im_end|>"],
                     ["<think>", "</think>"])
    spec = json.loads(tok.to_str())
    spec["normalizer"] = {"type": "NFC"}  # as in Qwen2's tokenizer.json; the corpus is NFC already
    spec["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                              "use_regex": False}
    spec["model"]["merges"] = [" ".join(m) if isinstance(m, (list, tuple)) else m for m in spec["model"]["merges"]]
    config = {"add_prefix_space": False, "bos_token": None, "eos_token": "<|im_end|>",
              "pad_token": "<|endoftext|>", "errors": "replace", "tokenizer_class": "Qwen2Tokenizer"}
    return spec, config


def reference_ids(spec, lines):
    tok = Tokenizer.from_str(json.dumps(spec))
    ids = []
    for line in lines:
        enc = tok.encode(line, add_special_tokens=False).ids
        assert tok.decode(enc, skip_special_tokens=False) == line, f"tokenizers round trip fails on {line!r}"
        ids.append(enc)
    return ids


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "tokenizer")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    lines = make_corpus()
    write_jsonl(args.out / "corpus.txt", lines)
    print(f"corpus: {len(lines)} lines")

    if (args.models / GGUF_NAME).exists():
        ids, plain, _ = smollm2_references(args.models, lines)
        write_jsonl(args.out / "smollm2.ids.jsonl",
                    [{"ids": a} if a == b else {"ids": a, "plain": b} for a, b in zip(ids, plain)])
    else:
        print(f"{args.models / GGUF_NAME} not found: smollm2.ids.jsonl left as it is", file=sys.stderr)

    for name, build in (("llama3", llama3_tokenizer), ("qwen2", qwen2_tokenizer)):
        spec, config = build(lines)
        (args.out / f"{name}.tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        (args.out / f"{name}.tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        write_jsonl(args.out / f"{name}.ids.jsonl", [{"ids": x} for x in reference_ids(spec, lines)])
        print(f"{name}: {len(spec['model']['merges'])} merges, {len(spec['added_tokens'])} added tokens")

    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"fixtures: {total / 1024:.0f} KiB in {args.out}")


if __name__ == "__main__":
    main()
