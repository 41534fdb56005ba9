#pragma once

// Packed sets: a data set decoded and resized once (`alexnet prepare`, importers),
// read back by memory mapping.

#include <alexnet/data/source.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::data {

/// Packed sets: fixed-size uint8 images in shards `shard-NNNNN.bin`, each with its
/// labels, a CRC-32 per record (of its label and pixels), a checksum of the whole shard
/// and an end marker, read by memory mapping; `classes.txt`
/// names the classes and `meta.txt`, written last, says the set is complete. Shards
/// are written to a temporary name and renamed, so none looks complete unless it is.
struct PackedLayout {
  int64_t height = 256;
  int64_t width = 256;
  int64_t channels = 3;
  /// Source examples per shard (a shard holds fewer where images were skipped).
  int64_t records_per_shard = 2048;
};

/// Produces the image (already height x width x channels) and label of one example,
/// or nothing to leave it out. Called from several threads at once.
using Producer = std::function<std::optional<std::pair<Image, int64_t>>(size_t index)>;
/// Reports progress: examples done, and the total.
using Progress = std::function<void(size_t done, size_t total)>;

struct PackedResult {
  size_t records = 0;       ///< in the set
  size_t shards = 0;
  size_t shards_kept = 0;   ///< complete from an earlier, interrupted run
  size_t skipped = 0;       ///< examples left out
};

/// Writes `count` examples to a packed set in `dir`, producing each with `workers`
/// threads. Shards that an interrupted run finished (and whose checksums hold) are
/// kept, not redone.
PackedResult write_packed(const std::string& dir, size_t count, const PackedLayout& layout,
                          const std::vector<std::string>& classes, const Producer& produce,
                          int64_t workers = 2, const Progress& progress = {});

/// `alexnet prepare`: decodes every image of `source` once, brings it to `side` x
/// `side` (shorter side, centre crop) and packs it.
PackedResult prepare_packed(const Source& source, const std::string& dir, int64_t side = 256,
                            int64_t workers = 2, OnError on_error = OnError::kFail,
                            const Progress& progress = {});

/// Recomputes every record's checksum and every shard's; returns how many records the
/// set holds, or throws naming the first shard and record that fail.
size_t verify_packed(const std::string& dir);

}  // namespace alexnet::data
