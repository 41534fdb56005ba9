// Writes the seed corpora (fuzz/corpus/TARGET/): small real files of every kind the
// targets read, made by the library's own writers from a real photograph, so that the
// fuzzers start from inputs that reach deep. scripts/fuzz.sh --seeds runs it; the
// seeds are committed.
//
//   make_seeds PHOTO CORPUS_DIR

#include <alexnet/network/checkpoint.h>
#include <alexnet/data.h>
#include <alexnet/network/preprocessing.h>
#include <alexnet/network/pytorch.h>

#include <torch/serialize/output-archive.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace fs = std::filesystem;
using namespace alexnet;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void put(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

uint16_t le16(size_t n) { return static_cast<uint16_t>(n); }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: make_seeds PHOTO CORPUS_DIR\n");
    return 2;
  }
  const std::string photo = argv[1], out = argv[2], tmp = out + "/.tmp";
  fs::create_directories(tmp);
  const auto small = data::decode_resized(photo, 24);

  // Images: the photograph at 24x24 in every format the pipeline reads.
  for (const char* ext : {".jpg", ".png", ".bmp", ".webp", ".tif"}) {
    data::write_image(small, tmp + "/photo" + ext);
    put(out + "/image/photo" + ext, slurp(tmp + "/photo" + ext));
  }
  auto gray = small;
  gray.channels = 1;
  gray.pixels.resize(static_cast<size_t>(24 * 24));
  data::write_image(gray, tmp + "/gray.png");
  put(out + "/image/gray.png", slurp(tmp + "/gray.png"));

  // State dicts: a small one in PyTorch's zip format (Python's legacy-format seed is
  // written by scripts/fuzz.sh with python3-torch).
  write_state_dict({{"features.0.weight", torch::arange(12, torch::kFloat).view({3, 4})},
                    {"features.0.bias", torch::ones({3}, torch::kHalf)}},
                   tmp + "/small.pth");
  put(out + "/state_dict/small-zip.pth", slurp(tmp + "/small.pth"));

  // A checkpoint's archive, as save() writes one, with tiny tensors (a real model's
  // would be megabytes): the options, the tensors, the preprocessing extras. (The
  // corpus keeps seeds of the first format, which exercise its reader.)
  {
    torch::serialize::OutputArchive archive;
    archive.write("format", c10::IValue(std::string("alexnet-checkpoint-2")));
    archive.write("options", c10::IValue(AlexNetOptions::caffe().num_classes(2).input_size(67).to_json()));
    c10::Dict<std::string, torch::Tensor> tensors;
    tensors.insert("tower0.conv1.weight", torch::zeros({2, 3}));
    archive.write("tensors", c10::IValue(tensors));
    CheckpointExtras extras;
    auto pre = Preprocessing::torchvision({"a", "b"});
    pre.add_to(extras);
    c10::Dict<std::string, torch::Tensor> extra_tensors;
    for (const auto& [k, v] : extras.tensors) extra_tensors.insert(k, v);
    c10::Dict<std::string, std::string> extra_strings;
    for (const auto& [k, v] : extras.strings) extra_strings.insert(k, v);
    archive.write("extra_tensors", c10::IValue(extra_tensors));
    archive.write("extra_strings", c10::IValue(extra_strings));
    archive.save_to(tmp + "/checkpoint.pt");
    put(out + "/checkpoint/archive.pt", slurp(tmp + "/checkpoint.pt"));
    put(out + "/checkpoint/options.json", AlexNetOptions::paper().to_json());
  }

  // A packed set of two 8x8 records: meta.txt, classes.txt, the shard, in the packed
  // target's layout (two little-endian lengths, then the three).
  {
    data::PackedLayout layout;
    layout.height = layout.width = 8;
    const auto eight = data::resize_and_crop(small, 8, 8);
    data::write_packed(tmp + "/packed", 2, layout, {"cat", "dog"},
                       [&](size_t i) { return std::optional(std::make_pair(eight, int64_t(i))); }, 1);
    const auto meta = slurp(tmp + "/packed/meta.txt"), classes = slurp(tmp + "/packed/classes.txt");
    std::string input;
    for (const auto n : {le16(meta.size()), le16(classes.size())}) {
      input += static_cast<char>(n & 0xFF);
      input += static_cast<char>(n >> 8);
    }
    put(out + "/packed/two.bin", input + meta + classes + slurp(tmp + "/packed/shard-00000.bin"));
  }

  // IDX: labels (1-D) and images (3-D), plain and gzip'd.
  {
    std::string labels{'\0', '\0', '\x08', '\x01', '\0', '\0', '\0', '\x04', '\x00', '\x03', '\x09', '\x01'};
    std::string images{'\0', '\0', '\x08', '\x03', '\0', '\0', '\0', '\x02', '\0', '\0', '\0', '\x03',
                       '\0', '\0', '\0', '\x03'};
    images += std::string(small.pixels.begin(), small.pixels.begin() + 18);
    put(out + "/idx/labels.idx", labels);
    put(out + "/idx/images.idx", images);
    gzFile gz = gzopen((out + "/idx/images.idx.gz").c_str(), "wb");
    gzwrite(gz, images.data(), static_cast<unsigned>(images.size()));
    gzclose(gz);
  }

  // Lists and class names, split by a NUL: Caffe's list format, a byte-order mark, CRLF.
  static const char list[] = "a/0.jpg 0\nb/1 with space.png 2\n\0cat\ndog\nbird\n";
  static const char bom[] = "\xEF\xBB\xBF" "x.png 1\r\n\r\ny.png 0\r\n\0\xEF\xBB\xBF" "one\r\ntwo\r\n";
  put(out + "/lists/list.txt", std::string(list, sizeof(list) - 1));
  put(out + "/lists/bom-crlf.txt", std::string(bom, sizeof(bom) - 1));

  fs::remove_all(tmp);
  std::printf("seeds written to %s\n", out.c_str());
  return 0;
}
