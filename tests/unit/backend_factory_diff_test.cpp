// make_backend's device choice and errors (model/backend_factory.h), flintd's device flags, and the per-layer
// diff's comparison (model/backend_diff.h) run on two CPU backends: identical weights agree exactly, one perturbed
// weight is found at the first intermediate it feeds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "model/backend_diff.h"
#include "model/backend_factory.h"
#include "model/cpu_backend.h"
#include "model/model_loader.h"
#include "server/flintd_options.h"
#include "test_util.h"

namespace flint {
namespace {

TEST(ResolveDevice, AutoPicksCudaOnlyWhenBuiltAndPresent) {
  EXPECT_EQ(resolve_device("auto", true, 1, ""), "cuda");
  EXPECT_EQ(resolve_device("auto", true, 0, "no driver"), "cpu");
  EXPECT_EQ(resolve_device("auto", false, 0, ""), "cpu");
  EXPECT_EQ(resolve_device("cpu", true, 2, ""), "cpu");
  EXPECT_EQ(resolve_device("cuda", true, 1, ""), "cuda");
}

TEST(ResolveDevice, CudaThatCannotBeHadSaysWhy) {
  test::expect_error([] { resolve_device("cuda", false, 0, ""); }, {"--device cuda", "built without CUDA", "--device cpu"});
  test::expect_error([] { resolve_device("cuda", true, 0, "cudaErrorNoDevice: no CUDA-capable device is detected"); },
                     {"--device cuda", "no CUDA device is usable", "cudaErrorNoDevice"});
  test::expect_error([] { resolve_device("tpu", true, 1, ""); }, {"--device tpu", "auto, cpu or cuda"});
}

TEST(MakeBackend, OnThisMachineCudaIsRefusedClearlyAndAutoIsTheCpu) {
  const LoadedModel model = load_model(std::string(FLINT_TEST_DATA_DIR) + "/tiny-llama");
  std::string why;
  if (cuda_device_count(&why) > 0) GTEST_SKIP() << "a GPU is present: the refusal is not testable here";
  BackendOptions o;
  o.device = "cuda";
  test::expect_error([&] { make_backend(model.config, model.weights, o); },
                     {"--device cuda", cuda_backend_built() ? "no CUDA device is usable" : "built without CUDA"});
  o.device = "auto";
  o.kv_cache_memory = 4u << 20;
  MadeBackend made = make_backend(model.config, model.weights, o);
  EXPECT_EQ(made.device, "cpu");
  // fp32 K and V: 2 x 2 layers x 2 kv heads x 16 dims x 4 bytes x 16 tokens = 8 KiB per block.
  EXPECT_EQ(made.backend->num_kv_blocks(), (4 << 20) / 8192);
  EXPECT_NE(made.description.find("cpu"), std::string::npos);
}

TEST(MakeBackend, CpuKvBudgetBelowOneBlockIsAnError) {
  const LoadedModel model = load_model(std::string(FLINT_TEST_DATA_DIR) + "/tiny-llama");
  test::expect_error([&] { cpu_kv_blocks_for_bytes(8191, model.config, 16); }, {"less than one KV block", "8192 bytes"});
  EXPECT_EQ(cpu_kv_blocks_for_bytes(8192, model.config, 16), 1);
}

TEST(FlintdDeviceFlags, DeviceGraphsAndTheKvDefault) {
  server::FlintdOptions o;
  bool help = false;
  EXPECT_EQ(o.kv_cache_memory, 0u);  // the device's default
  EXPECT_TRUE(o.cuda_graphs);
  ASSERT_FALSE(server::parse_flintd_args({"--device", "cuda", "--cuda-graphs", "off"}, o, help));
  EXPECT_EQ(o.device, "cuda");
  EXPECT_FALSE(o.cuda_graphs);
  ASSERT_FALSE(server::parse_flintd_args({"--cuda-graphs=on"}, o, help));
  EXPECT_TRUE(o.cuda_graphs);
  EXPECT_EQ(server::parse_flintd_args({"--cuda-graphs", "maybe"}, o, help), "--cuda-graphs must be on or off");
  EXPECT_EQ(server::parse_flintd_args({"--device", "gpu"}, o, help), "--device must be auto, cpu or cuda");
  EXPECT_NE(server::describe(o).find("cuda graphs:        on"), std::string::npos);
  EXPECT_NE(server::describe(o).find("device default"), std::string::npos);
  EXPECT_NE(server::flintd_usage().find("--cuda-graphs on|off"), std::string::npos);
}

// ---- The per-layer diff.

ObservedTensor tensor(const std::string& name, std::vector<float> v) {
  return {name, 1, int64_t(v.size()), std::move(v)};
}

TEST(BackendDiff, ComparesEntryByEntryAndFlagsTheFirstOverTheBound) {
  const std::vector<ObservedTensor> ref = {tensor("embedding", {1, -2, 4}), tensor("layer.0.q", {10, 0, -10}),
                                           tensor("layer.0.k", {1, 1, 1}), tensor("final_norm", {3, 3, 3})};
  const std::vector<ObservedTensor> test = {tensor("embedding", {1, -2, 4}), tensor("layer.0.q", {10.2f, 0.1f, -10}),
                                            tensor("layer.0.k", {1, 1.5f, 1}), tensor("final_norm", {3, 2, 3})};
  DiffReport r;
  compare_observed("prefill", ref, test, 0.03, r);
  ASSERT_EQ(r.rows.size(), 4u);
  EXPECT_EQ(r.rows[0].max_abs, 0.0);
  EXPECT_FALSE(r.rows[0].over);
  EXPECT_NEAR(r.rows[1].rel, 0.2 / 10, 1e-6);  // normwise: max|diff| / max|ref|
  EXPECT_FALSE(r.rows[1].over);
  EXPECT_NEAR(r.rows[2].rel, 0.5, 1e-6);
  EXPECT_TRUE(r.rows[2].over);
  EXPECT_TRUE(r.rows[3].over);
  EXPECT_EQ(r.first_over, 2);
  const std::string table = format_diff_report(r, 0.03);
  EXPECT_NE(table.find("layer.0.k"), std::string::npos);
  EXPECT_NE(table.find("<-- first over the bound"), std::string::npos);
  EXPECT_NE(table.find("FAIL: first over the bound: prefill layer.0.k"), std::string::npos);
}

TEST(BackendDiff, NanAndMisalignedStreamsAreOver) {
  DiffReport r;
  compare_observed("decode", {tensor("a", {1, 2}), tensor("b", {1, 2}), tensor("c", {1})},
                   {tensor("a", {1, NAN}), tensor("x", {1, 2})}, 0.03, r);
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_TRUE(r.rows[0].over);  // NaN
  EXPECT_NE(r.rows[1].problem.find("reports x here"), std::string::npos);
  EXPECT_NE(r.rows[2].problem.find("missing from the test backend"), std::string::npos);
  EXPECT_EQ(r.first_over, 0);
  DiffReport ok;
  compare_observed("decode", {tensor("a", {0, 0})}, {tensor("a", {0, 0})}, 0.03, ok);
  EXPECT_EQ(ok.first_over, -1);
  EXPECT_NE(format_diff_report(ok, 0.03).find("PASS"), std::string::npos);
}

TEST(BackendDiff, TwoCpuBackendsAgreeExactly) {
  const LoadedModel model = load_model(std::string(FLINT_TEST_DATA_DIR) + "/tiny-qwen3");
  CpuBackend a(model.config, model.weights, {.num_kv_blocks = 4, .num_threads = 1});
  CpuBackend b(model.config, model.weights, {.num_kv_blocks = 4, .num_threads = 2});
  const DiffReport r = diff_backends(a, b, test::iota_tokens(5, 11), kDiffDefaultRelBound);
  EXPECT_EQ(r.first_over, -1) << format_diff_report(r, kDiffDefaultRelBound);
  // embedding, 2 layers x 6, final_norm, logits; for each of prefill and decode.
  ASSERT_EQ(r.rows.size(), 2u * (1 + 2 * 6 + 1 + 1));
  for (const DiffRow& row : r.rows) EXPECT_EQ(row.max_abs, 0.0) << row.step << " " << row.name;
  EXPECT_EQ(r.rows.front().rows, 11);  // the prefill's 11 tokens
  EXPECT_EQ(r.rows[15].rows, 1);       // the decode step's one
  EXPECT_EQ(r.top1_agree, 2);
  EXPECT_EQ(r.top1_total, 2);
}

TEST(BackendDiff, APerturbedWeightIsFoundAtTheFirstIntermediateItFeeds) {
  const LoadedModel model = load_model(std::string(FLINT_TEST_DATA_DIR) + "/tiny-llama");
  // Layer 1's w_up scaled by 1.5 in a copy: everything before layer.1.out is unchanged, layer.1.out is not.
  const Tensor& up = *model.weights.layers[1].w_up;
  ASSERT_EQ(up.dtype, DType::F32);
  std::vector<float> scaled(size_t(up.numel()));
  std::memcpy(scaled.data(), up.data, up.nbytes);
  for (float& v : scaled) v *= 1.5f;
  Tensor perturbed = up;
  perturbed.data = reinterpret_cast<const uint8_t*>(scaled.data());
  ModelWeights weights = model.weights;
  weights.layers[1].w_up = &perturbed;
  CpuBackend ref(model.config, model.weights, {.num_kv_blocks = 4, .num_threads = 1});
  CpuBackend test(model.config, weights, {.num_kv_blocks = 4, .num_threads = 1});
  const DiffReport r = diff_backends(ref, test, test::iota_tokens(3, 9), kDiffDefaultRelBound);
  ASSERT_GE(r.first_over, 0);
  EXPECT_EQ(r.rows[size_t(r.first_over)].step, "prefill");
  EXPECT_EQ(r.rows[size_t(r.first_over)].name, "layer.1.out");
  for (int i = 0; i < r.first_over; ++i) EXPECT_EQ(r.rows[size_t(i)].max_abs, 0.0) << r.rows[size_t(i)].name;
  EXPECT_GT(r.rows[size_t(r.first_over)].rel, kDiffDefaultRelBound);
}

TEST(BackendDiff, RefusesACacheTooSmallForThePrompt) {
  const LoadedModel model = load_model(std::string(FLINT_TEST_DATA_DIR) + "/tiny-llama");
  CpuBackend a(model.config, model.weights, {.num_kv_blocks = 1, .num_threads = 1});
  CpuBackend b(model.config, model.weights, {.num_kv_blocks = 4, .num_threads = 1});
  test::expect_error([&] { diff_backends(a, b, test::iota_tokens(0, 16), 0.03); }, {"holds 16 tokens", "needs 17"});
}

}  // namespace
}  // namespace flint
