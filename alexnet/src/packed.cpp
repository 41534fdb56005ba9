#include <alexnet/data/packed.h>

#include "atomic_file.h"

#include <fcntl.h>
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
constexpr uint32_t kVersion = 1;
constexpr const char* kFormat = "alexnet-packed-1";

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

size_t shard_bytes(const ShardHeader& h) {
  return sizeof(ShardHeader) + h.count * (sizeof(int32_t) + record_bytes(h)) + sizeof(ShardFooter);
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
    if (std::memcmp(header_.magic, kMagic, 8) != 0 || header_.version != kVersion) {
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
    return data_ + sizeof(ShardHeader) + header_.count * sizeof(int32_t) + i * record_bytes(header_);
  }
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

class PackedSource final : public Source {
 public:
  explicit PackedSource(const std::string& dir) : dir_(dir) {
    const auto meta = read_meta(dir);
    const size_t shards = std::stoul(meta.at("shards"));
    size_t total = 0;
    for (size_t s = 0; s < shards; ++s) {
      shards_.push_back(std::make_unique<Mapping>((fs::path(dir) / shard_name(s)).string()));
      total += shards_.back()->header().count;
      ends_.push_back(total);
    }
    if (total != std::stoul(meta.at("records"))) {
      throw std::runtime_error("packed set '" + dir + "': shards hold " + std::to_string(total) +
                               " records, meta.txt says " + meta.at("records"));
    }
    std::ifstream names((fs::path(dir) / "classes.txt").string());
    std::string line;
    while (std::getline(names, line)) classes_.push_back(line);
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

 private:
  std::pair<size_t, size_t> locate(size_t index) const {
    if (index >= size()) {
      throw std::out_of_range("packed set '" + dir_ + "': record " + std::to_string(index) + " of " +
                              std::to_string(size()));
    }
    const size_t shard = static_cast<size_t>(std::upper_bound(ends_.begin(), ends_.end(), index) - ends_.begin());
    return {shard, index - (shard == 0 ? 0 : ends_[shard - 1])};
  }

  std::string dir_;
  std::vector<std::unique_ptr<Mapping>> shards_;
  std::vector<size_t> ends_;
  std::vector<std::string> classes_;
};

}  // namespace

std::shared_ptr<Source> open_packed(const std::string& dir) { return std::make_shared<PackedSource>(dir); }

void verify_packed(const std::string& dir) {
  const auto meta = read_meta(dir);
  for (size_t s = 0; s < std::stoul(meta.at("shards")); ++s) {
    const auto path = (fs::path(dir) / shard_name(s)).string();
    if (!Mapping(path).checksum_holds()) throw std::runtime_error("packed shard '" + path + "': checksum mismatch");
  }
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
        if (h.first_index == first && h.height == layout.height && h.width == layout.width &&
            h.channels == layout.channels && old.checksum_holds()) {
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
          hash = fnv1a(reinterpret_cast<const uint8_t*>(labels.data()), labels.size() * sizeof(int32_t), hash);
          out.write(reinterpret_cast<const char*>(labels.data()),
                    static_cast<std::streamsize>(labels.size() * sizeof(int32_t)));
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
