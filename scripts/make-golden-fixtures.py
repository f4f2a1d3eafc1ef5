#!/usr/bin/env python3
"""Golden fixtures for the default model (SmolLM2-135M-Instruct, GGUF Q4_1).

Reference: HF transformers loading the same GGUF (gguf_file=...), which
dequantizes every tensor to fp32 and runs the model in fp32: the same weights
and the same math as Flint's CPU backend, in another implementation.

Writes tests/data/golden/smollm2.json:
  {"model": file name, "reference": "...",
   "cases": [{"name", "prompt", "ids": [...], "greedy": [32 ids],
              "logits_file": "smollm2_<i>.f32", "top20": [...]}]}
and for each case the last position's logits as little-endian float32
(vocab values) in tests/data/golden/smollm2_<i>.f32.

Run: /work/pyenv/bin/python scripts/make-golden-fixtures.py
"""
import json
import pathlib

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "tests" / "data" / "golden"

PROMPTS = [
    ("plain", "The capital of France is"),
    ("chat", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
             "<|im_start|>user\nWhat is the boiling point of water in Celsius?<|im_end|>\n<|im_start|>assistant\n"),
    ("code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n"),
]


def main():
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=GGUF, dtype=torch.float32)
    model.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    cases = []
    for i, (name, prompt) in enumerate(PROMPTS):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float().numpy()
            # Plain argmax decoding, EOS not suppressed (generate()'s
            # min_new_tokens would mask it and change the reference).
            seq = list(ids)
            greedy = []
            for _ in range(32):
                nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
                greedy.append(nxt)
                seq.append(nxt)
        fname = f"smollm2_{i}.f32"
        logits.astype("<f4").tofile(OUT / fname)
        top20 = np.argsort(-logits, kind="stable")[:20].tolist()
        cases.append({"name": name, "prompt": prompt, "ids": ids, "greedy": greedy,
                      "logits_file": fname, "top20": top20})
        print(name, len(ids), "tokens; greedy:", repr(tok.decode(greedy)))
    (OUT / "smollm2.json").write_text(json.dumps({
        "model": GGUF,
        "reference": "transformers (gguf_file=, dequantized to fp32, fp32 forward)",
        "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
