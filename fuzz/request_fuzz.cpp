// Raw protobuf bytes of a flint.v1 GenerateRequest or ChatRequest through the gRPC
// service's own first steps (server::parse_and_prepare: parse, then prepare_generate
// / prepare_chat), against fixture tokenizers with each chat template.
// Byte 0 picks the method (bit 0) and the served model (the rest).
// An accepted request must pass the engine's validate().
#include <cstddef>
#include <cstdint>

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include "fuzz/served_model.h"
#include "server/inference_service.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const auto& models = flint::fuzz::served_models();
  const flint::server::ServedModel& model = models[(data[0] >> 1) % models.size()];
  const bool chat = data[0] & 1;
  grpc::Slice slice(data + 1, size - 1);
  const grpc::ByteBuffer bytes(&slice, 1);
  flint::server::PreparedRequest prepared;
  const grpc::Status status =
      chat ? flint::server::parse_and_prepare<flint::v1::ChatRequest>(bytes, model, prepared)
           : flint::server::parse_and_prepare<flint::v1::GenerateRequest>(bytes, model, prepared);
  if (status.ok()) flint::fuzz::check_prepared(prepared, model);
  return 0;
}
