// BlockManager and BlockTable: allocation, reference counts, the chained prefix
// cache (verified against stored token ids) and its LRU eviction.
#include "engine/block_manager.h"

#include <algorithm>
#include <bit>
#include <utility>

#include "common/error.h"

namespace flint {

BlockTable& BlockTable::operator=(BlockTable&& other) noexcept {
  if (this == &other) return *this;
  reset();
  manager_ = std::exchange(other.manager_, nullptr);
  block_ids_ = std::move(other.block_ids_);
  other.block_ids_.clear();
  num_slots_ = std::exchange(other.num_slots_, 0);
  num_hashed_blocks_ = std::exchange(other.num_hashed_blocks_, 0);
  last_key_ = std::exchange(other.last_key_, 0);
  last_cached_ = std::exchange(other.last_cached_, std::nullopt);
  chain_open_ = std::exchange(other.chain_open_, true);
  return *this;
}

void BlockTable::reset() {
  if (manager_ != nullptr) manager_->free(*this);
}

BlockManager::BlockManager(const BlockManagerOptions& options)
    : num_blocks_(options.num_blocks), block_size_(options.block_size) {
  if (num_blocks_ < 1) fail("block manager: num_blocks must be at least 1, got ", num_blocks_);
  if (block_size_ < 1) fail("block manager: block_size must be at least 1, got ", block_size_);
  if (options.hash_bits < 0 || options.hash_bits > 64) fail("block manager: hash_bits must be in [0, 64], got ", options.hash_bits);
  key_mask_ = options.hash_bits == 64 ? ~uint64_t(0) : (uint64_t(1) << options.hash_bits) - 1;
  blocks_.resize(size_t(num_blocks_));
  free_.reserve(size_t(num_blocks_));
  for (int32_t b = num_blocks_ - 1; b >= 0; --b) free_.push_back(b);  // block 0 handed out first
}

// xxHash64's primes, round and avalanche over the 8-byte words (parent key, then
// token pairs) with its 4-byte tail step: a strong, fast 64-bit hash.
uint64_t BlockManager::block_key(uint64_t parent_key, std::span<const int32_t> block_tokens) const {
  constexpr uint64_t P1 = 0x9E3779B185EBCA87ull, P2 = 0xC2B2AE3D27D4EB4Full, P3 = 0x165667B19E3779F9ull,
                     P4 = 0x85EBCA77C2B2AE63ull, P5 = 0x27D4EB2F165667C5ull;
  auto mix_word = [&](uint64_t h, uint64_t w) {
    uint64_t k = std::rotl(w * P2, 31) * P1;
    return std::rotl(h ^ k, 27) * P1 + P4;
  };
  uint64_t h = P5 + 8 + 4 * uint64_t(block_tokens.size());
  h = mix_word(h, parent_key);
  size_t i = 0;
  for (; i + 1 < block_tokens.size(); i += 2)
    h = mix_word(h, uint64_t(uint32_t(block_tokens[i])) | (uint64_t(uint32_t(block_tokens[i + 1])) << 32));
  if (i < block_tokens.size()) h = std::rotl(h ^ (uint64_t(uint32_t(block_tokens[i])) * P1), 23) * P2 + P3;
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h & key_mask_;
}

BlockManagerStats BlockManager::stats() const {
  BlockManagerStats s;
  s.num_blocks = num_blocks_;
  s.num_free_blocks = num_free_blocks();
  s.num_used_blocks = num_blocks_ - num_free_blocks();
  s.num_cached_blocks = int32_t(cache_.size());
  s.num_prefix_query_tokens = num_prefix_query_tokens_;
  s.num_prefix_hit_tokens = num_prefix_hit_tokens_;
  return s;
}

std::optional<int32_t> BlockManager::lookup(uint64_t key, const std::optional<CachedBlockRef>& parent,
                                            std::span<const int32_t> block_tokens) const {
  auto it = cache_.find(key);
  if (it == cache_.end()) return std::nullopt;
  const Block& b = blocks_[size_t(it->second)];
  // The key alone may collide: the same parent block (same generation) and the
  // same token ids make the whole prefix equal, by induction from the first block.
  if (b.parent != parent || !std::ranges::equal(b.tokens, block_tokens)) return std::nullopt;
  return it->second;
}

std::vector<int32_t> BlockManager::match_prefix(std::span<const int32_t> tokens, uint64_t* last_key) const {
  std::vector<int32_t> matched;
  if (tokens.empty()) return matched;
  const size_t max_blocks = (tokens.size() - 1) / size_t(block_size_);  // the last token is always computed
  uint64_t key = 0;
  std::optional<CachedBlockRef> parent;
  for (size_t k = 0; k < max_blocks; ++k) {
    auto chunk = tokens.subspan(k * size_t(block_size_), size_t(block_size_));
    const uint64_t next_key = block_key(key, chunk);
    std::optional<int32_t> hit = lookup(next_key, parent, chunk);
    if (!hit) break;
    matched.push_back(*hit);
    parent = ref_of(*hit);
    key = next_key;
  }
  *last_key = key;
  return matched;
}

bool BlockManager::can_allocate(std::span<const int32_t> tokens) const {
  uint64_t last_key = 0;
  const std::vector<int32_t> matched = match_prefix(tokens, &last_key);
  const int64_t needed = (int64_t(tokens.size()) + block_size_ - 1) / block_size_ - int64_t(matched.size());
  const int64_t idle_matched = std::ranges::count_if(matched, [&](int32_t b) { return blocks_[size_t(b)].ref_count == 0; });
  return needed <= int64_t(num_free_blocks()) - idle_matched;
}

std::optional<int32_t> BlockManager::allocate(BlockTable& table, std::span<const int32_t> tokens) {
  if (!table.empty()) fail("block manager: allocate on a table that already holds ", table.num_blocks(), " blocks");
  if (tokens.empty()) fail("block manager: allocate for no tokens");
  if (!can_allocate(tokens)) return std::nullopt;
  uint64_t last_key = 0;
  const std::vector<int32_t> matched = match_prefix(tokens, &last_key);
  const size_t total = (tokens.size() + size_t(block_size_) - 1) / size_t(block_size_);
  table.manager_ = this;
  table.block_ids_.reserve(total);
  for (int32_t b : matched) {  // before taking new blocks, so no eviction can take a matched one
    acquire_cached(b);
    table.block_ids_.push_back(b);
  }
  while (table.block_ids_.size() < total) table.block_ids_.push_back(take_free_block());
  table.num_slots_ = int32_t(tokens.size());
  table.num_hashed_blocks_ = int32_t(matched.size());
  table.last_key_ = last_key;
  table.last_cached_ = matched.empty() ? std::nullopt : std::optional(ref_of(matched.back()));
  table.chain_open_ = true;
  const int32_t num_cached_tokens = int32_t(matched.size()) * block_size_;
  num_prefix_query_tokens_ += int64_t(tokens.size());
  num_prefix_hit_tokens_ += num_cached_tokens;
  return num_cached_tokens;
}

bool BlockManager::can_append_slot(const BlockTable& table) const {
  return table.num_slots_ < table.num_blocks() * block_size_ || num_free_blocks() > 0;
}

void BlockManager::append_slot(BlockTable& table) {
  if (table.manager_ != nullptr && table.manager_ != this) fail("block manager: table belongs to another manager");
  if (table.num_slots_ == table.num_blocks() * block_size_) {
    if (num_free_blocks() == 0) fail("block manager: no free KV block for one more token");
    table.manager_ = this;
    table.block_ids_.push_back(take_free_block());
  }
  ++table.num_slots_;
}

void BlockManager::commit(BlockTable& table, std::span<const int32_t> tokens, int32_t num_computed_tokens) {
  if (table.empty()) return;
  if (table.manager_ != this) fail("block manager: table belongs to another manager");
  const int64_t computed = std::min({int64_t(num_computed_tokens), int64_t(table.num_slots_), int64_t(tokens.size())});
  const int32_t num_full = int32_t(computed / block_size_);
  while (table.chain_open_ && table.num_hashed_blocks_ < num_full) {
    const int32_t k = table.num_hashed_blocks_;
    auto chunk = tokens.subspan(size_t(k) * size_t(block_size_), size_t(block_size_));
    const uint64_t key = block_key(table.last_key_, chunk);
    const std::optional<CachedBlockRef> parent = table.last_cached_;
    if (std::optional<int32_t> hit = lookup(key, parent, chunk)) {
      table.last_cached_ = ref_of(*hit);  // the same prefix is cached in another block already
    } else if (cache_.contains(key)) {
      table.chain_open_ = false;  // another prefix holds this key: this chain is not cached further
      break;
    } else {
      const int32_t id = table.block_ids_[size_t(k)];
      Block& b = blocks_[size_t(id)];
      b.key = key;
      b.tokens.assign(chunk.begin(), chunk.end());
      b.parent = parent;
      cache_.emplace(key, id);
      table.last_cached_ = ref_of(id);
    }
    table.last_key_ = key;
    ++table.num_hashed_blocks_;
  }
}

void BlockManager::free(BlockTable& table) {
  if (table.manager_ != nullptr && table.manager_ != this) fail("block manager: table belongs to another manager");
  // Last block first: a sequence's deepest blocks are evicted before its shared prefix.
  for (auto it = table.block_ids_.rbegin(); it != table.block_ids_.rend(); ++it) release(*it);
  table.manager_ = nullptr;
  table.block_ids_.clear();
  table.num_slots_ = 0;
  table.num_hashed_blocks_ = 0;
  table.last_key_ = 0;
  table.last_cached_.reset();
  table.chain_open_ = true;
}

int32_t BlockManager::take_free_block() {
  int32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else if (!evictable_.empty()) {
    id = evictable_.front();
    evictable_.pop_front();
    Block& b = blocks_[size_t(id)];
    cache_.erase(*b.key);
    b.key.reset();
    b.tokens.clear();
    b.parent.reset();
    b.lru_pos.reset();
    ++b.generation;  // references to this block's old content no longer match
  } else {
    fail("block manager: all ", num_blocks_, " KV blocks are in use");
  }
  blocks_[size_t(id)].ref_count = 1;
  return id;
}

void BlockManager::acquire_cached(int32_t block_id) {
  Block& b = blocks_[size_t(block_id)];
  if (b.ref_count == 0) {
    evictable_.erase(*b.lru_pos);
    b.lru_pos.reset();
  }
  ++b.ref_count;
}

void BlockManager::release(int32_t block_id) {
  Block& b = blocks_[size_t(block_id)];
  if (b.ref_count <= 0) fail("block manager: block ", block_id, " released more often than held");
  if (--b.ref_count > 0) return;
  if (b.key) {
    b.lru_pos = evictable_.insert(evictable_.end(), block_id);
  } else {
    free_.push_back(block_id);
  }
}

void BlockManager::check_invariants() const {
  std::vector<int> in_free(size_t(num_blocks_), 0), in_lru(size_t(num_blocks_), 0);
  for (int32_t b : free_) ++in_free[size_t(b)];
  for (int32_t b : evictable_) ++in_lru[size_t(b)];
  for (int32_t id = 0; id < num_blocks_; ++id) {
    const Block& b = blocks_[size_t(id)];
    const size_t i = size_t(id);
    if (b.ref_count < 0) fail("block ", id, ": negative ref count ", b.ref_count);
    if (in_free[i] + in_lru[i] + (b.ref_count > 0 ? 1 : 0) != 1)
      fail("block ", id, ": free ", in_free[i], "x, evictable ", in_lru[i], "x, ref count ", b.ref_count,
           " (must be exactly one of free, evictable, held)");
    if (in_free[i] && b.key) fail("block ", id, ": on the free list but cached");
    if (in_lru[i] && !b.key) fail("block ", id, ": evictable but not cached");
    if (in_lru[i] != (b.lru_pos ? 1 : 0)) fail("block ", id, ": LRU position out of date");
    if (b.key) {
      auto it = cache_.find(*b.key);
      if (it == cache_.end() || it->second != id) fail("block ", id, ": cached key not mapped to it");
      if (int32_t(b.tokens.size()) != block_size_) fail("block ", id, ": cached with ", b.tokens.size(), " tokens");
    }
  }
  for (const auto& [key, id] : cache_) {
    if (id < 0 || id >= num_blocks_ || blocks_[size_t(id)].key != key) fail("prefix cache: key maps to block ", id, " holding another key");
  }
}

}  // namespace flint
