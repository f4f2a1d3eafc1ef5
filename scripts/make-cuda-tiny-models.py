#!/usr/bin/env python3
"""Builds two tiny random-weight models whose head dims the CUDA attention kernels take (64, 128), for the CUDA
backend's host-side twin test (tests/unit/twin_backend_test.cpp): the tiny-* models have head_dim 16 and 32.

Run:  /work/pyenv/bin/python scripts/make-cuda-tiny-models.py [--out tests/data]
(torch CPU, transformers >= 5). Fixed seeds.

  tiny-cuda-qwen2/  Qwen2ForCausalLM, bf16, q/k/v biases, head_dim 64 (hidden 128, 2 heads, 1 kv head), ffn 256,
                    2 layers, vocab 256, untied, rope_theta 20000.
  tiny-cuda-qwen3/  Qwen3ForCausalLM, bf16, q/k norm, head_dim 128 (hidden 128, 2 heads, 1 kv head), ffn 256,
                    2 layers, vocab 256, tied embeddings, rope_theta 30000.
Weights: std 0.2 (projections), 0.4 (embeddings, lm_head), norms 1 + 0.25 N(0, 1), biases 0.2 N(0, 1), so logits
are far from flat. No tokenizer files (load_model treats them as optional).
"""
import argparse
import os

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.25 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "embed" in name or "lm_head" in name:
                p.copy_(0.4 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data")
    a = ap.parse_args()
    common = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=512, rms_norm_eps=1e-6)
    m2 = Qwen2ForCausalLM(Qwen2Config(rope_theta=20000.0, tie_word_embeddings=False, **common))
    randomize(m2, 1)
    m2.to(torch.bfloat16).save_pretrained(os.path.join(a.out, "tiny-cuda-qwen2"))
    m3 = Qwen3ForCausalLM(Qwen3Config(head_dim=128, rope_theta=30000.0, tie_word_embeddings=True, **common))
    randomize(m3, 2)
    m3.to(torch.bfloat16).save_pretrained(os.path.join(a.out, "tiny-cuda-qwen3"))
    print("wrote tiny-cuda-qwen2 and tiny-cuda-qwen3 in", a.out)


if __name__ == "__main__":
    main()
