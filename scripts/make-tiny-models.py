#!/usr/bin/env python3
"""Builds Flint's tiny random-weight test models and their golden outputs.

Run:  /work/pyenv/bin/python scripts/make-tiny-models.py [--out tests/data]
(torch CPU, transformers >= 5, safetensors, tokenizers). Fixed seeds: rerunning
on the same library versions rewrites identical files.

Models (hidden 64, 2 layers, 4 query heads, 2 kv heads, ffn 128):
  tiny-llama/  LlamaForCausalLM, f32, one model.safetensors, untied, rope_theta
               50000 with real llama3 rope scaling (factor 8, original_max 64, so
               the high, smooth and low frequency bands are all hit at head_dim 16);
               tokenizer.json (byte-level BPE, Llama-3 pre-tokenizer) and
               tokenizer_config.json (Llama-3 chat template).
  tiny-qwen2/  Qwen2ForCausalLM, bf16, one model.safetensors, q/k/v bias, tied
               embeddings (no lm_head.weight), rope_theta 20000; tokenizer.json
               (Qwen2 pre-tokenizer, ChatML tokens) and tokenizer_config.json.
  tiny-qwen3/  Qwen3ForCausalLM, f32, sharded (model.safetensors.index.json and
               model-0000N-of-0000M.safetensors), q/k norm, head_dim 32 (not
               hidden/heads = 16), untied, rope_theta 30000; no tokenizer files
               (load_model treats the tokenizer as optional).

Weights are random (std 0.2 for projections, 0.4 for embeddings and lm_head,
norm weights 1 + 0.25*N(0,1), biases 0.2*N(0,1)) so that logits are far from flat
and greedy tokens vary. The bf16 model's golden outputs are computed from its
bf16-rounded weights, upcast to f32.

golden.json (one per model directory):
  {
    "format": 1,
    "architecture": "LlamaForCausalLM" | "Qwen2ForCausalLM" | "Qwen3ForCausalLM",
    "weights_dtype": "float32" | "bfloat16",   # dtype stored in the safetensors
    "compute_dtype": "float32",                # transformers, eager attention
    "vocab_size": V,
    "cases": [                                 # 3 prompts
      {
        "input_ids": [int, ...],               # the prompt, positions 0..n-1, no BOS added
        "last_logits": [float, ...],           # V float32 logits at position n-1
        "greedy_tokens": [int, ...],           # 32 tokens, argmax decoding, no EOS stop
        "greedy_min_margin": float             # smallest top1-top2 logit gap over
                                               # the 32 greedy steps (how robust
                                               # the greedy sequence is to rounding)
      }, ...
    ]
  }
The greedy tokens come from generate(do_sample=False, max_new_tokens=32,
min_new_tokens=32) with EOS disabled (so min_new_tokens never masks a logit)
and are checked against a cache-free argmax loop.
"""
import argparse
import json
import os
import random
import shutil

import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM)

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")

COMMON = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128, rms_norm_eps=1e-5, max_position_embeddings=512)

NUM_GREEDY = 32
PROMPT_LENGTHS = (5, 17, 40)


def synthetic_corpus(seed, num_lines=3000):
    """Deterministic English-like text with digits and punctuation, for BPE training."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ten", "ra", "su", "the", "ing", "an", "or", "qu", "ex",
                 "st", "pre", "ion", "ly", "er", "de", "con", "vi", "ba", "no", "re", "ph"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(400)]
    lines = []
    for _ in range(num_lines):
        parts = []
        for _ in range(rng.randint(4, 14)):
            w = rng.choice(words)
            r = rng.random()
            if r < 0.1:
                w = w.capitalize()
            elif r < 0.15:
                w = str(rng.randint(0, 99999))
            elif r < 0.2:
                w = w + rng.choice([",", ".", "!", "?", "'s", ":"])
            parts.append(w)
        lines.append(" ".join(parts))
    return lines


def train_tokenizer(vocab_size, pattern, specials, seed):
    """Byte-level BPE whose vocabulary (merges + specials) is exactly vocab_size."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(specials), min_frequency=1,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(synthetic_corpus(seed), trainer=trainer)
    tok.add_special_tokens(specials)
    if tok.get_vocab_size() != vocab_size:
        raise SystemExit(f"tokenizer has {tok.get_vocab_size()} tokens, wanted {vocab_size}")
    return tok


def init_weights(model, seed):
    """Random weights large enough that logits are not flat."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.25 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.2 * noise)
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(0.4 * noise)
            else:
                p.copy_(0.2 * noise)


@torch.no_grad()
def greedy_no_cache(model, ids, steps):
    """Argmax decoding by full recompute; returns tokens and the smallest top1-top2 gap."""
    seq = list(ids)
    out, margin = [], float("inf")
    for _ in range(steps):
        logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1]
        top = torch.topk(logits, 2)
        margin = min(margin, float(top.values[0] - top.values[1]))
        tok = int(top.indices[0])
        out.append(tok)
        seq.append(tok)
    return out, margin


@torch.no_grad()
def make_golden(model, vocab_size, seed):
    rng = random.Random(seed)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    cases = []
    for n in PROMPT_LENGTHS:
        for attempt in range(50):
            ids = [rng.randrange(vocab_size) for _ in range(n)]
            greedy, margin = greedy_no_cache(model, ids, NUM_GREEDY)
            # Skip prompts whose greedy path hinges on a near tie.
            if margin >= 0.05:
                break
        else:
            raise SystemExit("no prompt with a clear greedy path")
        x = torch.tensor([ids])
        logits = model(x, use_cache=False).logits[0, -1].to(torch.float32)
        gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                             max_new_tokens=NUM_GREEDY, min_new_tokens=NUM_GREEDY,
                             eos_token_id=None, pad_token_id=0)
        gen_tokens = gen[0, n:].tolist()
        if gen_tokens != greedy:
            raise SystemExit(f"generate() {gen_tokens} != argmax loop {greedy}")
        cases.append({"input_ids": ids, "last_logits": [float(v) for v in logits.tolist()],
                      "greedy_tokens": greedy, "greedy_min_margin": margin})
        print(f"  prompt len {n}: logits std {logits.std():.2f}, "
              f"{len(set(greedy))} distinct greedy tokens, min margin {margin:.3f}")
    return cases


@torch.no_grad()
def check_reload(model_cls, out_dir, case):
    """The saved files give back the golden logits."""
    model = model_cls.from_pretrained(out_dir, dtype=torch.float32, attn_implementation="eager").eval()
    logits = model(torch.tensor([case["input_ids"]]), use_cache=False).logits[0, -1]
    err = (logits - torch.tensor(case["last_logits"])).abs().max().item()
    if err > 1e-5:
        raise SystemExit(f"{out_dir}: reloaded model's logits differ by {err}")


def write_tokenizer_config(out_dir, tok, bos, eos, add_bos, template):
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "add_bos_token": add_bos,
        "model_max_length": COMMON["max_position_embeddings"],
        "chat_template": template,
        "added_tokens_decoder": {
            str(tok.token_to_id(t)): {"content": t, "special": True, "lstrip": False,
                                      "rstrip": False, "normalized": False, "single_word": False}
            for t in sorted(tok.get_vocab(), key=tok.token_to_id) if t.startswith("<|")
        },
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def build(out_root, name, model_cls, config, seed, dtype, shard_size=None, tokenizer=None):
    print(f"{name}:")
    torch.manual_seed(seed)
    config.architectures = [model_cls.__name__]
    config._attn_implementation = "eager"
    model = model_cls(config).to(torch.float32).eval()
    init_weights(model, seed)
    if dtype == torch.bfloat16:
        # Golden on the stored values: round the parameters only (model.to() would
        # also round the rotary inv_freq buffer, which is computed, not stored).
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(dtype).to(torch.float32))
    cases = make_golden(model, config.vocab_size, seed + 1)

    out_dir = os.path.join(out_root, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    saved = model.to(dtype)
    saved.config.dtype = dtype
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    saved.save_pretrained(out_dir, safe_serialization=True, **kwargs)
    if tokenizer is not None:
        tok, bos, eos, add_bos, template = tokenizer
        tok.save(os.path.join(out_dir, "tokenizer.json"))
        write_tokenizer_config(out_dir, tok, bos, eos, add_bos, template)
    golden = {"format": 1, "architecture": model_cls.__name__,
              "weights_dtype": str(dtype).removeprefix("torch."), "compute_dtype": "float32",
              "vocab_size": config.vocab_size, "cases": cases}
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        json.dump(golden, f)
        f.write("\n")
    check_reload(model_cls, out_dir, cases[0])
    total = sum(os.path.getsize(os.path.join(out_dir, p)) for p in os.listdir(out_dir))
    print(f"  wrote {out_dir}: {sorted(os.listdir(out_dir))}, {total / 1024:.0f} KiB")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "tests", "data")))
    args = ap.parse_args()
    transformers.utils.logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    llama_specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                      "<|end_header_id|>", "<|eot_id|>"]
    llama_tok = train_tokenizer(512, LLAMA3_PATTERN, llama_specials, seed=11)
    bos_id = llama_tok.token_to_id("<|begin_of_text|>")
    llama_tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos_id)])
    build(args.out, "tiny-llama", LlamaForCausalLM,
          LlamaConfig(vocab_size=512, tie_word_embeddings=False,
                      bos_token_id=bos_id, eos_token_id=llama_tok.token_to_id("<|eot_id|>"),
                      rope_parameters={"rope_type": "llama3", "rope_theta": 50000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 64},
                      **COMMON),
          seed=1000, dtype=torch.float32,
          tokenizer=(llama_tok, "<|begin_of_text|>", "<|eot_id|>", True, LLAMA3_TEMPLATE))

    qwen_specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    qwen_tok = train_tokenizer(800, QWEN2_PATTERN, qwen_specials, seed=22)
    build(args.out, "tiny-qwen2", Qwen2ForCausalLM,
          Qwen2Config(vocab_size=800, tie_word_embeddings=True, bos_token_id=None,
                      eos_token_id=qwen_tok.token_to_id("<|im_end|>"),
                      rope_parameters={"rope_type": "default", "rope_theta": 20000.0},
                      use_sliding_window=False, **COMMON),
          seed=2000, dtype=torch.bfloat16,
          tokenizer=(qwen_tok, None, "<|im_end|>", False, CHATML_TEMPLATE))

    build(args.out, "tiny-qwen3", Qwen3ForCausalLM,
          Qwen3Config(vocab_size=1000, head_dim=32, tie_word_embeddings=False,
                      rope_parameters={"rope_type": "default", "rope_theta": 30000.0},
                      use_sliding_window=False, **COMMON),
          seed=3000, dtype=torch.float32, shard_size="300KB")


if __name__ == "__main__":
    main()
