#include <alexnet/data/packed.h>
#include <alexnet/network/error.h>
#include <alexnet/network/numbers.h>

#include "network/atomic_file.h"
#include "network/text.h"

#include <fcntl.h>
#include <zlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace alexnet::data {
namespace fs = std::filesystem;
namespace {

constexpr char kMagic[8] = {'A', 'L', 'E', 'X', 'P', 'A', 'C', 'K'};
constexpr char kEnd[8] = {'P', 'A', 'C', 'K', 'E', 'N', 'D', '1'};
// Version 2 adds a CRC-32 per record (its label and pixels), checked when the record is
// first read; version 1 shards (one checksum for the whole shard) are checked whole
// when one of their records is first read.
constexpr uint32_t kVersion = 2;
constexpr const char* kFormat = "alexnet-packed-1";  // meta.txt's; unchanged: shards say their version

#pragma pack(push, 1)
struct ShardHeader {
  char magic[8];
  uint32_t version, height, width, channels;
  uint64_t count;        // records in this shard
  uint64_t first_index;  // source index of the shard's first example
};
struct ShardFooter {
  uint64_t checksum;  // FNV-1a over header, labels and pixels
  char end[8];
};
#pragma pack(pop)

uint64_t fnv1a(const uint8_t* data, size_t n, uint64_t hash = 1469598103934665603ull) {
  for (size_t i = 0; i < n; ++i) hash = (hash ^ data[i]) * 1099511628211ull;
  return hash;
}

std::string shard_name(size_t shard) {
  char name[32];
  std::snprintf(name, sizeof(name), "shard-%05zu.bin", shard);
  return name;
}

size_t record_bytes(const ShardHeader& h) { return size_t(h.height) * h.width * h.channels; }

// Per record: its label, its CRC-32 (version 2), its pixels.
size_t per_record(const ShardHeader& h) {
  return sizeof(int32_t) + (h.version >= 2 ? sizeof(uint32_t) : 0) + record_bytes(h);
}

// The shard's size as its header says it, or 0 when the header's numbers cannot be a shard.
size_t shard_bytes(const ShardHeader& h) {
  const size_t record = per_record(h);
  if (h.height == 0 || h.width == 0 || h.height > (1u << 16) || h.width > (1u << 16) || h.channels > 4 ||
      h.count > (uint64_t(1) << 40) / record) {
    return 0;
  }
  return sizeof(ShardHeader) + h.count * record + sizeof(ShardFooter);
}

uint32_t record_crc(int32_t label, const uint8_t* pixels, size_t bytes) {
  uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(&label), sizeof(label));
  return static_cast<uint32_t>(crc32_z(crc, pixels, bytes));
}

// A read-only memory mapping of one shard, checked for shape and end marker.
class Mapping {
 public:
  explicit Mapping(const std::string& path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw std::runtime_error("packed shard '" + path + "': " + std::strerror(errno));
    struct stat st {};
    ::fstat(fd, &st);
    size_ = static_cast<size_t>(st.st_size);
    if (size_ < sizeof(ShardHeader) + sizeof(ShardFooter)) {
      ::close(fd);
      throw std::runtime_error("packed shard '" + path + "': truncated (" + std::to_string(size_) + " bytes)");
    }
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) throw std::runtime_error("packed shard '" + path + "': cannot map: " + std::strerror(errno));
    data_ = static_cast<const uint8_t*>(p);
    std::memcpy(&header_, data_, sizeof(header_));
    if (std::memcmp(header_.magic, kMagic, 8) != 0 || header_.version < 1 || header_.version > kVersion) {
      release();
      throw std::runtime_error("packed shard '" + path + "': not a packed shard (bad magic or version)");
    }
    ShardFooter footer{};
    std::memcpy(&footer, data_ + size_ - sizeof(footer), sizeof(footer));
    if (shard_bytes(header_) != size_ || std::memcmp(footer.end, kEnd, 8) != 0) {
      release();
      throw std::runtime_error("packed shard '" + path + "': incomplete (size or end marker wrong)");
    }
  }
  ~Mapping() { release(); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  const ShardHeader& header() const { return header_; }
  int32_t label(size_t i) const {
    int32_t v;
    std::memcpy(&v, data_ + sizeof(ShardHeader) + i * sizeof(int32_t), sizeof(v));
    return v;
  }
  const uint8_t* pixels(size_t i) const {
    const size_t tables = header_.count * (per_record(header_) - record_bytes(header_));
    return data_ + sizeof(ShardHeader) + tables + i * record_bytes(header_);
  }
  /// Whether record i's label and pixels still have their checksum (version 2), or the
  /// whole shard its own (version 1).
  bool record_holds(size_t i) const {
    if (header_.version < 2) return checksum_holds();
    uint32_t stored;
    std::memcpy(&stored, data_ + sizeof(ShardHeader) + header_.count * sizeof(int32_t) + i * sizeof(uint32_t),
                sizeof(stored));
    return record_crc(label(i), pixels(i), record_bytes(header_)) == stored;
  }
  const std::string& path() const { return path_; }
  bool checksum_holds() const {
    ShardFooter footer{};
    std::memcpy(&footer, data_ + size_ - sizeof(footer), sizeof(footer));
    return fnv1a(data_, size_ - sizeof(footer)) == footer.checksum;
  }

 private:
  void release() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
    data_ = nullptr;
  }
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  ShardHeader header_{};
};

std::map<std::string, std::string> read_meta(const std::string& dir) {
  const auto path = (fs::path(dir) / "meta.txt").string();
  std::ifstream in(path);
  if (!in) throw std::runtime_error("packed set '" + dir + "': no meta.txt (not a packed set, or unfinished)");
  std::map<std::string, std::string> meta;
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) meta[line.substr(0, eq)] = line.substr(eq + 1);
  }
  if (meta["format"] != kFormat) {
    throw std::runtime_error("packed set '" + dir + "': format '" + meta["format"] + "', expected '" + kFormat + "'");
  }
  return meta;
}

// A count in meta.txt, or the set is refused naming it.
size_t meta_count(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& dir) {
  const auto found = meta.find(key);
  const auto value = found == meta.end() ? std::nullopt : to_number<size_t>(found->second);
  if (!value) {
    throw std::runtime_error("packed set '" + dir + "': meta.txt has no count of " + key +
                             (found == meta.end() ? "" : " ('" + found->second + "')"));
  }
  return *value;
}

class PackedSource final : public Source {
 public:
  PackedSource(const std::string& dir, bool verify) : dir_(dir), verify_(verify) {
    const auto meta = read_meta(dir);
    const size_t shards = meta_count(meta, "shards", dir);
    size_t total = 0;
    for (size_t s = 0; s < shards; ++s) {
      shards_.push_back(std::make_unique<Mapping>((fs::path(dir) / shard_name(s)).string()));
      total += shards_.back()->header().count;
      ends_.push_back(total);
    }
    verified_ = std::make_unique<std::atomic<bool>[]>(total);
    whole_ = std::make_unique<std::atomic<bool>[]>(shards);
    if (total != meta_count(meta, "records", dir)) {
      throw std::runtime_error("packed set '" + dir + "': shards hold " + std::to_string(total) +
                               " records, meta.txt says " + meta.at("records"));
    }
    classes_ = detail::all_lines(detail::read_text_file((fs::path(dir) / "classes.txt").string(), "packed set classes"));
    for (size_t i = 0; i < total; ++i) {
      const auto l = label(i);
      if (l < 0 || l >= static_cast<int64_t>(classes_.size())) {
        throw std::runtime_error("packed set '" + dir + "': record " + std::to_string(i) + " has label " +
                                 std::to_string(l) + ", outside the " + std::to_string(classes_.size()) +
                                 " classes of classes.txt");
      }
    }
  }

  size_t size() const override { return ends_.empty() ? 0 : ends_.back(); }
  int64_t label(size_t index) const override {
    const auto [shard, i] = locate(index);
    return shards_[shard]->label(i);
  }
  Image image(size_t index, int64_t side) const override {
    const auto [shard, i] = locate(index);
    if (verify_) check(index, shard, i);
    const auto& h = shards_[shard]->header();
    Image image;
    image.height = h.height;
    image.width = h.width;
    image.channels = h.channels;
    const uint8_t* p = shards_[shard]->pixels(i);
    image.pixels.assign(p, p + record_bytes(h));
    if (image.height != side || image.width != side) image = resize_and_crop(image, side, side);
    return image;
  }
  std::string describe(size_t index) const override {
    return dir_ + " record " + std::to_string(index);
  }
  const std::vector<std::string>& classes() const override { return classes_; }
  std::string name() const override { return dir_; }

 private:
  std::pair<size_t, size_t> locate(size_t index) const {
    if (index >= size()) {
      throw std::out_of_range("packed set '" + dir_ + "': record " + std::to_string(index) + " of " +
                              std::to_string(size()));
    }
    const size_t shard = static_cast<size_t>(std::upper_bound(ends_.begin(), ends_.end(), index) - ends_.begin());
    return {shard, index - (shard == 0 ? 0 : ends_[shard - 1])};
  }

  // Each record's checksum (a version 1 shard's whole checksum) the first time it is
  // read by this process: a flipped byte stops the reader, naming shard and record.
  void check(size_t index, size_t shard, size_t i) const {
    const auto& mapping = *shards_[shard];
    const bool whole = mapping.header().version < 2;
    auto& done = whole ? whole_[shard] : verified_[index];
    if (done.load(std::memory_order_acquire)) return;
    if (!mapping.record_holds(i)) {
      throw std::runtime_error("packed set '" + dir_ + "': " +
                               (whole ? "shard '" + mapping.path() + "' is corrupt (its checksum does not hold)"
                                      : "record " + std::to_string(index) + " (shard '" + mapping.path() +
                                            "', record " + std::to_string(i) + ") is corrupt (its checksum does "
                                            "not hold); alexnet verify checks the whole set"));
    }
    done.store(true, std::memory_order_release);
  }

  std::string dir_;
  bool verify_;
  std::vector<std::unique_ptr<Mapping>> shards_;
  std::vector<size_t> ends_;
  std::vector<std::string> classes_;
  std::unique_ptr<std::atomic<bool>[]> verified_, whole_;
};

}  // namespace

std::shared_ptr<Source> open_packed(const std::string& dir, bool verify) {
  return std::make_shared<PackedSource>(dir, verify);
}

size_t verify_packed(const std::string& dir) {
  const auto meta = read_meta(dir);
  size_t records = 0;
  const size_t shards = meta_count(meta, "shards", dir);
  for (size_t s = 0; s < shards; ++s) {
    const auto path = (fs::path(dir) / shard_name(s)).string();
    const Mapping shard(path);
    for (size_t i = 0; i < shard.header().count; ++i, ++records) {
      if (!shard.record_holds(i)) {
        throw std::runtime_error("packed set '" + dir + "': record " + std::to_string(records) + " (shard '" + path +
                                 "', record " + std::to_string(i) + ") is corrupt (its checksum does not hold)");
      }
    }
    if (!shard.checksum_holds()) throw std::runtime_error("packed shard '" + path + "': checksum mismatch (corrupt)");
  }
  return records;
}

PackedResult write_packed(const std::string& dir, size_t count, const PackedLayout& layout,
                          const std::vector<std::string>& classes, const Producer& produce, int64_t workers,
                          const Progress& progress) {
  if (layout.height <= 0 || layout.width <= 0 || (layout.channels != 1 && layout.channels != 3) ||
      layout.records_per_shard <= 0) {
    throw std::invalid_argument("packed set '" + dir + "': bad layout");
  }
  fs::create_directories(dir);
  fs::remove(fs::path(dir) / "meta.txt");  // the set is incomplete until the end
  const size_t per_shard = static_cast<size_t>(layout.records_per_shard);
  const size_t shards = (count + per_shard - 1) / per_shard;
  const size_t bytes = static_cast<size_t>(layout.height * layout.width * layout.channels);
  PackedResult result;
  result.shards = shards;
  size_t done = 0;
  for (size_t s = 0; s < shards; ++s) {
    const size_t first = s * per_shard;
    const size_t n = std::min(per_shard, count - first);
    const auto path = fs::path(dir) / shard_name(s);
    // A shard from an interrupted run is kept when it is whole and matches.
    if (fs::exists(path)) {
      try {
        const Mapping old(path.string());
        const auto& h = old.header();
        if (h.version == kVersion && h.first_index == first && h.height == layout.height &&
            h.width == layout.width && h.channels == layout.channels && old.checksum_holds()) {
          result.records += h.count;
          result.skipped += n - h.count;
          ++result.shards_kept;
          done += n;
          if (progress) progress(done, count);
          continue;
        }
      } catch (const std::exception&) {
      }
    }
    std::vector<std::optional<std::pair<Image, int64_t>>> items(n);
    std::atomic<size_t> next{0};
    std::exception_ptr failure;
    std::mutex failure_mutex;
    auto work = [&] {
      for (size_t i = next++; i < n; i = next++) {
        try {
          items[i] = produce(first + i);
          if (items[i]) {
            const auto& image = items[i]->first;
            if (image.height != layout.height || image.width != layout.width || image.channels != layout.channels) {
              throw std::runtime_error("packed set '" + dir + "': example " + std::to_string(first + i) + " is " +
                                       std::to_string(image.height) + "x" + std::to_string(image.width) + "x" +
                                       std::to_string(image.channels) + ", not the layout's");
            }
          }
        } catch (...) {
          std::lock_guard<std::mutex> lock(failure_mutex);
          if (!failure) failure = std::current_exception();
          next = n;
        }
      }
    };
    std::vector<std::thread> threads;
    for (int64_t w = 1; w < std::max<int64_t>(1, workers); ++w) threads.emplace_back(work);
    work();
    for (auto& t : threads) t.join();
    if (failure) std::rethrow_exception(failure);

    ShardHeader header{};
    std::memcpy(header.magic, kMagic, 8);
    header.version = kVersion;
    header.height = static_cast<uint32_t>(layout.height);
    header.width = static_cast<uint32_t>(layout.width);
    header.channels = static_cast<uint32_t>(layout.channels);
    header.first_index = first;
    for (const auto& item : items) header.count += item.has_value();
    std::vector<int32_t> labels;
    for (const auto& item : items) {
      if (item) labels.push_back(static_cast<int32_t>(item->second));
    }
    detail::write_atomically(
        path.string(),
        [&](std::ostream& out) {
          uint64_t hash = fnv1a(reinterpret_cast<const uint8_t*>(&header), sizeof(header));
          out.write(reinterpret_cast<const char*>(&header), sizeof(header));
          std::vector<uint32_t> crcs;
          for (size_t k = 0, j = 0; k < items.size(); ++k) {
            if (items[k]) crcs.push_back(record_crc(labels[j++], items[k]->first.pixels.data(), bytes));
          }
          for (const auto& [table, size] : {std::pair<const void*, size_t>{labels.data(), labels.size() * 4},
                                            {crcs.data(), crcs.size() * 4}}) {
            hash = fnv1a(static_cast<const uint8_t*>(table), size, hash);
            out.write(static_cast<const char*>(table), static_cast<std::streamsize>(size));
          }
          for (const auto& item : items) {
            if (!item) continue;
            hash = fnv1a(item->first.pixels.data(), bytes, hash);
            out.write(reinterpret_cast<const char*>(item->first.pixels.data()), static_cast<std::streamsize>(bytes));
          }
          ShardFooter footer{};
          footer.checksum = hash;
          std::memcpy(footer.end, kEnd, 8);
          out.write(reinterpret_cast<const char*>(&footer), sizeof(footer));
        },
        "packed shard");
    result.records += header.count;
    result.skipped += n - header.count;
    done += n;
    if (progress) progress(done, count);
  }
  std::ostringstream names;
  for (const auto& c : classes) names << c << "\n";
  detail::write_file_atomically((fs::path(dir) / "classes.txt").string(), names.str(), "packed set classes");
  std::ostringstream meta;
  meta << "format=" << kFormat << "\nrecords=" << result.records << "\nshards=" << shards
       << "\nheight=" << layout.height << "\nwidth=" << layout.width << "\nchannels=" << layout.channels
       << "\nskipped=" << result.skipped << "\n";
  detail::write_file_atomically((fs::path(dir) / "meta.txt").string(), meta.str(), "packed set");
  return result;
}

PackedResult prepare_packed(const Source& source, const std::string& dir, int64_t side, int64_t workers,
                            OnError on_error, const Progress& progress) {
  if (side < 1 || side > 4096) throw OptionError("size", "must be between 1 and 4096, got " + std::to_string(side));
  PackedLayout layout;
  layout.height = layout.width = side;
  layout.channels = 3;
  return write_packed(
      dir, source.size(), layout, source.classes(),
      [&](size_t i) -> std::optional<std::pair<Image, int64_t>> {
        try {
          auto image = to_rgb(source.image(i, side));
          return std::make_pair(std::move(image), source.label(i));
        } catch (const std::exception&) {
          if (on_error == OnError::kFail) throw;
          return std::nullopt;
        }
      },
      workers, progress);
}

}  // namespace alexnet::data
