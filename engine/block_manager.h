// BlockManager: paged KV bookkeeping (free list, ref counts, prefix cache of full blocks
// keyed by a hash chain) and BlockTable, one sequence's blocks, returned on destruction.
#pragma once
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace flint {

class BlockManager;

// A cached block's place in the prefix cache: its id and the generation it had
// when registered (bumped on eviction, so a stale reference never matches).
struct CachedBlockRef {
  int32_t block_id = 0;
  uint64_t generation = 0;
  bool operator==(const CachedBlockRef&) const = default;
};

// The blocks one sequence holds, in position order: token p lives in
// block_ids()[p / block_size], slot p % block_size. Move-only; every block goes
// back to its manager on reset() or destruction. The manager must outlive it.
class BlockTable {
 public:
  BlockTable() = default;
  ~BlockTable() { reset(); }
  BlockTable(BlockTable&& other) noexcept { *this = std::move(other); }
  BlockTable& operator=(BlockTable&& other) noexcept;
  BlockTable(const BlockTable&) = delete;
  BlockTable& operator=(const BlockTable&) = delete;

  const std::vector<int32_t>& block_ids() const { return block_ids_; }
  int32_t num_blocks() const { return static_cast<int32_t>(block_ids_.size()); }
  // Token slots handed out: positions [0, num_slots()) have a place in the cache.
  int32_t num_slots() const { return num_slots_; }
  bool empty() const { return block_ids_.empty(); }
  // Returns every block to the manager (cached ones stay reusable until evicted).
  void reset();

 private:
  friend class BlockManager;
  BlockManager* manager_ = nullptr;
  std::vector<int32_t> block_ids_;
  int32_t num_slots_ = 0;
  // Prefix-cache chain over the leading full, computed blocks: how many are
  // hashed, the last one's key and the cached block standing for that prefix
  // (absent once the chain met a colliding key and can no longer be cached).
  int32_t num_hashed_blocks_ = 0;
  uint64_t last_key_ = 0;
  std::optional<CachedBlockRef> last_cached_;
  bool chain_open_ = true;
};

struct BlockManagerOptions {
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  // Bits of the 64-bit block hash kept as the key; fewer bits force collisions
  // (tests only: the stored token ids keep a collision from aliasing blocks).
  int32_t hash_bits = 64;
};

struct BlockManagerStats {
  int32_t num_blocks = 0;
  int32_t num_free_blocks = 0;       // allocatable now: never used, plus cached blocks nobody holds
  int32_t num_used_blocks = 0;       // held by at least one table
  int32_t num_cached_blocks = 0;     // in the prefix cache, held or not
  int64_t num_prefix_query_tokens = 0;  // prompt tokens looked up
  int64_t num_prefix_hit_tokens = 0;    // of which found cached
  double prefix_hit_rate() const {
    return num_prefix_query_tokens ? double(num_prefix_hit_tokens) / double(num_prefix_query_tokens) : 0.0;
  }
};

class BlockManager {
 public:
  // Throws flint::Error when num_blocks < 1, block_size < 1 or hash_bits outside [0, 64].
  explicit BlockManager(const BlockManagerOptions& options);
  BlockManager(const BlockManager&) = delete;
  BlockManager& operator=(const BlockManager&) = delete;

  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  int32_t num_free_blocks() const { return int32_t(free_.size() + evictable_.size()); }
  BlockManagerStats stats() const;

  // Whether allocate(table, tokens) would succeed on an empty table.
  bool can_allocate(std::span<const int32_t> tokens) const;
  // Gives the empty `table` slots for all of `tokens`, reusing the longest chain
  // of cached full blocks that match them (never the block of the last token, so
  // at least one token is left to compute). Returns the number of cached tokens,
  // or nullopt (and changes nothing) when the free blocks do not suffice.
  std::optional<int32_t> allocate(BlockTable& table, std::span<const int32_t> tokens);
  // Whether the table can grow by one token slot (it may need a new block).
  bool can_append_slot(const BlockTable& table) const;
  // Adds one token slot; throws flint::Error when no block is free (check first).
  void append_slot(BlockTable& table);
  // Registers the table's full blocks whose tokens (`tokens`, the sequence's
  // ids from position 0) are all in the KV cache, i.e. below num_computed_tokens.
  // Call after the step that wrote them, so a prefix hit never reads unwritten KV.
  void commit(BlockTable& table, std::span<const int32_t> tokens, int32_t num_computed_tokens);
  // Returns every block of the table (same as table.reset()).
  void free(BlockTable& table);

  // For tests and metrics: a block's holders, whether it is in the prefix cache,
  // and a full consistency check (throws flint::Error naming what is broken).
  int32_t ref_count(int32_t block_id) const { return blocks_[size_t(block_id)].ref_count; }
  bool is_cached(int32_t block_id) const { return blocks_[size_t(block_id)].key.has_value(); }
  void check_invariants() const;

  // The chained block hash: key of the previous block (0 for the first) and this
  // block's token ids, truncated to hash_bits.
  uint64_t block_key(uint64_t parent_key, std::span<const int32_t> block_tokens) const;

 private:
  struct Block {
    int32_t ref_count = 0;
    uint64_t generation = 0;
    // Set while the block is in the prefix cache: its key, its tokens and the
    // cached block of the prefix before it (absent for a first block).
    std::optional<uint64_t> key;
    std::vector<int32_t> tokens;
    std::optional<CachedBlockRef> parent;
    std::optional<std::list<int32_t>::iterator> lru_pos;  // set while evictable
  };
  // The cached block with this key, parent and tokens, if any.
  std::optional<int32_t> lookup(uint64_t key, const std::optional<CachedBlockRef>& parent,
                                std::span<const int32_t> block_tokens) const;
  // Longest matching cached chain for a prompt of these tokens: block ids.
  std::vector<int32_t> match_prefix(std::span<const int32_t> tokens, uint64_t* last_key) const;
  int32_t take_free_block();  // refcount 1; evicts the least recently used cached block when needed
  void acquire_cached(int32_t block_id);
  void release(int32_t block_id);
  CachedBlockRef ref_of(int32_t block_id) const { return {block_id, blocks_[size_t(block_id)].generation}; }

  int32_t num_blocks_, block_size_;
  uint64_t key_mask_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;        // uncached, unheld; popped from the back
  std::list<int32_t> evictable_;     // cached, unheld; front = least recently used
  std::unordered_map<uint64_t, int32_t> cache_;  // key -> block id
  int64_t num_prefix_query_tokens_ = 0, num_prefix_hit_tokens_ = 0;
};

}  // namespace flint
