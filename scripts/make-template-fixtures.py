#!/usr/bin/env python3
"""Renders fixed conversations through the models' own chat templates with jinja2
(the way transformers' apply_chat_template does) and writes
tests/data/templates/expected.json, the byte-exact answers for chat_template_test.cpp.

Run: /work/pyenv/bin/python scripts/make-template-fixtures.py
"""
import json
from datetime import datetime
from pathlib import Path

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "tests" / "data" / "templates"


def user(content):
    return {"role": "user", "content": content}


def assistant(content):
    return {"role": "assistant", "content": content}


def system(content):
    return {"role": "system", "content": content}


CONVERSATIONS = {
    "system_user": [system("You are a terse assistant."), user("What is the capital of France?")],
    "user_only": [user("Hello!")],
    "multi_turn": [
        system("You are a helpful assistant."),
        user("Hi"),
        assistant("Hello! How can I help?"),
        user("Tell me a joke."),
    ],
    "multi_turn_no_system": [user("What is 2+2?"), assistant("4"), user("And 3+3?")],
    "think_history": [
        user("What is 17*3?"),
        assistant("<think>\n17*3 = 51.\n</think>\n\nIt is 51."),
        user("And 17*4?"),
    ],
    "think_last_assistant": [
        system("Be brief."),
        user("Is 7 prime?"),
        assistant("<think>\nIt has no divisors but 1 and 7.\n</think>\n\nYes."),
    ],
    "think_empty_last": [user("hi"), assistant("<think>\n\n</think>\n\nHello.")],
    "think_multi_step": [
        user("Plan a trip."),
        assistant("<think>\nstep one\n</think>\n\nFirst, pick a place."),
        assistant("No reasoning here."),
        assistant("<think>step three</think>Done."),
    ],
    "think_odd": [
        user("q"),
        assistant("\n\n<think>\n\na</think>b</think>\n\nc"),
        user("q2"),
        assistant("no think end <think> here"),
        user("q3"),
    ],
    "tool_response_user": [
        user("Look it up."),
        assistant("<think>need a tool</think>Calling."),
        user("<tool_response>42</tool_response>"),
    ],
    "unicode": [
        system("Tu es un assistant. 你是助手。"),
        user("Grüße! 🌍 Was ist 你好?"),
        assistant("„Hallo“ — 👋"),
        user("Ünïcödé ✓ e\u0301 <｜User｜> <|im_end|>"),
    ],
    "whitespace": [
        system("\n  Padded system.  \n"),
        user(" \t leading and trailing \n"),
        assistant("\u3000ideographic space\u3000"),
        user("\u00a0nbsp\u2003em space\u2028"),
        assistant("\x1c\x85 control spaces \x0b\x0c"),
        user("\r\n"),
    ],
    "system_middle": [user("first"), system("A late system note."), user("second")],
    "two_systems": [system("First system."), user("u"), system("Second system."), user("v")],
    "empty_content": [user(""), assistant(""), user("x")],
}

# file, arch, kind, special tokens (as the model's tokenizer_config.json defines them)
MODELS = {
    "smollm2": ("HuggingFaceTB-SmolLM2-135M-Instruct.jinja", "llama", "chatml",
                {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}),
    "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct.jinja", "qwen2", "chatml",
                {"eos_token": "<|im_end|>"}),
    "qwen3": ("Qwen-Qwen3-0.6B.jinja", "qwen3", "qwen3",
              {"eos_token": "<|im_end|>"}),
    "llama3.2": ("meta-llama-Llama-3.2-3B-Instruct.jinja", "llama", "llama3",
                 {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "deepseek-r1-distill": ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "qwen2", "deepseek-r1",
                            {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}),
}

DEFAULT_DATE = "26 Jul 2024"  # what the Llama-3.2 template uses without strftime_now


def make_environment():
    """The sandbox, helpers and filters transformers' chat template renderer installs."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def option_sets(kind, conversation_name):
    """Every option combination a family reacts to; date_string is always given so the
    Llama output never depends on today's date."""
    sets = []
    for add_generation_prompt in (True, False):
        if kind == "qwen3":
            for enable_thinking in (True, False):
                sets.append({"add_generation_prompt": add_generation_prompt,
                             "enable_thinking": enable_thinking})
        elif kind == "llama3":
            sets.append({"add_generation_prompt": add_generation_prompt, "date_string": DEFAULT_DATE})
            if conversation_name == "system_user":
                sets.append({"add_generation_prompt": add_generation_prompt, "date_string": "05 Mar 2025"})
        else:
            sets.append({"add_generation_prompt": add_generation_prompt})
    return sets


def main():
    env = make_environment()
    out = {"conversations": CONVERSATIONS, "templates": {}}
    for name, (filename, arch, kind, special_tokens) in MODELS.items():
        source = (TEMPLATES / filename).read_text(encoding="utf-8")
        compiled = env.from_string(source)
        cases = []
        for conversation_name, messages in CONVERSATIONS.items():
            for options in option_sets(kind, conversation_name):
                rendered = compiled.render(messages=messages, tools=None, documents=None,
                                           **special_tokens, **options)
                cases.append({"conversation": conversation_name, **options, "expected": rendered})
        out["templates"][name] = {"file": filename, "arch": arch, "kind": kind, "cases": cases}
        print(f"{name}: {len(cases)} cases")
    path = TEMPLATES / "expected.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
