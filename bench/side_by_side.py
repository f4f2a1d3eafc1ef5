"""side_by_side: what the scripts that set a Flint benchmark's JSON beside torch's share (attention_vs_torch.py,
engine_vs_hf.py): reading a JSON input with a message naming it, and formatting a figure that may be missing."""
import json


def load(path, what, tool):
    """The JSON at path, or None after printing why it cannot be read (`what` names the input, `tool` the caller)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"{tool}: cannot read {what} JSON {path}: {e}")
        return None


def fmt(x, spec):
    """x formatted by spec, or "-" right-aligned to spec's width when there is no figure."""
    if isinstance(x, (int, float)):
        return format(x, spec)
    width = spec.split(".")[0]
    return "-".rjust(int(width) if width.isdigit() else 0)


def inputs(doc, tool, flint_arg, flint_tool):
    """Parses `FLINT_JSON TORCH_JSON [--json PATH]` and reads both files: (args, flint, torch), or None after
    printing the summary that says an input is missing (the caller then exits 1)."""
    import argparse
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument(flint_arg)
    ap.add_argument("torch_json")
    ap.add_argument("--json", metavar="PATH", help="write the comparison as JSON")
    args = ap.parse_args()
    flint = load(getattr(args, flint_arg), flint_tool, tool)
    torch = load(args.torch_json, "torch_baselines", tool)
    if flint is None or torch is None:
        print(f"\n## summary {tool}\nno comparison: an input is missing (did both steps run?)")
        return None
    return args, flint, torch
