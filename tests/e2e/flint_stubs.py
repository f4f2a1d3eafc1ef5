"""Python stubs for flint.v1 and grpc.health.v1: `pb` (messages) and `pb_grpc` (the Inference service's stub),
`health_pb2` and `health_pb2_grpc` (the health service's).

Two ways to get them:
  generated   (the default when grpc_tools and grpcio-health-checking are installed): proto/flint/v1/inference.proto
              compiled with grpc_tools into a temp dir at import time, the health stubs from grpc_health.
  descriptors (when they are not, or FLINT_STUBS=descriptors): message classes and stubs built at run time from a
              serialized FileDescriptorSet (FLINT_PROTO_DESCRIPTORS), which `python3 flint_stubs.py --write-descriptors
              FILE` writes where the generated stubs work. Needs only grpcio and protobuf, so the suite runs on a
              machine that has those and nothing else of its requirements (the GPU machine: scripts/gpu-check.sh).
"""
import os
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _generated():
    """Compiles proto/flint/v1/inference.proto with grpc_tools into a temp dir and imports it, with grpc_health's."""
    from grpc_tools import protoc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    out = tempfile.mkdtemp(prefix="flint-stubs-")
    rc = protoc.main(["protoc", f"-I{REPO / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}",
                      str(REPO / "proto/flint/v1/inference.proto")])
    if rc != 0:
        raise RuntimeError(f"protoc failed ({rc}) on proto/flint/v1/inference.proto")
    sys.path.insert(0, out)
    from flint.v1 import inference_pb2, inference_pb2_grpc  # noqa: E402
    return inference_pb2, inference_pb2_grpc, health_pb2, health_pb2_grpc


def write_descriptors(path):
    """Writes the FileDescriptorSet of flint.v1 and grpc.health.v1 (from the generated stubs) to path."""
    from google.protobuf import descriptor_pb2

    inference_pb2, _, health_pb2, _ = _generated()
    files = descriptor_pb2.FileDescriptorSet()
    for module in (health_pb2, inference_pb2):
        module.DESCRIPTOR.CopyToProto(files.file.add())
    Path(path).write_bytes(files.SerializeToString())


def _message_class(descriptor):
    from google.protobuf import message_factory

    if hasattr(message_factory, "GetMessageClass"):  # protobuf 4.21 and later
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


def _stub_class(service, proto):
    """A stub like grpc_tools' for `service`: one callable per method, on a channel's generic multicallables."""
    streaming = {m.name: (m.client_streaming, m.server_streaming) for m in proto.method}

    def __init__(self, channel):
        for method in service.methods:
            request, response = _message_class(method.input_type), _message_class(method.output_type)
            make = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
                    (True, False): channel.stream_unary, (True, True): channel.stream_stream}[streaming[method.name]]
            setattr(self, method.name, make(f"/{service.full_name}/{method.name}",
                                            request_serializer=request.SerializeToString,
                                            response_deserializer=response.FromString))

    return type(service.name + "Stub", (), {"__init__": __init__})


def _from_descriptors(path):
    """The four modules, built from the FileDescriptorSet at path."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    from google.protobuf.internal import enum_type_wrapper

    files = descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    modules = {}
    for proto in files.file:
        fd = pool.FindFileByName(proto.name)
        messages, services = types.ModuleType(proto.package + " messages"), types.ModuleType(proto.package + " stubs")
        messages.DESCRIPTOR = fd
        for name, message in fd.message_types_by_name.items():
            setattr(messages, name, _message_class(message))
        for name, enum in fd.enum_types_by_name.items():
            setattr(messages, name, enum_type_wrapper.EnumTypeWrapper(enum))
            for value in enum.values:
                setattr(messages, value.name, value.number)
        for service_proto in proto.service:
            service = fd.services_by_name[service_proto.name]
            setattr(services, service.name + "Stub", _stub_class(service, service_proto))
        modules[proto.package] = (messages, services)
    for package in ("flint.v1", "grpc.health.v1"):
        if package not in modules:
            raise RuntimeError(f"flint_stubs: {path} has no {package} file")
    return (*modules["flint.v1"], *modules["grpc.health.v1"])


def _load():
    mode = os.environ.get("FLINT_STUBS", "")
    descriptors = os.environ.get("FLINT_PROTO_DESCRIPTORS", "")
    if mode not in ("", "generated", "descriptors"):
        raise RuntimeError(f"flint_stubs: FLINT_STUBS={mode!r}: want generated or descriptors")
    if mode != "descriptors":
        try:
            return _generated()
        except ImportError as e:
            if mode == "generated" or not descriptors:
                raise RuntimeError(f"flint_stubs: {e}: install tests/e2e/requirements.txt (scripts/setup.sh), or "
                                   "set FLINT_PROTO_DESCRIPTORS to a file flint_stubs.py --write-descriptors "
                                   "wrote") from e
    if not descriptors or not Path(descriptors).is_file():
        raise RuntimeError(f"flint_stubs: FLINT_PROTO_DESCRIPTORS={descriptors!r} is not a file "
                           "(python3 tests/e2e/flint_stubs.py --write-descriptors FILE writes one)")
    return _from_descriptors(descriptors)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--write-descriptors":
        sys.exit("usage: flint_stubs.py --write-descriptors FILE")
    write_descriptors(sys.argv[2])
    print(f"flint_stubs: wrote {sys.argv[2]}")
else:
    pb, pb_grpc, health_pb2, health_pb2_grpc = _load()
