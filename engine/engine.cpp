// The engine loop: drain submissions and cancellations, expire deadlines, then
// schedule → forward → sample → postprocess → stop checks → deltas, one step at a time.
#include "engine/engine.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <utility>

namespace flint {

namespace {

int32_t capacity_of(const Backend& backend) {
  int32_t n = backend.num_kv_blocks() * backend.block_size();
  if (backend.config().max_context > 0) n = std::min(n, backend.config().max_context);
  return n;
}

// The scheduler as configured, with decode-written blocks kept out of the prefix cache when the backend's decode
// arithmetic differs from its prefill's (Backend::decode_matches_prefill).
SchedulerConfig scheduler_config(SchedulerConfig c, const Backend& backend) {
  c.cache_decoded_blocks = c.cache_decoded_blocks && backend.decode_matches_prefill();
  return c;
}

}  // namespace

Engine::Engine(Backend& backend, const Tokenizer* tokenizer, const EngineConfig& config)
    : backend_(backend),
      tokenizer_(tokenizer),
      config_(config),
      max_num_tokens_(capacity_of(backend)),
      scheduler_(scheduler_config(config.scheduler, backend),
                 {.num_blocks = backend.num_kv_blocks(), .block_size = backend.block_size()}),
      device_sampling_(config.device_sampling && backend.samples_on_device()) {
  publish_stats();
  last_step_ns_ = Clock::now().time_since_epoch().count();
  running_ = true;
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() { shutdown(); }

SubmitResult Engine::submit(EngineRequest request) {
  Status status = validate(request, backend_.config().vocab_size, max_num_tokens_);
  if (status.ok() && !tokenizer_ && !request.stopping.stop.empty())
    status = {StatusCode::InvalidArgument, "stop strings need a tokenizer, and this engine has none"};
  if (status.ok() && !tokenizer_ && !request.reasoning.think_end.empty())
    status = {StatusCode::InvalidArgument, "reasoning markers need a tokenizer, and this engine has none"};
  if (!status.ok()) return {std::move(status), nullptr};
  std::shared_ptr<RequestStream> stream;
  {
    std::lock_guard lock(mu_);
    if (stop_requested_)
      return {{StatusCode::Unavailable, fatal_.empty() ? "the engine is shutting down" : fatal_}, nullptr};
    if (int64_t(submissions_.size()) + num_waiting_.load() >= config_.max_num_waiting)
      return {{StatusCode::ResourceExhausted,
               "the waiting queue is full (" + std::to_string(config_.max_num_waiting) + " requests)"},
              nullptr};
    const uint64_t id = next_request_id_++;
    stream = std::make_shared<RequestStream>(id);
    submissions_.push_back({id, std::move(request), stream, Clock::now()});
    num_submitted_ = int32_t(submissions_.size());
  }
  cv_.notify_one();
  return {{}, std::move(stream)};
}

void Engine::cancel(uint64_t request_id) {
  {
    std::lock_guard lock(mu_);
    cancels_.push_back(request_id);
  }
  cv_.notify_one();
}

void Engine::shutdown() {
  {
    std::lock_guard lock(mu_);
    stop_requested_ = true;
  }
  stopping_ = true;
  cv_.notify_all();
  std::lock_guard join_lock(join_mu_);
  if (thread_.joinable()) thread_.join();
}

std::string Engine::fatal_error() const {
  std::lock_guard lock(mu_);
  return fatal_;
}

EngineStats Engine::stats() const {
  return {.num_waiting = num_waiting_.load(),
          .num_submitted = num_submitted_.load(),
          .num_running = num_running_.load(),
          .num_free_blocks = num_free_blocks_.load(),
          .num_blocks = scheduler_.block_manager().num_blocks(),  // fixed at construction
          .num_steps = num_steps_published_.load(),
          .num_preempted = num_preempted_published_.load(),
          .num_cached_blocks = num_cached_blocks_.load(),
          .num_prefix_query_tokens = num_prefix_query_tokens_.load(),
          .num_prefix_hit_tokens = num_prefix_hit_tokens_.load()};
}

void Engine::publish_stats() {
  num_waiting_ = scheduler_.num_waiting();
  num_running_ = scheduler_.num_running();
  const BlockManagerStats blocks = scheduler_.block_manager().stats();
  num_free_blocks_ = blocks.num_free_blocks;
  num_cached_blocks_ = blocks.num_cached_blocks;
  num_prefix_query_tokens_ = blocks.num_prefix_query_tokens;
  num_prefix_hit_tokens_ = blocks.num_prefix_hit_tokens;
  num_steps_published_ = num_steps_;
  num_preempted_published_ = num_preempted_;
}

void Engine::loop() {
  std::vector<Submission> submissions;
  std::vector<uint64_t> cancels;
  while (true) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] {
        return stop_requested_ || !submissions_.empty() || !cancels_.empty() || scheduler_.has_unfinished();
      });
      submissions.swap(submissions_);
      num_submitted_ = 0;  // in neither count until the step's first publish_stats(): microseconds
      cancels.swap(cancels_);
      if (stop_requested_) break;
    }
    try {
      step(submissions, cancels);
    } catch (const std::exception& e) {
      if (std::string fatal = backend_.fatal_error(); !fatal.empty()) {
        // Nothing can run any more: stop as a shutdown does, every request ending with this reason.
        std::fprintf(stderr, "engine: the backend failed for good: %s (the step: %s)\n", fatal.c_str(), e.what());
        submissions.clear();  // all admitted by step() before it failed: they end with the running ones below
        {
          std::lock_guard lock(mu_);
          fatal_ = "the backend failed and can run no more steps: " + fatal;
          stop_requested_ = true;
          submissions.swap(submissions_);  // submitted since: never admitted
        }
        stopping_ = true;
        break;
      }
      fail_all(StatusCode::Internal, std::string("engine step failed: ") + e.what());
    }
    submissions.clear();
    cancels.clear();
    last_step_ns_ = Clock::now().time_since_epoch().count();
  }
  // Shutting down: requests never admitted, then every admitted one, end with Unavailable.
  std::string why;
  {
    std::lock_guard lock(mu_);
    why = fatal_.empty() ? "the engine shut down" : fatal_;
  }
  const Status unavailable{StatusCode::Unavailable, why};
  for (Submission& s : submissions) {
    StreamFinal final;
    final.reason = FinishReason::Error;
    final.status = unavailable;
    final.usage.prompt_tokens = int32_t(s.request.prompt_token_ids.size());
    final.timings.queued = final.timings.total = Clock::now() - s.submit_time;
    s.stream->push(std::move(final));
  }
  fail_all(unavailable.code, unavailable.message);
  running_ = false;
}

void Engine::step(std::vector<Submission>& submissions, std::vector<uint64_t>& cancels) {
  for (Submission& s : submissions) {
    std::shared_ptr<RequestStream> stream = s.stream;
    try {
      admit(std::move(s));
    } catch (const std::exception& e) {  // validated on submit, so not expected: still answered
      StreamFinal final;
      final.reason = FinishReason::Error;
      final.status = {StatusCode::Internal, e.what()};
      stream->push(std::move(final));
    }
  }
  for (uint64_t request_id : cancels) {
    auto it = seq_of_request_.find(request_id);
    if (it == seq_of_request_.end()) continue;
    Active& active = active_.at(it->second);
    if (!active.finishing) finish(it->second, active, FinishReason::Cancelled, {StatusCode::Cancelled, "cancelled"});
  }
  const Clock::time_point now = Clock::now();
  for (auto& [seq_id, active] : active_)
    if (!active.finishing && active.request.deadline && *active.request.deadline <= now)
      finish(seq_id, active, FinishReason::Deadline, {StatusCode::DeadlineExceeded, "deadline exceeded"});
  retire();  // cancelled and expired sequences leave before scheduling
  if (scheduler_.has_unfinished()) run_step();
  retire();
}

void Engine::admit(Submission&& submission) {
  EngineRequest& request = submission.request;
  // Before add(): a throw leaves the scheduler untouched.
  Sampler sampler(request.sampling);
  std::vector<int32_t> think_end_ids;
  if (request.reasoning.budget_tokens && tokenizer_)
    think_end_ids = tokenizer_->encode(request.reasoning.think_end, /*parse_special=*/true, /*add_bos=*/false);
  const SeqId seq_id = scheduler_.add(request.prompt_token_ids, request.priority);  // fits: validated
  size_t max_stop_len = 0;
  for (const std::string& s : request.stopping.stop) max_stop_len = std::max(max_stop_len, s.size());
  Active& active = active_.emplace(seq_id, Active(std::move(sampler), request.reasoning)).first->second;
  active.think_end_ids = std::move(think_end_ids);
  active.request_id = submission.id;
  active.request = std::move(request);
  active.stream = std::move(submission.stream);
  active.max_stop_len = max_stop_len;
  active.submit_time = submission.submit_time;
  // skip_special: control tokens carry no text for the client.
  if (tokenizer_) active.detokenizer.emplace(*tokenizer_, /*skip_special=*/true);
  seq_of_request_[submission.id] = seq_id;
  if (config_.metrics) config_.metrics->prompt_tokens->inc(double(active.request.prompt_token_ids.size()));
  // A budget of 0 on a block the prompt opened: the marker goes in before the first sample.
  const std::optional<int32_t> budget = active.request.reasoning.budget_tokens;
  if (budget && *budget <= 0 && active.splitter.state() == ReasoningState::Reasoning) close_reasoning(seq_id, active);
}

void Engine::run_step() {
  ScheduledStep step = scheduler_.schedule();
  ++num_steps_;
  num_preempted_ += step.num_preempted;
  const Clock::time_point now = Clock::now();
  for (SeqId id : step.seq_ids) {
    Active& active = active_.at(id);
    if (active.first_scheduled) continue;
    active.first_scheduled = now;
    active.cached_prompt_tokens = scheduler_.find(id)->num_cached_tokens();
    if (config_.metrics) config_.metrics->queue_time->observe(now - active.submit_time);
  }
  publish_stats();  // before forward: submit() sees the waiting count of this step
  if (step.empty()) return;

  const std::vector<SampleResult> samples = device_sampling_ ? forward_sample_on_device(step) : forward_sample_on_host(step);
  std::vector<int32_t> sampled;
  sampled.reserve(samples.size());
  for (const SampleResult& s : samples) sampled.push_back(s.token_id);
  scheduler_.postprocess(step, sampled);
  const Clock::time_point sampled_at = Clock::now();  // one clock read per step, not per token
  if (config_.metrics) {
    config_.metrics->generation_tokens->inc(double(sampled.size()));
    config_.metrics->generation_rate->add(double(sampled.size()), sampled_at);
  }
  for (size_t r = 0; r < step.logit_seq_ids.size(); ++r)
    on_token(step.logit_seq_ids[r], active_.at(step.logit_seq_ids[r]), samples[r], sampled_at);
}

std::vector<SampleResult> Engine::forward_sample_on_host(const ScheduledStep& step) {
  const int32_t vocab = backend_.config().vocab_size;
  logits_.resize(step.logit_seq_ids.size() * size_t(vocab));
  backend_.forward(step.plan, logits_.data());
  // Each row with its own request's sampler; penalties see prompt + output so far.
  std::vector<SampleResult> samples;
  for (size_t r = 0; r < step.logit_seq_ids.size(); ++r) {
    const SeqId id = step.logit_seq_ids[r];
    const Sequence& seq = *scheduler_.find(id);
    samples.push_back(active_.at(id).sampler.sample(std::span(logits_.data() + r * size_t(vocab), size_t(vocab)),
                                                    seq.token_ids(), seq.output_token_ids()));
  }
  return samples;
}

std::vector<SampleResult> Engine::forward_sample_on_device(const ScheduledStep& step) {
  const int32_t vocab = backend_.config().vocab_size;
  const size_t rows = step.logit_seq_ids.size();
  // Each row's draw is keyed by (seed, the sequence's output position): the same tokens whatever else is batched,
  // and after a preemption's recompute. Penalties see prompt + output so far.
  sample_batch_.clear();
  bool want_top = false;
  for (SeqId id : step.logit_seq_ids) {
    const Sequence& seq = *scheduler_.find(id);
    const SamplingParams& params = active_.at(id).request.sampling;
    sample_batch_.add_row(to_sample_row(params, uint64_t(seq.num_output_tokens())), seq.token_ids(),
                          seq.output_token_ids(), vocab);
    want_top = want_top || params.num_logprobs > 0;
  }
  sampled_ids_.resize(rows);
  sampled_logprobs_.resize(rows);
  std::vector<SampleResult> samples(rows);
  if (!want_top) {
    // No row reports logprobs (num_logprobs is 0 on every row): the device skips the chosen token's.
    std::fill(sampled_logprobs_.begin(), sampled_logprobs_.end(), 0.0f);
    backend_.forward_sample(step.plan, sample_batch_, sampled_ids_.data(), nullptr);
  } else {
    // Top logprobs need the logits: they come back, and the twin samples them on the host as the device would.
    logits_.resize(rows * size_t(vocab));
    backend_.forward(step.plan, logits_.data());
    cpu::sample(sample_batch_.host_params(logits_.data(), vocab, vocab, sampled_ids_.data(), sampled_logprobs_.data()));
    for (size_t r = 0; r < rows; ++r) {
      const SamplingParams& params = active_.at(step.logit_seq_ids[r]).request.sampling;
      if (params.num_logprobs > 0)  // of the penalised logits (cpu::sample applied the penalties in place)
        samples[r].top = top_logprobs(std::span(logits_.data() + r * size_t(vocab), size_t(vocab)), params.temperature,
                                      params.num_logprobs);
    }
  }
  for (size_t r = 0; r < rows; ++r) samples[r].token_id = sampled_ids_[r], samples[r].logprob = sampled_logprobs_[r];
  return samples;
}

bool Engine::is_stop_token(const Active& active, int32_t token_id) const {
  const auto& stop_ids = active.request.stopping.stop_token_ids;
  if (std::ranges::find(stop_ids, token_id) != stop_ids.end()) return true;
  return !active.request.stopping.ignore_eos && tokenizer_ && tokenizer_->is_eog(token_id);
}

void Engine::on_token(SeqId seq_id, Active& active, const SampleResult& sample, Clock::time_point now) {
  const Sequence& seq = *scheduler_.find(seq_id);
  const int32_t token_id = sample.token_id;
  if (!active.first_token) active.first_token = now;
  if (config_.metrics) {
    if (active.last_token) config_.metrics->inter_token_latency->observe(now - *active.last_token);
    else config_.metrics->time_to_first_token->observe(now - active.submit_time);
  }
  active.last_token = now;
  ReasoningSplitter& splitter = active.splitter;
  const ReasoningState before = splitter.state();
  const bool stop_token = is_stop_token(active, token_id);
  const bool ending = stop_token || seq.num_output_tokens() >= active.request.stopping.max_tokens;
  std::vector<ReasoningPiece> pieces;
  if (stop_token) {  // not emitted: neither its id nor its text; inside the block it counts as reasoning
    if (before == ReasoningState::Reasoning) ++active.num_reasoning_tokens;
  } else {
    splitter.push(token_text(active, token_id), pieces);
    active.undecided.token_ids.push_back(token_id);
    if (active.request.sampling.num_logprobs > 0) active.undecided.logprobs.push_back({token_id, sample.logprob, sample.top});
  }
  // The ids' channel: reasoning inside the block and for tokens that open or close
  // it; none yet while the start is undecided (they wait in active.undecided).
  std::optional<Channel> channel;
  if (before == ReasoningState::Reasoning ||
      (before == ReasoningState::Undecided && splitter.state() != ReasoningState::Undecided && splitter.opened()))
    channel = Channel::Reasoning;
  else if (splitter.state() != ReasoningState::Undecided)
    channel = Channel::Content;
  if (ending) {
    if (active.detokenizer) splitter.push(active.detokenizer->flush(), pieces);
    splitter.flush(pieces);
    if (!channel) channel = Channel::Content;  // the output ended undecided: it was all content
  }
  StreamDelta ids;
  if (channel) {
    ids = std::exchange(active.undecided, StreamDelta{});
    if (*channel == Channel::Reasoning) active.num_reasoning_tokens += int32_t(ids.token_ids.size());
  }
  std::optional<std::string> matched;
  const bool stop_string = emit(active, pieces, std::move(ids), channel.value_or(Channel::Content), ending, matched);
  const std::optional<int32_t> budget = active.request.reasoning.budget_tokens;
  if (stop_token || stop_string)
    finish(seq_id, active, FinishReason::Stop, {}, std::move(matched));
  else if (ending)
    finish(seq_id, active, FinishReason::Length);
  else if (budget && splitter.state() == ReasoningState::Reasoning && active.num_reasoning_tokens >= *budget)
    close_reasoning(seq_id, active);
}

std::string Engine::token_text(Active& active, int32_t token_id) {
  if (!active.detokenizer) return {};
  // The detokenizer skips special tokens; a marker that is one still has to reach the splitter.
  const ReasoningOptions& reasoning = active.request.reasoning;
  if (!reasoning.think_end.empty() && tokenizer_->is_special(token_id)) {
    const std::string& bytes = tokenizer_->token_bytes(token_id);
    if (bytes == reasoning.think_start || bytes == reasoning.think_end) return active.detokenizer->flush() + bytes;
  }
  return active.detokenizer->push(token_id);
}

bool Engine::emit(Active& active, std::vector<ReasoningPiece>& pieces, StreamDelta ids, Channel ids_channel, bool flush,
                  std::optional<std::string>& matched) {
  StreamDelta reasoning, content;
  reasoning.channel = Channel::Reasoning;
  content.channel = Channel::Content;
  for (ReasoningPiece& piece : pieces) (piece.channel == Channel::Reasoning ? reasoning.text : active.held_text) += piece.text;
  const bool stopped = take_text(active, flush, content.text, matched);
  StreamDelta& owner = ids_channel == Channel::Reasoning ? reasoning : content;
  owner.token_ids = std::move(ids.token_ids);
  owner.logprobs = std::move(ids.logprobs);
  for (StreamDelta* delta : {&reasoning, &content})
    if (!delta->text.empty() || !delta->token_ids.empty()) active.stream->push(std::move(*delta));
  return stopped;
}

void Engine::close_reasoning(SeqId seq_id, Active& active) {
  Sequence& seq = *scheduler_.find(seq_id);
  std::vector<ReasoningPiece> pieces;
  if (active.detokenizer) active.splitter.push(active.detokenizer->flush(), pieces);
  active.splitter.close(pieces);
  const int32_t max_tokens = active.request.stopping.max_tokens;
  const std::vector<int32_t>& marker = active.think_end_ids;
  const bool fits = int64_t(seq.num_output_tokens()) + int64_t(marker.size()) <= max_tokens;
  StreamDelta ids;
  if (fits) {  // the next step feeds them as a chunk and samples after the last
    for (int32_t id : marker) {
      seq.append_token(id);
      ids.token_ids.push_back(id);
      if (active.request.sampling.num_logprobs > 0) ids.logprobs.push_back({id, 0.0f, {}});  // forced: probability 1
    }
    active.num_reasoning_tokens += int32_t(marker.size());
    if (config_.metrics) {
      config_.metrics->generation_tokens->inc(double(marker.size()));
      config_.metrics->generation_rate->add(double(marker.size()));
    }
  }
  const bool ending = !fits || seq.num_output_tokens() >= max_tokens;
  std::optional<std::string> matched;
  emit(active, pieces, std::move(ids), Channel::Reasoning, ending, matched);
  if (ending) finish(seq_id, active, FinishReason::Length);
}

bool Engine::take_text(Active& active, bool flush, std::string& out, std::optional<std::string>& matched) {
  std::string& held = active.held_text;
  // The earliest stop string wins; it and everything after it are dropped.
  size_t best = std::string::npos;
  for (const std::string& s : active.request.stopping.stop) {
    const size_t pos = held.find(s);
    if (pos < best) best = pos, matched = s;
  }
  if (best != std::string::npos) {
    out += held.substr(0, best);
    held.clear();
    return true;
  }
  // Hold back the longest suffix that begins some stop string (a match can only
  // start there); it is valid UTF-8's tail since stop strings start on a character.
  size_t keep = 0;
  if (!flush && active.max_stop_len > 1)
    for (size_t k = std::min(held.size(), active.max_stop_len - 1); k > 0 && keep == 0; --k) {
      const std::string_view tail = std::string_view(held).substr(held.size() - k);
      for (const std::string& s : active.request.stopping.stop)
        if (std::string_view(s).starts_with(tail)) keep = k;
    }
  out += held.substr(0, held.size() - keep);
  held.erase(0, held.size() - keep);
  return false;
}

void Engine::finish(SeqId seq_id, Active& active, FinishReason reason, Status status, std::optional<std::string> matched_stop) {
  active.finishing = true;
  finishing_.push_back({seq_id, reason, std::move(status), std::move(matched_stop)});
}

void Engine::retire() {
  std::vector<std::pair<std::shared_ptr<RequestStream>, StreamFinal>> finals;
  const Clock::time_point now = Clock::now();
  for (Finish& f : finishing_) {
    auto it = active_.find(f.seq_id);
    if (it == active_.end()) continue;
    Active& active = it->second;
    const std::unique_ptr<Sequence> seq = scheduler_.remove(f.seq_id);  // its blocks go back here
    StreamFinal final;
    final.reason = f.reason;
    final.status = std::move(f.status);
    final.matched_stop = std::move(f.matched_stop);
    final.usage = {.prompt_tokens = int32_t(active.request.prompt_token_ids.size()),
                   .completion_tokens = seq ? seq->num_output_tokens() : 0,
                   .reasoning_tokens = active.num_reasoning_tokens,
                   .cached_prompt_tokens = active.cached_prompt_tokens.value_or(0)};
    final.timings.queued = active.first_scheduled.value_or(now) - active.submit_time;
    if (active.first_token) final.timings.time_to_first_token = *active.first_token - active.submit_time;
    final.timings.total = now - active.submit_time;
    if (config_.metrics) config_.metrics->request_duration->observe(final.timings.total);
    finals.emplace_back(std::move(active.stream), std::move(final));
    seq_of_request_.erase(active.request_id);
    active_.erase(it);
  }
  finishing_.clear();
  publish_stats();  // blocks are free before the client hears the request ended
  for (auto& [stream, final] : finals) stream->push(std::move(final));
}

void Engine::fail_all(StatusCode code, const std::string& message) {
  finishing_.clear();  // a failed step may have left some half-recorded
  for (auto& [seq_id, active] : active_) finish(seq_id, active, FinishReason::Error, {code, message});
  retire();
}

}  // namespace flint
