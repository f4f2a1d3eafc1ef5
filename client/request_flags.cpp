// Generation flags onto the request messages.
#include "client/request_flags.h"

#include <limits>

namespace flint::client {

const char* const kGenerationFlagsUsage =
    "generation options (unset: the server's defaults, see inference.proto):\n"
    "  --temperature T         0 is greedy (server default 1.0)\n"
    "  --top-p P  --top-k K  --min-p P\n"
    "  --repetition-penalty R  --presence-penalty P  --frequency-penalty P\n"
    "  --seed S                same seed, same prompt, same text\n"
    "  --max-tokens N          most tokens to generate (default: what fits the context)\n"
    "  --stop STR              stop at this text (repeatable)\n"
    "  --ignore-eos            generate past end-of-generation tokens\n"
    "  --no-think              turn the model's thinking off (reasoning models)\n"
    "  --reasoning-budget N    most thinking tokens\n"
    "  --priority N            higher runs first, in [-1000, 1000]\n"
    "  --request-id ID         echoed in the server's log and in the finish\n";

bool parse_generation_flag(ArgReader& r, GenerationFlags& f) {
  constexpr int64_t kMin32 = std::numeric_limits<int32_t>::min();
  constexpr int64_t kMax32 = std::numeric_limits<int32_t>::max();
  if (r.is("--temperature")) f.temperature = float(r.number());
  else if (r.is("--top-p")) f.top_p = float(r.number());
  else if (r.is("--top-k")) f.top_k = int32_t(r.integer(kMin32, kMax32));
  else if (r.is("--min-p")) f.min_p = float(r.number());
  else if (r.is("--repetition-penalty")) f.repetition_penalty = float(r.number());
  else if (r.is("--presence-penalty")) f.presence_penalty = float(r.number());
  else if (r.is("--frequency-penalty")) f.frequency_penalty = float(r.number());
  else if (r.is("--seed")) f.seed = r.unsigned_integer();
  else if (r.is("--max-tokens", "-n")) f.max_tokens = int32_t(r.integer(kMin32, kMax32));
  else if (r.is("--stop")) f.stop.push_back(r.value());
  else if (r.is("--ignore-eos")) f.ignore_eos = true;
  else if (r.is("--no-think")) f.think = false;
  else if (r.is("--reasoning-budget")) f.reasoning_budget = int32_t(r.integer(kMin32, kMax32));
  else if (r.is("--priority")) f.priority = int32_t(r.integer(kMin32, kMax32));
  else if (r.is("--request-id")) f.request_id = r.value();
  else return false;
  return true;
}

namespace {

// GenerateRequest and ChatRequest name these fields alike.
template <class Request>
void fill_common(const GenerationFlags& f, Request& req) {
  v1::SamplingParams& s = *req.mutable_sampling();
  if (f.temperature) s.set_temperature(*f.temperature);
  if (f.top_p) s.set_top_p(*f.top_p);
  if (f.top_k) s.set_top_k(*f.top_k);
  if (f.min_p) s.set_min_p(*f.min_p);
  if (f.repetition_penalty) s.set_repetition_penalty(*f.repetition_penalty);
  if (f.presence_penalty) s.set_presence_penalty(*f.presence_penalty);
  if (f.frequency_penalty) s.set_frequency_penalty(*f.frequency_penalty);
  if (f.seed) s.set_seed(*f.seed);
  v1::StoppingCriteria& st = *req.mutable_stopping();
  if (f.max_tokens) st.set_max_tokens(*f.max_tokens);
  for (const std::string& stop : f.stop) st.add_stop(stop);
  st.set_ignore_eos(f.ignore_eos);
  if (!f.think) req.mutable_reasoning()->set_enabled(false);
  if (f.reasoning_budget) req.mutable_reasoning()->set_budget_tokens(*f.reasoning_budget);
  req.set_priority(f.priority);
  req.set_request_id(f.request_id);
}

}  // namespace

void fill_request(const GenerationFlags& f, v1::GenerateRequest& req) { fill_common(f, req); }
void fill_request(const GenerationFlags& f, v1::ChatRequest& req) { fill_common(f, req); }

}  // namespace flint::client
