// An HTTP body through the OpenAI API's request path as server/http_server.cpp
// takes it: parse_body, parse_chat_request / parse_completion_request, then
// prepare_chat / prepare_generate and the error mapping. Both endpoints see every
// body; the served model is picked by the body's length (the bytes stay pure JSON).
// Only flint::Error may escape a step (the server turns it into 400); an accepted
// request must pass the engine's validate().
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.h"
#include "fuzz/served_model.h"
#include "server/openai_json.h"
#include "server/request_prep.h"

namespace {

namespace openai = flint::server::openai;
constexpr const char* kModelName = "flint-fuzz";

template <class Request, class Parse, class Prepare>
void endpoint(const openai::Json& body, const flint::server::ServedModel& model, Parse parse, Prepare prepare) {
  Request request;
  openai::ResponseOptions options;
  flint::server::PreparedRequest prepared;
  flint::Status status;
  openai::HttpError error;
  try {
    error = parse(body, kModelName, request, options);
    if (error.ok()) status = prepare(request, model, prepared);
  } catch (const flint::Error& e) {  // the tokenizer refusing its input
    status = {flint::StatusCode::InvalidArgument, e.what()};
  }
  if (!error.ok()) {
    if (error.status < 400 || error.status > 599) flint::fuzz::invariant_failed("HTTP error with a non-error status");
    (void)openai::dump(openai::error_body(error));
    return;
  }
  if (!status.ok()) {
    const openai::HttpError mapped = openai::from_status(status);
    if (mapped.ok()) flint::fuzz::invariant_failed("a refused request mapped to HTTP 200", status.message);
    (void)openai::dump(openai::error_body(mapped));
    return;
  }
  flint::fuzz::check_prepared(prepared, model);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  openai::Json body;
  const openai::HttpError bad_body =
      openai::parse_body(std::string_view(reinterpret_cast<const char*>(data), size), body);
  if (!bad_body.ok()) {
    if (bad_body.status != 400) flint::fuzz::invariant_failed("a body that is not JSON is not HTTP 400");
    return 0;
  }
  const auto& models = flint::fuzz::served_models();
  const flint::server::ServedModel& model = models[size % models.size()];
  endpoint<flint::v1::ChatRequest>(body, model, openai::parse_chat_request, flint::server::prepare_chat);
  endpoint<flint::v1::GenerateRequest>(body, model, openai::parse_completion_request,
                                       flint::server::prepare_generate);
  return 0;
}
