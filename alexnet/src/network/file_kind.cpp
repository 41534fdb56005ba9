#include "network/file_kind.h"
#include "network/text.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <vector>

namespace alexnet::detail {
namespace {

// The first `n` bytes of `path`; the caller has made sure it is no FIFO (opening one
// would wait for a writer).
std::string head_of(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes(n, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(n));
  bytes.resize(static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
  return bytes;
}

bool starts(const std::string& bytes, const std::string& prefix) { return bytes.compare(0, prefix.size(), prefix) == 0; }

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Whether `bytes` hold a NUL: not a text file. (Any other byte may be in a path: a
// Linux file name is bytes, Latin-1 ones included.)
bool binary(const std::string& bytes) { return bytes.find('\0') != std::string::npos; }

const char* image_kind(const std::string& b) {
  if (starts(b, "\xFF\xD8\xFF")) return "a JPEG image";
  if (starts(b, "\x89PNG\r\n\x1A\n")) return "a PNG image";
  if (starts(b, "GIF87a") || starts(b, "GIF89a")) return "a GIF image";
  if (starts(b, "BM")) return "a BMP image";
  if (starts(b, std::string("II*\0", 4)) || starts(b, std::string("MM\0*", 4))) return "a TIFF image";
  if (starts(b, "RIFF") && b.size() >= 12 && b.compare(8, 4, "WEBP") == 0) return "a WebP image";
  return nullptr;
}

}  // namespace

std::string special_file(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return {};
  if (S_ISFIFO(info.st_mode)) return "a FIFO (named pipe)";
  if (S_ISSOCK(info.st_mode)) return "a socket";
  if (S_ISCHR(info.st_mode)) return "a character device";
  if (S_ISBLK(info.st_mode)) return "a block device";
  return {};
}

std::string foreign_file(const std::string& path, Expected expected) {
  const bool weights = expected == Expected::kCheckpoint;
  const std::string not_what = weights ? "weights" : "a data set";
  if (const auto special = special_file(path); !special.empty()) {
    return special + ", not " + not_what + ": give a regular file";
  }
  const auto b = head_of(path, 4096);
  // Text that is not what was asked for.
  auto text = b;
  if (starts(text, "\xEF\xBB\xBF")) text = text.substr(3);
  text.erase(0, std::min(text.size(), text.find_first_not_of(" \t\r\n")));
  const auto l = lower(text.substr(0, 64));
  if (starts(l, "<!doctype html") || starts(l, "<html") || starts(l, "<head") || starts(l, "<?xml")) {
    return "an HTML page, not " + not_what + ": the download failed (open it to read why)";
  }
  if (starts(text, "version https://git-lfs.github.com/spec/")) {
    return "a Git LFS pointer, not the file itself: run git lfs pull";
  }
  if (const char* image = image_kind(b)) {
    return std::string(image) + ", not " + not_what +
           (weights ? "" : ": give the folder of class folders (alexnet classify takes single images)");
  }
  if (starts(b, "\x1F\x8B")) return "a gzip file, not " + not_what + ": decompress it first (gunzip)";
  if (starts(b, "\xFD" "7zXZ") || starts(b, "BZh") || starts(b, "7z\xBC\xAF\x27\x1C") ||
      (b.size() > 262 && b.compare(257, 5, "ustar") == 0)) {
    return "an archive (tar, xz, bzip2 or 7z), not " + not_what + ": extract it first";
  }
  if (starts(b, "\x80\x02\x8A\x0A")) {  // pickle protocol 2 and torch.save's legacy magic number
    return "a PyTorch file in torch.save's legacy format" +
           std::string(weights ? ", not our checkpoint: import it with alexnet convert --from torchvision"
                               : ", not a data set");
  }
  if (starts(b, "PK\x03\x04")) {
    if (!weights) return "a zip archive, not a data set: extract it (a folder of class folders)";
    // The entries' names from the central directory's records (PK\1\2) in the file's
    // tail, compressed entries too: no data is read, and nothing here needs to be whole.
    std::vector<std::string> names;
    {
      std::ifstream in(path, std::ios::binary | std::ios::ate);
      const auto size = static_cast<int64_t>(std::max<std::streamoff>(0, in.tellg()));
      const int64_t take = std::min<int64_t>(size, int64_t(1) << 20);
      std::string tail(static_cast<size_t>(take), '\0');
      in.seekg(size - take);
      in.read(tail.data(), take);
      auto u16 = [&](size_t at) {
        return static_cast<size_t>(static_cast<unsigned char>(tail[at])) |
               static_cast<size_t>(static_cast<unsigned char>(tail[at + 1])) << 8;
      };
      for (size_t at = tail.find("PK\x01\x02"); at != std::string::npos && at + 46 <= tail.size();
           at = tail.find("PK\x01\x02", at + 4)) {
        const size_t length = u16(at + 28);
        if (at + 46 + length <= tail.size()) names.push_back(tail.substr(at + 46, length));
      }
    }
    auto any = [&](const std::string& part) {
      return std::any_of(names.begin(), names.end(), [&](const std::string& n) { return n.find(part) != std::string::npos; });
    };
    if (any("/data.pkl") && !any("/constants.pkl")) {
      return "a PyTorch file (torch.save: a state dict or a pickled model), not our checkpoint: import it with "
             "alexnet convert --from torchvision";
    }
    if (any("/code/__torch__/")) {  // our checkpoints hold code/__torch__.py alone
      return "a TorchScript module (torch.jit.save, alexnet export --format torchscript), not our checkpoint: "
             "alexnet reads the checkpoints it writes and PyTorch state dicts through alexnet convert";
    }
    // (No names: a cut or damaged archive, which the reader names as such.)
    if (!names.empty() && !any("data.pkl")) return "a zip archive, not weights: extract it, or give the checkpoint inside";
    return "";
  }
  if (!weights && binary(b)) return "binary data, not a list file of 'path label' lines";
  return "";
}

std::string printable(const std::string& text, size_t limit) {
  std::string out;
  size_t shown = 0, i = 0;
  for (; i < text.size() && shown < limit; ++shown) {
    const auto c = static_cast<unsigned char>(text[i]);
    const size_t n = utf8_length(text, i);
    if (n > 0 && i + n <= text.size() && (c >= 0x20 || c == '\t') && c != 0x7F) {
      out.append(text, i, n);
      i += n;
    } else {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02X", c);
      out += hex;
      ++i;
    }
  }
  if (i < text.size()) out += "...";
  return out;
}

}  // namespace alexnet::detail
