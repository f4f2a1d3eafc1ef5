// Engine: the serving loop. One thread owns the scheduler, the sequences and each
// request's sampler, detokenizer, reasoning split and stop state; others reach it
// by submit/cancel.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/engine_metrics.h"
#include "engine/reasoning.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "model/backend.h"
#include "model/tokenizer.h"

namespace flint {

struct EngineConfig {
  SchedulerConfig scheduler;
  // Sample on the backend's device when it can (Backend::samples_on_device); off: on the host (engine/sampler.h).
  bool device_sampling = true;
  int32_t max_num_waiting = 1024;  // requests submitted and not yet running; more are refused
  // When set, the engine records latencies and tokens into it; it must outlive the engine.
  const EngineMetrics* metrics = nullptr;
};

// What submit gives back: an Ok status and the stream, or an error and no stream.
struct SubmitResult {
  Status status;
  std::shared_ptr<RequestStream> stream;
};

// Published by the engine thread after each step (before that step's final events).
struct EngineStats {
  int32_t num_waiting = 0;
  int32_t num_submitted = 0;  // submitted, not yet taken by the engine thread (not in num_waiting)
  int32_t num_running = 0;
  int32_t num_free_blocks = 0;
  int32_t num_blocks = 0;
  int64_t num_steps = 0;
  int64_t num_preempted = 0;  // preemptions since start
  int32_t num_cached_blocks = 0;         // in the prefix cache, held or not
  int64_t num_prefix_query_tokens = 0;   // prompt tokens looked up in the prefix cache since start
  int64_t num_prefix_hit_tokens = 0;     // of which found cached
};

class Engine {
 public:
  // The KV cache geometry comes from `backend`. `tokenizer` (may be null: no text,
  // ids only) gives text deltas, stop strings and end-of-generation ids. Both must
  // outlive the engine. Starts the engine thread.
  Engine(Backend& backend, const Tokenizer* tokenizer, const EngineConfig& config = {});
  ~Engine();  // shutdown()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Thread-safe. InvalidArgument (see validate(); also stop strings or reasoning
  // markers without a tokenizer), ResourceExhausted when the waiting queue is full,
  // Unavailable after shutdown or a fatal backend error; nothing changes on an error.
  SubmitResult submit(EngineRequest request);
  // Thread-safe. Ends the request with Cancelled at the top of the next step;
  // unknown or finished ids are ignored.
  void cancel(uint64_t request_id);
  // Stops the thread once its current step ends; every outstanding request ends
  // with Unavailable. Idempotent.
  void shutdown();

  // Longest prompt + max_tokens a request may ask for.
  int32_t max_num_tokens_per_seq() const { return max_num_tokens_; }
  EngineStats stats() const;
  // For a health check: the thread runs and is not shutting down, and when it
  // last finished a step (it does not advance while idle: nothing waiting or running).
  bool alive() const { return running_.load() && !stopping_.load(); }
  // Thread-safe. Empty, or why the engine stopped by itself: a step failed and the backend said it can run no
  // more (Backend::fatal_error). Every request then ended, and every later one is refused, with Unavailable
  // and this message; alive() is false.
  std::string fatal_error() const;
  Clock::time_point last_step_time() const { return Clock::time_point(Clock::duration(last_step_ns_.load())); }

 private:
  struct Submission {
    uint64_t id;
    EngineRequest request;
    std::shared_ptr<RequestStream> stream;
    Clock::time_point submit_time;
  };
  // Per-request state, owned by the engine thread, keyed by sequence id.
  struct Active {
    Active(Sampler s, const ReasoningOptions& reasoning) : sampler(std::move(s)), splitter(reasoning) {}
    uint64_t request_id = 0;
    EngineRequest request;
    std::shared_ptr<RequestStream> stream;
    Sampler sampler;
    std::optional<IncrementalDetokenizer> detokenizer;
    ReasoningSplitter splitter;
    StreamDelta undecided;  // ids (and logprobs) sampled while the splitter is Undecided
    int32_t num_reasoning_tokens = 0;
    std::vector<int32_t> think_end_ids;  // what the budget appends (empty without a budget)
    std::string held_text;  // content text not yet emitted (may start a stop string)
    size_t max_stop_len = 0;
    Clock::time_point submit_time;
    std::optional<Clock::time_point> first_scheduled, first_token, last_token;
    std::optional<int32_t> cached_prompt_tokens;  // at first admission
    bool finishing = false;
  };
  struct Finish {
    SeqId seq_id;
    FinishReason reason;
    Status status;
    std::optional<std::string> matched_stop;
  };

  void loop();
  void step(std::vector<Submission>& submissions, std::vector<uint64_t>& cancels);
  void admit(Submission&& submission);
  void run_step();
  // The sampled token's effects: stop checks, the reasoning split, the budget, its deltas.
  // The step's forward pass and one sample per logit row, in row order.
  std::vector<SampleResult> forward_sample_on_host(const ScheduledStep& step);
  std::vector<SampleResult> forward_sample_on_device(const ScheduledStep& step);
  void on_token(SeqId seq_id, Active& active, const SampleResult& sample, Clock::time_point now);
  // The token's text for the splitter; a special token spelling a marker keeps its text.
  std::string token_text(Active& active, int32_t token_id);
  // Routes split pieces (content through the stop strings) and pushes the deltas:
  // `ids` goes with the delta of `ids_channel`, reasoning text before content.
  // Returns true (and sets `matched`) when a stop string matched.
  bool emit(Active& active, std::vector<ReasoningPiece>& pieces, StreamDelta ids, Channel ids_channel, bool flush,
            std::optional<std::string>& matched);
  // The reasoning budget is spent: appends think_end's ids to the sequence (or ends
  // it with Length when they do not fit in max_tokens).
  void close_reasoning(SeqId seq_id, Active& active);
  void finish(SeqId seq_id, Active& active, FinishReason reason, Status status = {},
              std::optional<std::string> matched_stop = std::nullopt);
  // Content text ready to emit from held_text, holding back a suffix that may start
  // a stop string; returns true (and sets `matched`) when a stop string was found.
  bool take_text(Active& active, bool flush, std::string& out, std::optional<std::string>& matched);
  // Removes finished sequences, publishes stats, then pushes their final events.
  void retire();
  void fail_all(StatusCode code, const std::string& message);
  void publish_stats();
  bool is_stop_token(const Active& active, int32_t token_id) const;

  Backend& backend_;
  const Tokenizer* tokenizer_;
  EngineConfig config_;
  int32_t max_num_tokens_;

  // Engine thread only.
  Scheduler scheduler_;
  std::unordered_map<SeqId, Active> active_;
  std::unordered_map<uint64_t, SeqId> seq_of_request_;
  std::vector<Finish> finishing_;
  // Sampling: on the backend's device when it samples (only ids come back), else each request's Sampler on the
  // host. A device engine's rows are always drawn the device's way (kernels/sampling_params.h), also in a step
  // that brings logits back for top logprobs (the twin, cpu::sample, picks what the device would).
  const bool device_sampling_;
  cpu::SampleBatch sample_batch_;
  std::vector<int32_t> sampled_ids_;
  std::vector<float> sampled_logprobs_;
  std::vector<float> logits_;
  int64_t num_steps_ = 0, num_preempted_ = 0;

  // The submission queue: the only lock the engine thread takes in a step.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Submission> submissions_;
  std::vector<uint64_t> cancels_;
  uint64_t next_request_id_ = 1;
  bool stop_requested_ = false;
  std::string fatal_;  // under mu_

  std::atomic<bool> running_{false}, stopping_{false};
  std::atomic<int64_t> last_step_ns_{0};
  std::atomic<int32_t> num_waiting_{0}, num_running_{0}, num_free_blocks_{0}, num_cached_blocks_{0};
  std::atomic<int32_t> num_submitted_{0};  // submissions_.size(), for stats() without the lock
  std::atomic<int64_t> num_steps_published_{0}, num_preempted_published_{0};
  std::atomic<int64_t> num_prefix_query_tokens_{0}, num_prefix_hit_tokens_{0};
  std::mutex join_mu_;  // shutdown() from several threads joins once
  std::thread thread_;
};

}  // namespace flint
