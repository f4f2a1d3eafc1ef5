"""Python stubs for flint.v1, generated from proto/ at import time: `pb` (messages)
and `pb_grpc` (the Inference service). Needs grpc_tools, nothing else of the repository."""
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _generate_stubs():
    """Compiles proto/flint/v1/inference.proto with grpc_tools into a temp dir and imports it."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="flint-stubs-")
    rc = protoc.main(["protoc", f"-I{REPO / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}",
                      str(REPO / "proto/flint/v1/inference.proto")])
    if rc != 0:
        raise RuntimeError(f"protoc failed ({rc}) on proto/flint/v1/inference.proto")
    sys.path.insert(0, out)
    from flint.v1 import inference_pb2, inference_pb2_grpc  # noqa: E402
    return inference_pb2, inference_pb2_grpc


pb, pb_grpc = _generate_stubs()
