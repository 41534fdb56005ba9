#include "helpers.h"

#include <alexnet/data.h>

#include <catch2/catch.hpp>
#include <torch/data/dataloader.h>

#include <filesystem>
#include <numeric>
#include <set>
#include <fstream>

using namespace alexnet::data;
namespace fs = std::filesystem;

using alexnet::test::message_of;

namespace {

// A w x h RGB image whose pixels encode position and a tag: R = x, G = y, B = tag.
Image coordinates(int64_t w, int64_t h, uint8_t tag) {
  Image image;
  image.height = h;
  image.width = w;
  image.channels = 3;
  image.pixels.resize(static_cast<size_t>(w * h * 3));
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      uint8_t* p = image.pixels.data() + (y * w + x) * 3;
      p[0] = uint8_t(x), p[1] = uint8_t(y), p[2] = tag;
    }
  }
  return image;
}

// root/<class>/<n>.png with coordinate images tagged by class and index.
std::string make_folder(const std::string& name, const std::vector<std::string>& classes, int per_class,
                        int64_t side = 40) {
  const auto root = alexnet::test::temp_dir(name);
  for (size_t c = 0; c < classes.size(); ++c) {
    fs::create_directories(root + "/" + classes[c]);
    for (int i = 0; i < per_class; ++i) {
      write_image(coordinates(side, side, uint8_t(10 * c + i)), root + "/" + classes[c] + "/" + std::to_string(i) + ".png");
    }
  }
  return root;
}

Statistics fake_stats() {
  Statistics s;
  s.mean_rgb = torch::tensor({100.0, 110.0, 120.0}, torch::kDouble);
  s.eigenvalues = torch::tensor({5000.0, 800.0, 50.0}, torch::kDouble);
  s.eigenvectors = torch::tensor({{0.6, 0.6, 0.52915}, {-0.7, 0.1, 0.70711}, {0.3873, -0.7937, 0.4690}}, torch::kDouble);
  s.images = 1;
  return s;
}

}  // namespace

TEST_CASE("Image folders: sorted classes, labels in order, names from a file", "[data]") {
  const auto root = make_folder("folder", {"zebra", "apple", "mango"}, 2);
  std::ofstream(root + "/notes.txt") << "not a class\n";
  const auto source = open_image_folder(root);
  REQUIRE(source->size() == 6);
  CHECK(source->classes() == std::vector<std::string>{"apple", "mango", "zebra"});
  CHECK(source->label(0) == 0);
  CHECK(source->label(5) == 2);
  CHECK(source->describe(0) == root + "/apple/0.png");
  const auto image = source->image(0, 40);
  CHECK(image.at(0, 0)[2] == 10);  // apple was written as class 1 (tag 10 + i)

  std::ofstream(root + "/names.txt") << "Apple\nMango\nZebra\n";
  CHECK(open_image_folder(root, ReadOptions().class_names(root + "/names.txt"))->classes()[2] == "Zebra");
  std::ofstream(root + "/two.txt") << "Apple\nMango\n";
  CHECK(message_of([&] { open_image_folder(root, ReadOptions().class_names(root + "/two.txt")); }) ==
        "class names '" + root + "/two.txt': 2 names for 3 classes");
  fs::create_directories(root + "/empty");
  CHECK(message_of([&] { open_image_folder(root); }) == "image folder '" + root + "': class folder 'empty' has no images");
  CHECK(message_of([&] { open_image_folder(root + "/nowhere"); }) == "image folder '" + root + "/nowhere': does not exist");
  fs::remove_all(root);
}

TEST_CASE("List files: paths relative to the list, labels checked, bad lines named", "[data]") {
  const auto root = make_folder("list", {"a", "b"}, 1);
  std::ofstream(root + "/train.txt") << "a/0.png 3\n\nb/0.png 1\n";
  auto source = open_image_list(root + "/train.txt");
  REQUIRE(source->size() == 2);
  CHECK(source->label(0) == 3);
  CHECK(source->classes().size() == 4);
  CHECK(source->image(1, 40).at(0, 0)[2] == 10);
  std::ofstream(root + "/names.txt") << "w\nx\ny\nz\n";
  CHECK(open_image_list(root + "/train.txt", ReadOptions().class_names(root + "/names.txt"))->classes()[3] == "z");
  std::ofstream(root + "/three.txt") << "w\nx\ny\n";
  CHECK(message_of([&] { open_image_list(root + "/train.txt", ReadOptions().class_names(root + "/three.txt")); }) ==
        "list '" + root + "/train.txt': label 3 of '" + root + "/a/0.png' is out of range for the 3 classes in '" +
            root + "/three.txt'");
  std::ofstream(root + "/bad.txt") << "a/0.png 1\nb/0.png one\n";
  CHECK(message_of([&] { open_image_list(root + "/bad.txt"); }) ==
        "list '" + root + "/bad.txt' line 2: expected 'path label', got 'b/0.png one'");
  std::ofstream(root + "/negative.txt") << "a/0.png -2\n";
  CHECK(message_of([&] { open_image_list(root + "/negative.txt"); }) ==
        "list '" + root + "/negative.txt' line 1: label -2 is negative");
  // Found by fuzz/lists.cpp: a huge label sized the class list (2^61 names), with or
  // without a class-names file.
  std::ofstream(root + "/huge.txt") << "a/0.png 1\nb/0.png 2222222222222222221\n";
  for (const auto* names : {"", "names.txt"}) {
    const auto options = ReadOptions().class_names(*names ? root + "/" + names : "");
    CHECK(message_of([&] { open_image_list(root + "/huge.txt", options); }) ==
          "list '" + root + "/huge.txt' line 2: label 2222222222222222221 is above 1048575 (more classes than any "
          "data set; is the last field the label?)");
  }
  CHECK(message_of([&] { open_source(root + "/missing.txt"); }) == "data '" + root + "/missing.txt': does not exist");
  fs::remove_all(root);
}

TEST_CASE("Training transforms are reproducible, and independent of the workers", "[data]") {
  const auto root = make_folder("repro", {"a", "b", "c"}, 4, 48);
  const auto source = open_image_folder(root);
  const auto options = TransformOptions().resize(48).crop(40).seed(7);
  auto collect = [&](size_t workers, int64_t epoch) {
    ImageDataset dataset(source, options, fake_stats());
    dataset.set_epoch(epoch);
    EpochSampler sampler(source->size(), 7);
    sampler.set_epoch(epoch);
    auto loader = torch::data::make_data_loader(dataset, sampler, torch::data::DataLoaderOptions(5).workers(workers));
    std::vector<torch::Tensor> images, colours, labels;
    for (auto& batch : *loader) {
      images.push_back(batch.images);
      colours.push_back(batch.colour);
      labels.push_back(batch.labels);
    }
    return std::vector<torch::Tensor>{torch::cat(images), torch::cat(colours), torch::cat(labels)};
  };
  const auto serial = collect(0, 1);
  const auto parallel = collect(3, 1);
  for (size_t i = 0; i < serial.size(); ++i) CHECK(torch::equal(serial[i], parallel[i]));
  const auto next_epoch = collect(0, 2);
  CHECK(!torch::equal(serial[0], next_epoch[0]));
  CHECK(!torch::equal(serial[2], next_epoch[2]));  // another order
  CHECK(serial[0].sizes() == torch::IntArrayRef({12, 3, 40, 40}));
  fs::remove_all(root);
}

TEST_CASE("Crops, reflections and ten-crop positions", "[data]") {
  const auto root = make_folder("crops", {"a"}, 1, 32);
  const auto source = open_image_folder(root);
  // R = x and G = y of the 32x32 image tell where each crop came from.
  auto corner = [](const torch::Tensor& crop) {
    return std::make_pair(crop[0][0][0].item<int>(), crop[1][0][0].item<int>());
  };
  ImageDataset centre(source, TransformOptions().resize(32).crop(24).mode(Mode::kCenter));
  const auto c = centre.get_batch({0}).images[0];
  CHECK(corner(c) == std::make_pair(4, 4));
  ImageDataset ten(source, TransformOptions().resize(32).crop(24).mode(Mode::kTenCrop));
  const auto batch = ten.get_batch({0});
  REQUIRE(batch.images.size(0) == 10);
  const std::vector<std::pair<int, int>> expected{{0, 0}, {8, 0}, {0, 8}, {8, 8}, {4, 4}};
  for (int v = 0; v < 5; ++v) {
    CHECK(corner(batch.images[v]) == expected[v]);
    // The reflection: the same crop, columns reversed.
    CHECK(torch::equal(batch.images[v + 5], batch.images[v].flip({2})));
  }
  // Training crops stay inside the image and reflect about half the time.
  ImageDataset train(source, TransformOptions().resize(32).crop(24).pca_std(0));
  int flipped = 0;
  for (int epoch = 0; epoch < 200; ++epoch) {
    train.set_epoch(epoch);
    const auto crop = train.get_batch({0}).images[0];
    const int left = crop[0][0][0].item<int>(), right = crop[0][0][23].item<int>();
    const int top = crop[1][0][0].item<int>();
    CHECK(std::abs(right - left) == 23);
    CHECK((std::min(left, right) >= 0 && std::max(left, right) <= 31 && top >= 0 && top <= 8));
    flipped += left > right;
  }
  CHECK((flipped > 70 && flipped < 130));
  fs::remove_all(root);
}

TEST_CASE("PCA colour noise has the paper's covariance", "[data]") {
  const auto root = make_folder("pca", {"a"}, 1, 8);
  const auto stats = fake_stats();
  ImageDataset train(open_image_folder(root), TransformOptions().resize(8).crop(8).pca_std(0.1), stats);
  const int draws = 20000;
  std::vector<torch::Tensor> offsets;
  for (int epoch = 0; epoch < draws; ++epoch) {
    train.set_epoch(epoch);
    offsets.push_back(train.get_batch({0}).colour[0].to(torch::kDouble));
  }
  const auto x = torch::stack(offsets);
  const auto centred = x - x.mean(0);
  const auto covariance = centred.t().mm(centred) / (draws - 1);
  // Cov = sum_i (0.1 lambda_i / 255)^2 p_i p_i^T, with p_i the rows of the eigenvectors.
  const auto p = stats.eigenvectors;
  const auto scale = (0.1 * stats.eigenvalues / 255.0).pow(2);
  const auto expected = p.t().mm(torch::diag(scale)).mm(p);
  CHECK(alexnet::test::relative_error(covariance, expected) < 0.05);
  CHECK(x.mean(0).abs().max().item<double>() < 0.05);
  fs::remove_all(root);
}

// Per image and per use (Section 4.1): within one batch every image draws its own
// alphas, with the paper's covariance across the batch and none between neighbours.
TEST_CASE("PCA colour noise is drawn afresh for each image of a batch", "[data]") {
  const int n = 2000;
  const auto root = make_folder("pca-batch", {"a"}, n, 8);
  const auto stats = fake_stats();
  ImageDataset train(open_image_folder(root), TransformOptions().resize(8).crop(8).pca_std(0.1), stats);
  train.set_epoch(3);
  std::vector<size_t> all(n);
  std::iota(all.begin(), all.end(), size_t(0));
  const auto x = train.get_batch(all).colour.to(torch::kDouble);
  const auto centred = x - x.mean(0);
  const auto covariance = centred.t().mm(centred) / (n - 1);
  const auto p = stats.eigenvectors;
  const auto expected = p.t().mm(torch::diag((0.1 * stats.eigenvalues / 255.0).pow(2))).mm(p);
  CHECK(alexnet::test::relative_error(covariance, expected) < 0.1);
  const auto a = centred.narrow(0, 0, n - 1), b = centred.narrow(0, 1, n - 1);
  const auto between = a.t().mm(b) / (n - 2);
  CHECK(between.norm().item<double>() < 0.1 * expected.norm().item<double>());
  fs::remove_all(root);
}

TEST_CASE("Statistics match a direct computation", "[data]") {
  const auto root = make_folder("stats", {"a", "b"}, 3, 16);
  const auto source = open_image_folder(root);
  const auto stats = compute_statistics(*source, 16, 2);
  std::vector<torch::Tensor> images;
  for (size_t i = 0; i < source->size(); ++i) {
    auto image = source->image(i, 16);
    images.push_back(torch::from_blob(image.pixels.data(), {16, 16, 3}, torch::kUInt8).to(torch::kDouble));
  }
  const auto all = torch::stack(images);  // [N, 16, 16, 3]
  CHECK(stats.images == 6);
  CHECK(alexnet::test::relative_error(stats.mean_image, all.mean(0).permute({2, 0, 1})) < 1e-12);
  const auto pixels = all.reshape({-1, 3});
  CHECK(alexnet::test::relative_error(stats.mean_rgb, pixels.mean(0)) < 1e-12);
  const auto centred = pixels - pixels.mean(0);
  const auto covariance = centred.t().mm(centred) / pixels.size(0);
  // Each row is an eigenvector: C p = lambda p.
  for (int i = 0; i < 3; ++i) {
    const auto p = stats.eigenvectors[i];
    CHECK(alexnet::test::relative_error(covariance.mv(p), stats.eigenvalues[i] * p) < 1e-9);
  }
  CHECK(stats.eigenvalues[0].item<double>() >= stats.eigenvalues[1].item<double>());
  CHECK(stats.eigenvalues[1].item<double>() >= stats.eigenvalues[2].item<double>());

  const auto path = root + "/stats.pt";
  stats.save(path);
  const auto loaded = Statistics::load(path);
  CHECK(torch::equal(loaded.eigenvectors, stats.eigenvectors));
  CHECK_THAT(stats.to_json(), Catch::StartsWith("{\"images\":6,\"mean_rgb\":[") && Catch::Contains("\"eigenvectors\":[["));
  CHECK(message_of([&] { Statistics::load(root + "/a/0.png"); }) ==
        "statistics '" + root + "/a/0.png': not a readable statistics file (alexnet stats writes them)");
  fs::remove_all(root);
}

TEST_CASE("Packed sets give the same tensors as the folder, and resume after interruption", "[data]") {
  const auto root = make_folder("packed", {"a", "b", "c"}, 3, 40);
  const auto folder = open_image_folder(root);
  const auto packed_dir = root + "-packed";
  const auto result = prepare_packed(*folder, packed_dir, 40, 2);
  CHECK(result.records == 9);
  const auto packed = open_source(packed_dir);
  REQUIRE(packed->size() == 9);
  CHECK(packed->classes() == folder->classes());
  const auto options = TransformOptions().resize(40).crop(32).seed(3);
  ImageDataset a(folder, options, fake_stats()), b(packed, options, fake_stats());
  const std::vector<size_t> all{0, 1, 2, 3, 4, 5, 6, 7, 8};
  const auto from_folder = a.get_batch(all), from_packed = b.get_batch(all);
  CHECK(torch::equal(from_folder.images, from_packed.images));
  CHECK(torch::equal(from_folder.labels, from_packed.labels));
  CHECK(torch::equal(from_folder.colour, from_packed.colour));

  // Small shards, then an interruption: the last shard and meta.txt gone, one shard corrupt.
  PackedLayout layout;
  layout.height = layout.width = 40;
  layout.records_per_shard = 2;
  auto produce = [&](size_t i) { return std::optional(std::make_pair(folder->image(i, 40), folder->label(i))); };
  const auto dir = root + "-shards";
  CHECK(write_packed(dir, 9, layout, folder->classes(), produce).shards == 5);
  verify_packed(dir);
  fs::remove(dir + "/meta.txt");
  fs::remove(dir + "/shard-00004.bin");
  {
    std::fstream f(dir + "/shard-00001.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
  }
  CHECK_THAT(message_of([&] { open_packed(dir); }), Catch::StartsWith("packed set '" + dir + "': no meta.txt"));
  const auto resumed = write_packed(dir, 9, layout, folder->classes(), produce);
  CHECK(resumed.shards_kept == 3);
  CHECK(resumed.records == 9);
  verify_packed(dir);
  CHECK(torch::equal(ImageDataset(open_packed(dir), options, fake_stats()).get_batch(all).images, from_folder.images));
  // A truncated shard is refused by name.
  fs::resize_file(dir + "/shard-00002.bin", 1000);
  CHECK(message_of([&] { open_packed(dir); }) ==
        "packed shard '" + dir + "/shard-00002.bin': incomplete (size or end marker wrong)");
  fs::remove_all(root);
  fs::remove_all(packed_dir);
  fs::remove_all(dir);
}

TEST_CASE("Bad images stop the pipeline by default, or are skipped and counted", "[data]") {
  const auto root = make_folder("skip", {"a"}, 3, 24);
  std::ofstream(root + "/a/1.png", std::ios::trunc) << "garbage";
  const auto source = open_image_folder(root);
  ImageDataset strict(source, TransformOptions().resize(24).crop(24).mode(Mode::kCenter));
  CHECK_THAT(message_of([&] { strict.get_batch({0, 1, 2}); }), Catch::StartsWith("image '" + root + "/a/1.png': not a decodable image"));
  ImageDataset lenient(source, TransformOptions().resize(24).crop(24).mode(Mode::kCenter).on_error(OnError::kSkip));
  const auto batch = lenient.get_batch({0, 1, 2});
  CHECK(batch.skipped == 1);
  CHECK(batch.images.size(0) == 2);
  CHECK(batch.indices == std::vector<size_t>{0, 2});
  int64_t skipped = 0;
  CHECK(compute_statistics(*source, 24, 1, OnError::kSkip, &skipped).images == 2);
  CHECK(skipped == 1);
  CHECK(prepare_packed(*source, root + "-packed", 24, 1, OnError::kSkip).skipped == 1);
  CHECK(open_packed(root + "-packed")->size() == 2);
  fs::remove_all(root);
  fs::remove_all(root + "-packed");
}

TEST_CASE("normalize subtracts the channel means and adds the colour noise", "[data]") {
  Batch batch;
  batch.images = torch::full({2, 3, 4, 4}, 150, torch::kUInt8);
  batch.colour = torch::tensor({{1.f, 2.f, 3.f}, {0.f, 0.f, 0.f}});
  const auto x = normalize(batch, fake_stats(), torch::kCPU);
  CHECK(x.dtype() == torch::kFloat);
  CHECK(x[0][0][1][1].item<float>() == Approx(51.0));
  CHECK(x[0][2][0][0].item<float>() == Approx(33.0));
  CHECK(x[1][1][3][3].item<float>() == Approx(40.0));
}

TEST_CASE("The epoch sampler shards a seeded permutation disjointly", "[data]") {
  EpochSampler single(10, 5);
  single.set_epoch(4);
  const auto order = *single.next(10);
  // Three ranks: equal shards of 10 / 3 = 3 examples, rank r taking positions r, r + 3,
  // r + 6 of the same permutation, so that their step s together is the single
  // process's step s at three times the batch; the tenth is left out this epoch.
  std::set<size_t> seen;
  for (size_t rank = 0; rank < 3; ++rank) {
    EpochSampler sampler(10, 5, true, rank, 3);
    sampler.set_epoch(4);
    CHECK(sampler.shard_size() == 3);
    std::vector<size_t> shard;
    while (auto batch = sampler.next(2)) shard.insert(shard.end(), batch->begin(), batch->end());
    CHECK(shard == std::vector<size_t>{order[rank], order[rank + 3], order[rank + 6]});
    seen.insert(shard.begin(), shard.end());
  }
  CHECK(seen.size() == 9);
  EpochSampler in_order(5, 5, false);
  CHECK(*in_order.next(5) == std::vector<size_t>{0, 1, 2, 3, 4});
  CHECK(message_of([] { EpochSampler(5, 1, true, 3, 3); }) == "sampler: rank 3 is not in a world of 3");
}

TEST_CASE("Fashion-MNIST imports from Debian's files with its class names", "[data][fashion]") {
  if (!fs::exists(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte.gz")) {
    alexnet::test::skip(std::string("no Fashion-MNIST in ") + kFashionMnistDir + " (install dataset-fashion-mnist)");
    return;
  }
  const auto out = alexnet::test::temp_dir("fashion");
  const auto [train, test] = import_fashion_mnist(kFashionMnistDir, out);
  CHECK(train.records == 60000);
  CHECK(test.records == 10000);
  const auto source = open_source(out + "/train");
  CHECK(source->classes() == fashion_mnist_classes());
  CHECK(source->classes()[9] == "Ankle boot");
  CHECK(source->label(0) == 9);  // the first training image is an ankle boot
  std::vector<int> counts(10, 0);
  for (size_t i = 0; i < source->size(); ++i) ++counts[static_cast<size_t>(source->label(i))];
  CHECK(counts == std::vector<int>(10, 6000));
  // Stored at 28x28 gray; the pipeline makes RGB at any size.
  const auto image = source->image(0, 28);
  CHECK((image.height == 28 && image.channels == 1));
  ImageDataset dataset(source, TransformOptions().resize(36).crop(32).mode(Mode::kCenter));
  const auto batch = dataset.get_batch({0, 1});
  CHECK(batch.images.sizes() == torch::IntArrayRef({2, 3, 32, 32}));
  CHECK(torch::equal(batch.images.select(1, 0), batch.images.select(1, 2)));
  fs::remove_all(out);
}

TEST_CASE("Malformed IDX files are refused with the reason", "[data]") {
  const auto dir = alexnet::test::temp_dir("idx");
  auto write = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                           static_cast<std::streamsize>(bytes.size()));
  };
  write("train-images-idx3-ubyte", {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8});
  write("train-labels-idx1-ubyte", {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3});
  CHECK(message_of([&] { import_fashion_mnist(dir, dir + "/out"); }) ==
        "Fashion-MNIST: 2 images in '" + dir + "/train-images-idx3-ubyte' but 3 labels in '" + dir +
            "/train-labels-idx1-ubyte'");
  write("short", {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3});
  CHECK(message_of([&] { read_idx(dir + "/short"); }) ==
        "IDX file '" + dir + "/short': short file (3 data bytes, the header promises 8)");
  write("magic", {1, 2, 8, 1, 0, 0, 0, 1, 0});
  CHECK(message_of([&] { read_idx(dir + "/magic"); }) == "IDX file '" + dir + "/magic': wrong magic number (not an IDX file)");
  CHECK(message_of([&] { import_fashion_mnist(dir + "/none", dir + "/out"); }) ==
        "Fashion-MNIST: no train-images-idx3-ubyte[.gz] in '" + dir +
            "/none' (Debian's dataset-fashion-mnist installs them in /usr/share/datasets/fashion-mnist)");
  fs::remove_all(dir);
}
