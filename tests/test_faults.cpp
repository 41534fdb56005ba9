// Kinds of fault found by feeding the tool what users really feed it (modelled on public
// bug reports against torchvision, Caffe, Pillow, OpenCV and PyTorch): each test is
// named for its kind, and expects the right behaviour, not the one we had.

#include "fixtures.h"
#include "helpers.h"

#include <alexnet/network/checkpoint.h>
#include <alexnet/data.h>
#include <alexnet/train/inference.h>
#include <alexnet/network/preprocessing.h>
#include <alexnet/network/pytorch.h>
#include <alexnet/network/torchscript.h>
#include <alexnet/train/visualize.h>

#include <catch2/catch.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

using namespace alexnet;
using alexnet::test::message_of;
using alexnet::test::read_text;
using alexnet::test::run;
namespace fs = std::filesystem;

namespace {

const std::string kCli = ALEXNET_CLI;
const std::string kPhotos = "/usr/lib/python3/dist-packages/skimage/data";

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> encode(const std::string& extension, const cv::Mat& image) {
  std::vector<uint8_t> out;
  REQUIRE(cv::imencode(extension, image, out));
  return out;
}

// A camera JPEG: an EXIF block holding a thumbnail (itself a JPEG, with its own
// end-of-image marker near the start of the file), then the photograph.
std::vector<uint8_t> camera_jpeg(const cv::Mat& photo) {
  cv::Mat small;
  cv::resize(photo, small, cv::Size(64, 64));
  const auto thumbnail = encode(".jpg", small);
  const auto main = encode(".jpg", photo);
  // APP1: "Exif\0\0", a little-endian TIFF header with an empty directory, the thumbnail.
  std::vector<uint8_t> exif{'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  exif.insert(exif.end(), thumbnail.begin(), thumbnail.end());
  std::vector<uint8_t> out{0xFF, 0xD8, 0xFF, 0xE1};
  const size_t length = exif.size() + 2;
  out.push_back(static_cast<uint8_t>(length >> 8));
  out.push_back(static_cast<uint8_t>(length & 0xFF));
  out.insert(out.end(), exif.begin(), exif.end());
  out.insert(out.end(), main.begin() + 2, main.end());  // the photograph, after its own SOI
  return out;
}

// A small checkpoint with preprocessing (2 classes, 67 input), for the CLI tests.
std::string small_checkpoint(const std::string& dir, std::vector<std::string> classes = {"a", "b"}) {
  torch::manual_seed(3);
  AlexNet model(AlexNetOptions::caffe().input_size(67).num_classes(static_cast<int64_t>(classes.size())));
  Preprocessing pre;
  pre.classes = std::move(classes);
  pre.mean_rgb = torch::tensor({120.0, 115.0, 100.0}, torch::kDouble);
  pre.resize = 72;
  pre.crop = 67;
  CheckpointExtras extras;
  pre.add_to(extras);
  const auto path = dir + "/small.pt";
  save(*model, path, extras);
  return path;
}

}  // namespace

TEST_CASE("Fault: a partly decoded image passes as whole (every format refuses data that ends early)",
          "[faults][image]") {
  const auto dir = test::temp_dir("fault-truncated");
  const auto photo = cv::imread(kPhotos + "/astronaut.png");
  REQUIRE_FALSE(photo.empty());
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> files{
      {"camera.jpg", camera_jpeg(photo)},       {"photo.png", encode(".png", photo)},
      {"photo.bmp", encode(".bmp", photo)},     {"photo.webp", encode(".webp", photo)},
      {"photo.tif", encode(".tif", photo)},     {"progressive.jpg", [&] {
         std::vector<uint8_t> out;
         cv::imencode(".jpg", photo, out, {cv::IMWRITE_JPEG_PROGRESSIVE, 1});
         return out;
       }()}};
  for (const auto& [name, bytes] : files) {
    INFO(name);
    const auto whole = dir + "/" + name;
    write_bytes(whole, bytes);
    CHECK(data::decode_resized(whole, 256).width == 256);  // whole: decodes
    auto cut = bytes;
    cut.resize(bytes.size() * 55 / 100);  // `head -c` at 55%
    const auto part = dir + "/cut-" + name;
    write_bytes(part, cut);
    CHECK_THAT(message_of([&] { data::decode_resized(part, 256); }),
               Catch::StartsWith("image '" + part + "': truncated: the ") && Catch::Contains(" data ends "));
  }
  // The camera JPEG's thumbnail ends with FF D9 near the start: the old check took that
  // for the end of the file.
  auto jpeg = camera_jpeg(photo);
  jpeg.resize(jpeg.size() * 55 / 100);
  const uint8_t eoi[2] = {0xFF, 0xD9};
  CHECK(std::search(jpeg.begin(), jpeg.end(), eoi, eoi + 2) != jpeg.end());
  // In a data set: an error naming the file, or left out and counted with skip.
  fs::create_directories(dir + "/set/a");
  fs::copy_file(dir + "/photo.png", dir + "/set/a/whole.png");
  fs::copy_file(dir + "/cut-camera.jpg", dir + "/set/a/cut.jpg");
  const auto source = data::open_image_folder(dir + "/set");
  data::ImageDataset strict(source, data::TransformOptions().resize(72).crop(67).mode(data::Mode::kCenter));
  CHECK_THAT(message_of([&] { strict.get_batch({0, 1}); }), Catch::Contains("cut.jpg': truncated"));
  data::ImageDataset lenient(
      source, data::TransformOptions().resize(72).crop(67).mode(data::Mode::kCenter).on_error(data::OnError::kSkip));
  CHECK(lenient.get_batch({0, 1}).skipped == 1);
  // And on the command line, as classify meets it: one line, exit 1.
  std::string out;
  const auto weights = small_checkpoint(dir);
  CHECK(run(kCli + " classify --weights " + weights + " " + dir + "/cut-camera.jpg", out, true) == 1);
  CHECK(out == "error: image '" + dir + "/cut-camera.jpg': truncated: the JPEG data ends inside its image data\n");
}

// AddressSanitizer keeps freed memory in quarantine and pads every block: peak memory
// under it says nothing about ours (scripts/sanitize.sh).
#if defined(__SANITIZE_ADDRESS__)
#define ALEXNET_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ALEXNET_TEST_ASAN 1
#endif
#endif

TEST_CASE("Fault: memory is bounded by the input's header, not by what we keep", "[faults][image]") {
#ifdef ALEXNET_TEST_ASAN
  return test::skip("peak memory under AddressSanitizer includes its quarantine and redzones; measured in the "
                    "normal build");
#endif
  const auto dir = test::temp_dir("fault-memory");
  const auto weights = small_checkpoint(dir);
  const auto photo = kPhotos + "/astronaut.png";
  cv::imwrite(dir + "/strip.png", cv::Mat(20000, 1, CV_8UC3, cv::Scalar(10, 200, 30)));  // 1 wide, 20000 high
  cv::imwrite(dir + "/wide.png", cv::Mat(1, 20000, CV_8UC3, cv::Scalar(10, 200, 30)));
  cv::imwrite(dir + "/large.png", cv::Mat(4600, 4600, CV_8UC3, cv::Scalar(0, 0, 0)));  // 63 MB decoded
  cv::imwrite(dir + "/larger.png", cv::Mat(5000, 5000, CV_8UC3, cv::Scalar(0, 0, 0)));  // 75 MB: one at a time
  cv::imwrite(dir + "/large.bmp", cv::Mat(4600, 4600, CV_8UC3, cv::Scalar(0, 0, 0)));
  // A strip decodes to its central square, enlarged: not to 256 x 5,120,000 first.
  const auto strip = data::decode_resized(dir + "/strip.png", 256);
  CHECK((strip.width == 256 && strip.height == 256));
  CHECK((strip.pixels[0] == 30 && strip.pixels[1] == 200 && strip.pixels[2] == 10));  // RGB
  // What cameras and scanners write decodes: a 24-megapixel PNG, a 12-megapixel 16-bit
  // TIFF (each above kMaxDecodedBytes, so decoded one at a time).
  cv::imwrite(dir + "/camera.png", cv::Mat(4000, 6000, CV_8UC3, cv::Scalar(10, 20, 30)));
  cv::imwrite(dir + "/scan.tif", cv::Mat(3000, 4000, CV_16UC3, cv::Scalar(257 * 10, 257 * 20, 257 * 30)));
  for (const char* name : {"/camera.png", "/scan.tif", "/larger.png"}) {
    INFO(name);
    const auto image = data::decode_resized(dir + name, 256);
    CHECK((image.width == 256 && image.height == 256));
  }
  CHECK(data::decode_resized(dir + "/scan.tif", 256).pixels[0] == 30);  // 16 bits scaled to 8, RGB
  // A full decode is not kept: once decode_resized returns, the 75 MB of a 25-megapixel
  // PNG are given back (they are the peak while it decodes).
  const auto resident = test::memory_status("VmRSS");
  (void)data::decode_resized(dir + "/larger.png", 256);
  CHECK(test::memory_status("VmRSS") - resident < 16 * 1024 * 1024);
  // Peak memory of `classify`, against an ordinary photo with the same model.
  auto peak_kib = [&](const std::string& image, int expected_status) {
    std::string out;
    REQUIRE(run("/usr/bin/time -f 'peak %M' " + kCli + " classify --weights " + weights + " " + image, out, true) ==
            expected_status);
    std::smatch m;
    REQUIRE(std::regex_search(out, m, std::regex("peak ([0-9]+)")));
    return std::stol(m[1].str());
  };
  const long ordinary = peak_kib(photo, 0);
  for (const auto& [image, status] : std::vector<std::pair<std::string, int>>{
           {dir + "/strip.png", 0}, {dir + "/wide.png", 0}, {dir + "/large.png", 0}, {dir + "/large.bmp", 0},
           {dir + "/larger.png", 0}}) {
    const long peak = peak_kib(image, status);
    WARN(image << ": classify peaks at " << peak / 1024 << " MiB, an ordinary photo at " << ordinary / 1024 << " MiB");
    CHECK(peak - ordinary < 100 * 1024);
  }
  // A JPEG decodes at reduced scale (1/8 here): a 4600x4600 one costs what a photo
  // does, not the 63 MB of its full decode.
  cv::imwrite(dir + "/large.jpg", cv::Mat(4600, 4600, CV_8UC3, cv::Scalar(0, 0, 0)));
  const long jpeg = peak_kib(dir + "/large.jpg", 0);
  WARN("a 4600x4600 JPEG: classify peaks at " << jpeg / 1024 << " MiB, an ordinary photo at " << ordinary / 1024
                                              << " MiB");
  CHECK(jpeg - ordinary < 16 * 1024);
  // Large images arriving together are decoded one at a time: statistics over four
  // 25-megapixel PNGs with two decoding threads peak at one such image (75 MB) more
  // than over four small ones, not two.
  for (const char* set : {"small", "large"}) {
    for (const char* c : {"a", "b"}) fs::create_directories(dir + "/" + set + "/" + c);
  }
  for (int i = 0; i < 2; ++i) {
    for (const char* c : {"a", "b"}) {
      fs::copy(dir + "/larger.png", dir + "/large/" + c + "/" + std::to_string(i) + ".png");
      fs::copy(photo, dir + "/small/" + c + "/" + std::to_string(i) + ".png");
    }
  }
  auto stats_peak_kib = [&](const std::string& set) {
    std::string out;
    const int status = run("/usr/bin/time -f 'peak %M' " + kCli + " stats --workers 2 --resize 64 --data " + dir + "/" +
                               set + " --out " + dir + "/stats-" + set + ".pt",
                           out, true);
    INFO(out);
    REQUIRE(status == 0);
    std::smatch m;
    REQUIRE(std::regex_search(out, m, std::regex("peak ([0-9]+)")));
    return std::stol(m[1].str());
  };
  const long small = stats_peak_kib("small"), large = stats_peak_kib("large");
  WARN("stats peaks at " << large / 1024 << " MiB over four 25-megapixel PNGs, " << small / 1024
                         << " MiB over four photos");
  CHECK(large - small < 120 * 1024);
}

TEST_CASE("Fault: labels by position, not by name (classes are matched by name)", "[faults][train]") {
  const auto dir = test::temp_dir("fault-labels");
  for (const char* c : {"a_blue", "b_green", "c_red"}) fs::create_directories(dir + "/train/" + c);
  fs::create_directories(dir + "/subset/a_blue");
  fs::create_directories(dir + "/subset/c_red");
  fs::create_directories(dir + "/other/a_blue");
  fs::create_directories(dir + "/other/purple");
  for (const auto& folder : {"/train/a_blue", "/train/b_green", "/train/c_red", "/subset/a_blue", "/subset/c_red",
                             "/other/a_blue", "/other/purple"}) {
    const cv::Scalar colour = std::string(folder).find("blue") != std::string::npos    ? cv::Scalar(200, 30, 30)
                              : std::string(folder).find("green") != std::string::npos ? cv::Scalar(30, 200, 30)
                                                                                        : cv::Scalar(30, 30, 200);
    for (int i = 0; i < 3; ++i) cv::imwrite(dir + folder + "/" + std::to_string(i) + ".png", cv::Mat(40, 40, CV_8UC3, colour));
  }
  const std::vector<std::string> classes{"a_blue", "b_green", "c_red"};
  std::string note;
  const auto subset = data::match_classes(data::open_image_folder(dir + "/subset"), classes, &note);
  CHECK(subset->classes() == classes);
  CHECK(subset->label(0) == 0);
  CHECK(subset->label(3) == 2);  // c_red is the model's class 2, not the folder's 1
  CHECK(note == "data '" + dir + "/subset' holds 2 of the model's 3 classes; labels matched by name");
  CHECK(message_of([&] { data::match_classes(data::open_image_folder(dir + "/other"), classes); }) ==
        "data '" + dir + "/other': 1 of its classes ('purple') are not among the model's 3 classes");
  // Evaluation counts each image under the model's class of its name.
  torch::manual_seed(4);
  AlexNet model(AlexNetOptions::caffe().input_size(67).num_classes(3));
  auto pre = Preprocessing::from_statistics(classes, Mean::kChannels, {}, torch::tensor({100.0, 100.0, 100.0}), 72, 67);
  const auto e = evaluate(model, data::open_image_folder(dir + "/subset"), pre,
                          InferenceOptions().batch_size(4).workers(0));
  CHECK(e.per_class_images == std::vector<int64_t>{3, 0, 3});
  CHECK(std::isnan(e.per_class[1]));
  // List files with numeric labels: indices, checked against the model's classes.
  std::ofstream(dir + "/list.txt") << "subset/a_blue/0.png 0\nsubset/c_red/0.png 5\n";
  CHECK(message_of([&] { evaluate(model, data::open_image_list(dir + "/list.txt"), pre); }) ==
        "data '" + dir + "/list.txt': labels go up to 5, but the model has 3 classes");
}

TEST_CASE("Fault: a full disk kills the process (every write failure: one line, the previous file intact)",
          "[faults][cli]") {
  const auto dir = test::temp_dir("fault-disk");
  std::string out;
  // Photographs whose PNGs do not make libpng print warnings of its own.
  REQUIRE(run("mkdir -p " + dir + "/d/a " + dir + "/d/b && cp " + kPhotos + "/coffee.png " + kPhotos + "/rocket.jpg " +
                  dir + "/d/a/ && cp " + kPhotos + "/motorcycle_left.png " + kPhotos + "/retina.jpg " + dir + "/d/b/",
              out) == 0);
  const std::string train = kCli + " train --data " + dir + "/d --arch caffe --input-size 67 --resize 72 " +
                            "--batch-size 2 --workers 1 --out " + dir + "/run";
  REQUIRE(run(train + " --epochs 1", out, true) == 0);
  const auto before = file_bytes(dir + "/run/last.pt");
  REQUIRE(run(kCli + " export --weights " + dir + "/run/best.pt --format grouped --out " + dir + "/g.pth", out, true) ==
          0);
  // A 50 KB file-size limit (SIGXFSZ ignored, so writes fail with EFBIG as on a full disk).
  const auto limited = [&](const std::string& command) {
    return "bash -c 'ulimit -f 50; trap \"\" XFSZ; " + command + "'";
  };
  CHECK(run(limited(kCli + " train --resume " + dir + "/run --epochs 2"), out, true) == 1);
  CHECK_THAT(out, Catch::EndsWith("error: checkpoint '" + dir +
                                  "/run/last.pt': file too large (a file-size limit); the previous file is intact\n"));
  CHECK(file_bytes(dir + "/run/last.pt") == before);
  CHECK_THAT(read_text(dir + "/run/train.log"), Catch::Contains("error: checkpoint '" + dir + "/run/last.pt'"));
  const std::vector<std::pair<std::string, std::string>> commands{
      {kCli + " export --weights " + dir + "/run/best.pt --format grouped --overwrite --out " + dir + "/g.pth",
       "error: state dict '" + dir + "/g.pth': file too large (a file-size limit); the previous file is intact\n"},
      {kCli + " features --weights " + dir + "/run/best.pt --data " + dir + "/d --out " + dir + "/f.npy",
       "error: NumPy file '" + dir + "/f.npy': file too large (a file-size limit); nothing was written\n"},
      {kCli + " prepare --data " + dir + "/d --out " + dir + "/packed",
       "error: packed shard '" + dir + "/packed/shard-00000.bin': file too large (a file-size limit); nothing was "
       "written\n"},
      {kCli + " convert --from torchvision " + dir + "/tv.pth --out " + dir + "/tv.pt",
       "error: checkpoint '" + dir + "/tv.pt': file too large (a file-size limit); nothing was written\n"}};
  // A torchvision-layout file to convert (written without a limit).
  torch::manual_seed(1);
  AlexNet tv(AlexNetOptions::torchvision().num_classes(5));
  save(*tv, dir + "/tv-model.pt");
  REQUIRE(run(kCli + " export --weights " + dir + "/tv-model.pt --format torchvision --out " + dir + "/tv.pth", out,
              true) == 0);
  for (const auto& [command, expected] : commands) {
    INFO(command);
    CHECK(run(limited(command), out, true) == 1);
    // An inference command says its precision first; the error is then the one line.
    out = std::regex_replace(out, std::regex("^info: precision [^\n]*\n"), "");
    CHECK(out == expected);
  }
  // No temporary file is left anywhere.
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    CHECK(entry.path().filename().string().find(".tmp-") == std::string::npos);
  }
}

TEST_CASE("Fault: text files from other systems (byte-order marks, CRLF, any byte in a name)", "[faults][data]") {
  const auto dir = test::temp_dir("fault-text");
  for (const char* c : {"one", "two"}) {
    fs::create_directories(dir + "/f/" + std::string(c));
    cv::imwrite(dir + "/f/" + c + "/0.png", cv::Mat(40, 40, CV_8UC3, cv::Scalar(20, 40, 60)));
  }
  std::ofstream(dir + "/names.txt", std::ios::binary) << "\xEF\xBB\xBF" "First\r\nSecond\r\n";
  const auto named = data::open_image_folder(dir + "/f", data::ReadOptions().class_names(dir + "/names.txt"));
  CHECK(named->classes() == std::vector<std::string>{"First", "Second"});
  std::ofstream(dir + "/list.txt", std::ios::binary) << "\xEF\xBB\xBF" "f/one/0.png 0\r\n\r\nf/two/0.png 1\r\n";
  const auto list = data::open_image_list(dir + "/list.txt");
  REQUIRE(list->size() == 2);
  CHECK(list->describe(0) == dir + "/f/one/0.png");
  // A file name with a newline, a quote, a backslash and bytes that are not UTF-8.
  const std::string odd = dir + "/odd \"name\"\\ \n\xff\xfe.png";
  cv::imwrite(odd, cv::Mat(40, 40, CV_8UC3, cv::Scalar(20, 40, 60)));
  REQUIRE(fs::exists(odd));
  const auto weights = small_checkpoint(dir);
  std::string out;
  const std::string quoted = "'" + std::regex_replace(odd, std::regex("'"), "'\\''") + "'";
  REQUIRE(run(kCli + " classify --json --weights " + weights + " " + quoted + " > " + dir + "/out.json", out) == 0);
  REQUIRE(run("/usr/bin/python3 -c \"import json; [json.loads(l) for l in open('" + dir + "/out.json')]; print('ok')\"",
              out) == 0);
  CHECK(out == "ok\n");
  // Beside an .npy, one line per row whatever the names hold, read back as written.
  write_row_names({odd, "plain"}, dir + "/rows.txt");
  REQUIRE(run("wc -l < " + dir + "/rows.txt", out) == 0);
  CHECK(out == "2\n");
  CHECK(read_row_names(dir + "/rows.txt") == std::vector<std::string>{odd, "plain"});
}

TEST_CASE("Fault: symlinked folders inside class folders are followed, loops are not", "[faults][data]") {
  const auto dir = test::temp_dir("fault-links");
  fs::create_directories(dir + "/elsewhere/more");
  fs::create_directories(dir + "/set/a");
  fs::create_directories(dir + "/set/b");
  for (const auto& path : {dir + "/set/a/0.png", dir + "/set/b/0.png", dir + "/elsewhere/1.png",
                           dir + "/elsewhere/more/2.png"}) {
    cv::imwrite(path, cv::Mat(40, 40, CV_8UC3, cv::Scalar(20, 40, 60)));
  }
  fs::create_directory_symlink(dir + "/elsewhere", dir + "/set/a/linked");
  fs::create_directory_symlink(dir + "/set/a", dir + "/elsewhere/loop");  // back up: a loop
  const auto source = data::open_image_folder(dir + "/set");
  std::vector<std::string> files;
  for (size_t i = 0; i < source->size(); ++i) files.push_back(source->describe(i));
  CHECK(files == std::vector<std::string>{dir + "/set/a/0.png", dir + "/set/a/linked/1.png",
                                          dir + "/set/a/linked/more/2.png", dir + "/set/b/0.png"});
}

TEST_CASE("Fault: corrupt packed data is used silently (each record's checksum is checked when read)",
          "[faults][data]") {
  const auto dir = test::temp_dir("fault-packed");
  for (const char* c : {"a", "b"}) {
    fs::create_directories(dir + "/f/" + std::string(c));
    for (int i = 0; i < 3; ++i) {
      cv::imwrite(dir + "/f/" + c + "/" + std::to_string(i) + ".png",
                  cv::Mat(40, 40, CV_8UC3, cv::Scalar(20 * i, 40, c[0] == 'a' ? 60 : 160)));
    }
  }
  const auto folder = data::open_image_folder(dir + "/f");
  data::prepare_packed(*folder, dir + "/packed", 40, 1);
  CHECK(data::verify_packed(dir + "/packed") == 6);
  // One pixel byte in the middle of the shard: of record (middle - 88) / 4800 (a 40-byte
  // header, 6 labels and 6 CRCs of 4 bytes, then 40 x 40 x 3 bytes a record).
  const auto shard = dir + "/packed/shard-00000.bin";
  const auto size = fs::file_size(shard);
  const auto record = std::to_string((size / 2 - 88) / 4800);
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(size / 2));
    const char c = static_cast<char>(f.get());
    f.seekp(static_cast<std::streamoff>(size / 2));
    f.put(static_cast<char>(c ^ 0x01));
  }
  const auto packed = data::open_packed(dir + "/packed");
  const auto error = message_of([&] { data::compute_statistics(*packed, 40, 1); });
  CHECK_THAT(error, Catch::StartsWith("packed set '" + dir + "/packed': record " + record + " (shard '" + shard +
                                      "', record " + record + ") is corrupt (its checksum does not hold)"));
  CHECK_THAT(message_of([&] { data::verify_packed(dir + "/packed"); }), Catch::Contains("record " + record + " (shard"));
  std::string out;
  CHECK(run(kCli + " verify " + dir + "/packed", out, true) == 1);
  CHECK_THAT(out, Catch::StartsWith("error: packed set '" + dir + "/packed': record " + record + " (shard '"));
  // Unchecked on request (the benchmark's baseline): the flipped byte is read as it is.
  CHECK(data::open_packed(dir + "/packed", /*verify=*/false)->image(std::stoul(record), 40).width == 40);

  // Shards of the first version (one checksum for the whole shard, no table of CRCs)
  // still read, checked whole when first read.
  data::prepare_packed(*folder, dir + "/v1", 40, 1);
  auto bytes = file_bytes(dir + "/v1/shard-00000.bin");
  bytes.erase(bytes.begin() + 40 + 24, bytes.begin() + 40 + 48);  // the CRC table
  bytes[8] = 1;                                                   // the version
  uint64_t hash = 1469598103934665603ull;                         // FNV-1a of all but the footer
  for (size_t i = 0; i + 16 < bytes.size(); ++i) hash = (hash ^ bytes[i]) * 1099511628211ull;
  std::memcpy(bytes.data() + bytes.size() - 16, &hash, 8);
  write_bytes(dir + "/v1/shard-00000.bin", bytes);
  const auto old = data::open_packed(dir + "/v1");
  CHECK(old->image(4, 40).pixels == folder->image(4, 40).pixels);
  CHECK(data::verify_packed(dir + "/v1") == 6);
  bytes[bytes.size() / 2] ^= 0x01;
  write_bytes(dir + "/v1/shard-00000.bin", bytes);
  CHECK_THAT(message_of([&] { data::open_packed(dir + "/v1")->image(0, 40); }),
             Catch::EndsWith("shard '" + dir + "/v1/shard-00000.bin' is corrupt (its checksum does not hold)"));
}

TEST_CASE("Fault: options reach LibTorch's internals unchecked, or are checked too late", "[faults][cli]") {
  const auto dir = test::temp_dir("fault-options");
  const auto weights = small_checkpoint(dir);
  std::string out;
  REQUIRE(run("mkdir -p " + dir + "/d/a " + dir + "/d/b " + dir + "/one/only && cp " + kPhotos + "/coffee.png " +
                  dir + "/d/a/ && cp " + kPhotos + "/rocket.jpg " + dir + "/d/b/ && cp " + kPhotos + "/coffee.png " +
                  dir + "/one/only/",
              out) == 0);
  CHECK(run(kCli + " evaluate --batch-size 0 --weights " + weights + " --data " + dir + "/d", out, true) == 1);
  CHECK(out == "error: --batch-size must be positive, got 0\n");
  CHECK(run(kCli + " evaluate --workers 0 --json --weights " + weights + " --data " + dir + "/d", out, true) == 0);
  CHECK_THAT(out, Catch::Contains("\"images\":2"));  // 0: in the calling thread, as PyTorch's DataLoader
  CHECK(run(kCli + " stats --workers 0 --data " + dir + "/d --out " + dir + "/s.pt", out, true) == 0);
  CHECK(run(kCli + " stats --resize 0 --data " + dir + "/d --out " + dir + "/s0.pt", out, true) == 2);
  CHECK(out == "error: --resize: must be at least 1, got 0 (see alexnet --help)\n");
  CHECK(run(kCli + " stats --size 0 --data " + dir + "/d --out " + dir + "/s0.pt", out, true) == 1);  // the old name
  CHECK(out == "error: --resize: must be at least 1, got 0\n");
  // Refused before any statistics are computed: nothing is written.
  const std::string train = kCli + " train --data " + dir + "/d --arch caffe --epochs 1 --out " + dir + "/run";
  CHECK(run(train + " --input-size 60", out, true) == 1);
  CHECK_THAT(out, Catch::StartsWith("error: AlexNet: input size 60 with conv1 padding 0 is too small"));
  CHECK(run(train + " --input-size 67 --resize 50", out, true) == 1);
  CHECK(out == "error: --input-size 67 is larger than resize 50: the crop must fit the resized image\n");
  CHECK_FALSE(fs::exists(dir + "/run"));
  CHECK(run(kCli + " train --data " + dir + "/one --arch caffe --input-size 67 --resize 72 --out " + dir + "/run1",
            out, true) == 1);
  CHECK(out == "error: training data '" + dir + "/one' has 1 class: a classifier needs at least 2\n");
  CHECK_FALSE(fs::exists(dir + "/run1"));  // the folder made for the run is gone again
}

TEST_CASE("Fault: a file that is not what the option expects is read as one (pages, pointers, archives, images)",
          "[faults][data]") {
  const auto dir = test::temp_dir("fault-impostors");
  auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
    return dir + "/" + name;
  };
  const auto html = write("alexnet.pt", "\n<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n");
  const auto lfs = write("lfs.pt", "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 244408911\n");
  const auto jpeg = kPhotos + "/rocket.jpg";
  torch::manual_seed(1);
  AlexNet tv(AlexNetOptions::torchvision().num_classes(3));
  write_state_dict(to_state_dict(*tv), dir + "/tv.pth");  // what torch.save writes
  AlexNet small(AlexNetOptions::caffe().input_size(67).num_classes(3));
  save_torchscript(*small, Preprocessing::torchvision({"a", "b", "c"}), dir + "/model.ts");
  const std::vector<std::pair<std::string, std::string>> weights{
      {html, "an HTML page, not weights: the download failed (open it to read why)"},
      {lfs, "a Git LFS pointer, not the file itself: run git lfs pull"},
      {jpeg, "a JPEG image, not weights"},
      {dir + "/tv.pth", "a PyTorch file (torch.save: a state dict or a pickled model), not our checkpoint: import it "
                        "with alexnet convert --from torchvision"},
      {dir + "/model.ts", "a TorchScript module (torch.jit.save, alexnet export --format torchscript), not our "
                          "checkpoint: alexnet reads the checkpoints it writes and PyTorch state dicts through "
                          "alexnet convert"}};
  for (const auto& [path, kind] : weights) {
    INFO(path);
    CHECK(message_of([&] { load(path); }) == "checkpoint '" + path + "': " + kind);
  }
  // As data: named, never read as lines (and a line's bytes are never echoed raw).
  std::string out;
  REQUIRE(run("cd " + dir + " && python3 -c \"import zipfile; zipfile.ZipFile('set.zip', 'w').writestr('a/1.png', b'x')\"",
              out) == 0);
  const auto binary = write("set.bin", std::string("\x01\x02\x00\x03 7\n", 7));
  const auto control = write("list.txt", "a.png 0\nb\x1B[31m.png\n");
  const std::vector<std::pair<std::string, std::string>> data{
      {dir + "/set.zip", "a zip archive, not a data set: extract it (a folder of class folders)"},
      {jpeg, "a JPEG image, not a data set: give the folder of class folders (alexnet classify takes single images)"},
      {html, "an HTML page, not a data set: the download failed (open it to read why)"},
      {binary, "binary data, not a list file of 'path label' lines"}};
  for (const auto& [path, kind] : data) {
    INFO(path);
    CHECK(message_of([&] { data::open_source(path); }) == "data '" + path + "': " + kind);
  }
  // A path in Latin-1 (a Linux file name is bytes) is text, not binary data.
  CHECK(data::open_source(write("latin1.txt", "caf\xE9.png 0\n"))->size() == 1);
  CHECK(message_of([&] { data::open_source(control); }) ==
        "list '" + control + "' line 2: expected 'path label', got 'b\\x1B[31m.png'");
}

TEST_CASE("Fault: long work that could not have been saved (outputs are checked before the work)", "[faults][cli]") {
  const auto dir = test::temp_dir("fault-unwritable");
  torch::manual_seed(1);
  AlexNet small(AlexNetOptions::caffe().input_size(67).num_classes(3));
  save(*small, dir + "/w.pt");
  fs::create_directories(dir + "/folder");
  const std::string photos = " --data " + kPhotos + "/rocket.jpg " + kPhotos + "/coffee.png";
  const std::vector<std::pair<std::string, std::string>> commands{
      {kCli + " features --weights " + dir + "/w.pt" + photos + " --out " + dir + "/missing/f.npy",
       "error: features '" + dir + "/missing/f.npy': cannot be written (folder '" + dir +
           "/missing': No such file or directory): nothing was done\n"},
      {kCli + " features --weights " + dir + "/w.pt" + photos + " --out " + dir + "/folder",
       "error: features '" + dir + "/folder': cannot be written (it is a folder): nothing was done\n"},
      {kCli + " stats --data " + kPhotos + " --out " + dir + "/w.pt/stats.pt",
       "error: output '" + dir + "/w.pt/stats.pt': cannot be written ('" + dir + "/w.pt' is not a folder): nothing "
       "was done\n"},
      {kCli + " export --weights " + dir + "/w.pt --format torchscript --out " + dir + "/missing/m.ts",
       "error: output '" + dir + "/missing/m.ts': cannot be written (folder '" + dir +
           "/missing': No such file or directory): nothing was done\n"}};
  std::string out;
  for (const auto& [command, expected] : commands) {
    INFO(command);
    CHECK(run(command, out, true) == 1);
    CHECK(out == expected);
  }
  // A place nobody may write (sysfs is never writable, even by root).
  CHECK(run(kCli + " features --weights " + dir + "/w.pt" + photos + " --out /sys/f.npy", out, true) == 1);
  CHECK_THAT(out, Catch::StartsWith("error: features '/sys/f.npy': cannot be written (") &&
                      Catch::EndsWith("): nothing was done\n"));
}

TEST_CASE("Fault: files left out without a word (images are known by their bytes, the rest is counted and named)",
          "[faults][data]") {
  const auto dir = test::temp_dir("fault-left-out");
  for (const char* c : {"one", "two"}) fs::create_directories(dir + "/set/" + c);
  const auto jpeg = file_bytes(kPhotos + "/rocket.jpg");
  const auto png = file_bytes(kPhotos + "/coffee.png");
  write_bytes(dir + "/set/one/a.jpg", jpeg);
  write_bytes(dir + "/set/one/b.jfif", jpeg);
  write_bytes(dir + "/set/one/c.JPE", jpeg);
  write_bytes(dir + "/set/two/d", png);  // no extension
  write_bytes(dir + "/set/two/e.dat", png);
  std::ofstream(dir + "/set/two/f.gif", std::ios::binary) << "GIF89a\x01\x00\x01\x00\x80\x00\x00";
  std::ofstream(dir + "/set/two/notes.txt") << "where these came from\n";
  std::ofstream(dir + "/set/one/Thumbs.db", std::ios::binary) << std::string("\xD0\xCF\x11\xE0", 4);
  const auto source = data::open_source(dir + "/set");
  std::vector<std::string> names;
  for (size_t i = 0; i < source->size(); ++i) names.push_back(fs::path(source->describe(i)).filename().string());
  CHECK(names == std::vector<std::string>{"a.jpg", "b.jfif", "c.JPE", "d", "e.dat", "f.gif"});
  CHECK(source->left_out() == std::vector<std::string>{dir + "/set/one/Thumbs.db", dir + "/set/two/notes.txt"});
  CHECK(data::describe_left_out(*source) == "left out 2 files of " + dir + "/set that are not images (1 .db, 1 .txt: " +
                                                dir + "/set/one/Thumbs.db, " + dir + "/set/two/notes.txt)");
  // Each image decodes as the JPEG or PNG it is; the GIF is named as what it is, and
  // --on-error decides (here, on the command line: stop, or skip and count).
  for (size_t i = 0; i < 5; ++i) CHECK(source->image(i, 64).width == 64);
  CHECK(message_of([&] { source->image(5, 64); }) ==
        "image '" + dir + "/set/two/f.gif': a GIF image, which this build's OpenCV cannot decode (convert it to PNG)");
  std::string out;
  CHECK(run(kCli + " stats --data " + dir + "/set --out " + dir + "/s.pt", out, true) == 1);
  CHECK_THAT(out, Catch::Contains("warning: left out 2 files of " + dir + "/set that are not images") &&
                      Catch::Contains("f.gif': a GIF image"));
  REQUIRE(run(kCli + " stats --data " + dir + "/set --out " + dir + "/s.pt --skip-bad", out, true) == 0);
  CHECK_THAT(out, Catch::Contains("left out 1 unreadable images"));
}

TEST_CASE("Fault: names in another Unicode form (NFD folders meet a model's NFC classes)", "[faults][data]") {
  if (!data::nfc_available()) return test::skip("this build has no ICU (libicu-dev): class names compare as bytes");
  const auto dir = test::temp_dir("fault-nfd");
  // "café" with a combining acute accent, and 한국 as separate jamo: what a Mac's copy holds.
  const std::string cafe_nfd = "cafe\xCC\x81", cafe_nfc = "caf\xC3\xA9";
  const std::string korea_nfd = "\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB\xE1\x84\x80\xE1\x85\xAE\xE1\x86\xA8";
  const std::string korea_nfc = "\xED\x95\x9C\xEA\xB5\xAD";
  CHECK(data::nfc(cafe_nfd) == cafe_nfc);
  CHECK(data::nfc(korea_nfd) == korea_nfc);
  CHECK(data::nfc("plain") == "plain");
  CHECK(data::nfc("bad\xFF") == "bad\xFF");  // not UTF-8: kept as it is
  for (const auto& c : {cafe_nfd, korea_nfd}) {
    fs::create_directories(dir + "/" + c);
    write_bytes(dir + "/" + c + "/0.png", file_bytes(kPhotos + "/coffee.png"));
  }
  const auto matched = data::match_classes(data::open_source(dir), {"tea", korea_nfc, cafe_nfc});
  // Folders sort as bytes: cafe\u0301 (0x65) before the jamo (0xE1).
  CHECK(matched->label(0) == 2);
  CHECK(matched->label(1) == 1);
}
