// engine_bench --profile's byte floors per op (bench/op_bytes.h) on the Llama-3.2-1B shape, worked by hand: every
// layer matrix's bf16 weights once, the LM head's, the KV cache's keys and values once; no floor for the others.
#include <gtest/gtest.h>

#include "bench/op_bytes.h"
#include "model/model_shapes.h"

namespace flint {
namespace {

TEST(OpBytes, LayerMatricesLmHeadAndKvOfTheLlama1bShape) {
  const ModelConfig& c = find_model_shape("llama-3.2-1b").config;
  ASSERT_EQ(c.num_layers, 16);
  // hidden 2048, 32 query heads and 8 KV heads of 64, ffn 8192, vocab 128256.
  EXPECT_DOUBLE_EQ(bench::op_floor_bytes("qkv matmul", c, 0), 16.0 * 3072 * 2048 * 2);
  EXPECT_DOUBLE_EQ(bench::op_floor_bytes("attention output matmul", c, 0), 16.0 * 2048 * 2048 * 2);
  EXPECT_DOUBLE_EQ(bench::op_floor_bytes("gate+up matmul", c, 0), 16.0 * 16384 * 2048 * 2);
  EXPECT_DOUBLE_EQ(bench::op_floor_bytes("down matmul", c, 0), 16.0 * 2048 * 8192 * 2);
  EXPECT_DOUBLE_EQ(bench::op_floor_bytes("lm head", c, 0), 128256.0 * 2048 * 2);
  // Two sequences at 100 and 300 tokens: 400 tokens x 16 layers x 512 (8 x 64) x K and V x 2 bytes.
  EXPECT_DOUBLE_EQ(bench::op_floor_bytes("paged_attention", c, 400), 400.0 * 16 * 512 * 2 * 2);
  for (const char* none : {"attention norm", "rope_write_kv", "sampling", "embedding", "no such op"})
    EXPECT_EQ(bench::op_floor_bytes(none, c, 400), 0.0) << none;
}

}  // namespace
}  // namespace flint
