// PyTorch's files both ways, against Debian's python3-torch / python3-torchvision
// (the same LibTorch 1.13): tests/pytorch_reference.py writes and checks the Python side.

#include "helpers.h"

#include <alexnet/network/checkpoint.h>
#include <alexnet/network/pytorch.h>

#include <caffe2/serialize/inline_container.h>
#include <catch2/catch.hpp>
#include <torch/nn/functional/loss.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>

using namespace alexnet;
using alexnet::test::message_of;
using alexnet::test::relative_error;
namespace fs = std::filesystem;

namespace {

// Python's torch, torchvision and skimage, or the test is skipped with the reason.
bool python_torch() { return test::python_has("torch, torchvision, skimage"); }

void python(const std::string& args) { test::python_reference(args); }

// Bytes from a literal that may hold NULs.
template <size_t N>
std::string bytes(const char (&literal)[N]) {
  return std::string(literal, N - 1);
}

std::map<std::string, torch::Tensor> as_map(const StateDict& state) { return {state.begin(), state.end()}; }

void write_bytes(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A zip archive as torch.save writes it, holding `pickle` as data.pkl.
void write_zip(const std::string& path, const std::string& pickle) {
  caffe2::serialize::PyTorchStreamWriter writer(path);
  writer.writeRecord("data.pkl", pickle.data(), pickle.size());
  writer.writeEndOfFile();
}

AlexNet torchvision_model(int64_t classes = 1000) {
  torch::manual_seed(3);
  AlexNet model(AlexNetOptions::torchvision().num_classes(classes).init(Init::kPyTorch));
  model->eval();
  return model;
}

}  // namespace

TEST_CASE("state dicts round-trip through the zip format bit for bit", "[pytorch]") {
  const auto dir = test::temp_dir("pytorch-roundtrip");
  for (const auto* name : {"torchvision", "paper"}) {
    torch::manual_seed(4);
    AlexNet model(preset(name).num_classes(10));
    const auto state = to_state_dict(*model);
    write_state_dict(state, dir + "/a.pth");
    const auto back = read_state_dict(dir + "/a.pth");
    REQUIRE(back.size() == state.size());
    for (size_t i = 0; i < state.size(); ++i) {
      CHECK(back[i].first == state[i].first);
      CHECK(torch::equal(back[i].second, state[i].second));
    }
    AlexNet other(preset(name).num_classes(10));
    load_state_dict(*other, back, "a.pth");
    model->eval();
    other->eval();
    const auto x = torch::randn({2, 3, model->options.input_size(), model->options.input_size()});
    CHECK(torch::equal(model->forward(x), other->forward(x)));
  }
}

TEST_CASE("the grouped layout stacks the towers along the output dimension", "[pytorch]") {
  AlexNet model(AlexNetOptions::paper().num_classes(10));
  const auto state = as_map(to_state_dict(*model));
  CHECK(state.size() == 16);
  CHECK(state.at("conv1.weight").sizes() == torch::IntArrayRef({96, 3, 11, 11}));
  CHECK(state.at("conv2.weight").sizes() == torch::IntArrayRef({256, 48, 5, 5}));
  CHECK(state.at("conv3.weight").sizes() == torch::IntArrayRef({384, 256, 3, 3}));
  CHECK(state.at("fc6.weight").sizes() == torch::IntArrayRef({4096, 9216}));
  CHECK(state.at("fc8.weight").sizes() == torch::IntArrayRef({10, 4096}));
  CHECK(torch::equal(state.at("conv2.weight").narrow(0, 128, 128), model->tower1->conv2->weight));
  CHECK(torch::equal(state.at("fc8.bias").narrow(0, 0, 5), model->tower0->fc8->bias));
}

TEST_CASE("bad state dicts are refused by name, leaving the model unchanged", "[pytorch]") {
  auto model = torchvision_model();
  const auto before = model->features[0]->as<torch::nn::Conv2d>()->weight.clone();
  auto state = to_state_dict(*model);
  auto fresh = [] { return torchvision_model(); };

  auto missing = state;
  missing.erase(missing.begin() + 1);
  CHECK(message_of([&] { load_state_dict(*fresh(), missing, "m.pth"); }) == "'m.pth': missing key 'features.0.bias'");

  auto extra = state;
  extra.emplace_back("classifier.7.weight", torch::zeros({2}));
  CHECK(message_of([&] { load_state_dict(*fresh(), extra, "e.pth"); }) ==
        "'e.pth': unexpected key 'classifier.7.weight' (not in the torchvision network)");

  auto wrong = state;
  wrong[2].second = torch::zeros({192, 64, 3, 3});
  wrong[0].second = torch::zeros_like(wrong[0].second);
  CHECK(message_of([&] { load_state_dict(*model, wrong, "w.pth"); }) ==
        "'w.pth': key 'features.3.weight' has shape [192, 64, 3, 3], the model needs [192, 64, 5, 5]");
  CHECK(torch::equal(model->features[0]->as<torch::nn::Conv2d>()->weight, before));

  auto integers = state;
  integers[1].second = torch::zeros({64}, torch::kLong);
  CHECK(message_of([&] { load_state_dict(*fresh(), integers, "i.pth"); }) ==
        "'i.pth': key 'features.0.bias' holds Long, not floating point");

  AlexNet paper(AlexNetOptions::paper());
  CHECK(message_of([&] { from_torchvision(to_state_dict(*paper), "p.pth"); }) ==
        "'p.pth': missing key 'classifier.6.weight' (not torchvision's AlexNet: its first key is 'conv1.weight')");
}

TEST_CASE("files that are not state dicts are refused with the reason", "[pytorch]") {
  const auto dir = test::temp_dir("pytorch-bad");
  auto reason = [&](const std::string& name, const std::string& bytes) {
    write_bytes(dir + "/" + name, bytes);
    return message_of([&] { read_state_dict(dir + "/" + name); });
  };
  CHECK(message_of([&] { read_state_dict(dir + "/none.pth"); }) == "'" + dir + "/none.pth': cannot open the file");
  CHECK(reason("empty.pth", "") == "'" + dir + "/empty.pth': the file is empty");
  CHECK(reason("text.pth", "hello\n") ==
        "'" + dir + "/text.pth': not a PyTorch file (neither a zip archive nor a pickle)");

  // A pickle is a program: one that calls os.system must never run, nor load.
  const auto evil = bytes("\x80\x02" "cos\nsystem\n" "X\x02\x00\x00\x00ls" "\x85R.");
  const std::string refused = "refusing the Python global 'os.system': a state dict or checkpoint needs only tensors, "
                              "dicts and storages, and a pickle that names anything else is not loaded";
  CHECK(reason("evil-legacy.pth", evil) == "'" + dir + "/evil-legacy.pth': " + refused);
  write_zip(dir + "/evil.pth", evil);
  CHECK(message_of([&] { read_state_dict(dir + "/evil.pth"); }) == "'" + dir + "/evil.pth': " + refused);
  write_zip(dir + "/eval.pth", bytes("\x80\x02" "c__builtin__\neval\n."));
  CHECK_THAT(message_of([&] { read_state_dict(dir + "/eval.pth"); }),
             Catch::Contains("refusing the Python global '__builtin__.eval'"));
  // A plain pickle of a dict, without PyTorch's magic number.
  CHECK(reason("plain.pth", bytes("\x80\x02}q\x00.")) ==
        "'" + dir + "/plain.pth': a pickle, but not one torch.save wrote (no PyTorch magic number)");
  write_zip(dir + "/list.pth", bytes("\x80\x02]q\x00."));
  CHECK(message_of([&] { read_state_dict(dir + "/list.pth"); }) ==
        "'" + dir + "/list.pth': holds a list of 0, not a state dict");

  // Truncation: a zip without its directory, a pickle cut short.
  AlexNet model(AlexNetOptions::torchvision().num_classes(4));
  write_state_dict(to_state_dict(*model), dir + "/good.pth");
  const auto good = read_bytes(dir + "/good.pth");
  CHECK(reason("cut.pth", good.substr(0, good.size() / 2)) ==
        "'" + dir + "/cut.pth': a damaged or truncated zip archive (no end-of-directory record)");
  // One pixel's byte changed in the middle of a storage: its record's CRC-32 says so.
  auto flipped = good;
  flipped[flipped.size() / 2] ^= 0x20;
  CHECK_THAT(reason("flipped.pth", flipped),
             Catch::StartsWith("'" + dir + "/flipped.pth': a damaged or truncated zip archive (entry '") &&
                 Catch::EndsWith("' fails its CRC-32 check)"));
  write_zip(dir + "/short.pth", bytes("\x80\x02}q\x00(X\x05\x00\x00\x00" "abc"));
  CHECK(message_of([&] { read_state_dict(dir + "/short.pth"); }) ==
        "'" + dir + "/short.pth': the file is truncated (pickle data ends early)");
}

TEST_CASE("torchvision's weights saved by Python give Python's logits here", "[pytorch][parity]") {
  if (!python_torch()) return;
  const auto dir = test::temp_dir("pytorch-parity");
  python("make " + dir + " zip legacy half wrapped views");
  const auto io = as_map(read_state_dict(dir + "/io.pth"));
  for (const auto* file : {"tv-zip", "tv-legacy", "tv-half", "tv-wrapped", "tv-views"}) {
    INFO(file);
    const auto state = read_state_dict(dir + "/" + file + ".pth");
    CHECK(state.front().first == "features.0.weight");
    CHECK(state.front().second.scalar_type() == (std::string(file) == "tv-half" ? torch::kHalf : torch::kFloat));
    auto model = from_torchvision(state, file);
    model->eval();
    const auto& expected = io.at(std::string(file) == "tv-half" ? "logits_half" : "logits");
    const auto error = relative_error(model->forward(io.at("input")), expected);
    WARN(file << ": logits relative error " << error);
    CHECK(error == 0);  // bitwise, as the README says: the same LibTorch, the same kernels
  }
  // The views file shares one storage among all its tensors, some non-contiguous.
  const auto views = as_map(read_state_dict(dir + "/tv-views.pth"));
  CHECK_FALSE(views.at("features.0.weight").is_contiguous());
  CHECK(views.at("features.0.weight").storage().is_alias_of(views.at("classifier.6.bias").storage()));

  // A legacy file cut short.
  const auto legacy = read_bytes(dir + "/tv-legacy.pth");
  write_bytes(dir + "/cut.pth", legacy.substr(0, legacy.size() - 1000));
  CHECK_THAT(message_of([&] { read_state_dict(dir + "/cut.pth"); }),
             Catch::StartsWith("'" + dir + "/cut.pth': the file is truncated (storage '"));
}

TEST_CASE("an exported torchvision model loads into torchvision (strict) and gives our logits", "[pytorch][parity]") {
  if (!python_torch()) return;
  const auto dir = test::temp_dir("pytorch-export");
  auto model = torchvision_model();
  torch::manual_seed(5);
  const auto x = torch::randn({2, 3, 224, 224});
  write_state_dict(to_state_dict(*model), dir + "/ours.pth");
  write_state_dict({{"input", x}, {"logits", model->forward(x)}}, dir + "/io.pth");
  python("check-torchvision " + dir + "/ours.pth " + dir + "/io.pth");
}

namespace {

// One forward and backward pass of `model` on (x, labels), for check-grouped: the state
// dict to PATH.pth; the input, labels, logits and every parameter's gradient (grad.KEY, the
// state dict's layout) to PATH-io.pth.
void write_grouped_case(AlexNetImpl& model, const torch::Tensor& x, const torch::Tensor& labels,
                        const std::string& path) {
  const auto logits = model.forward(x);
  torch::nn::functional::cross_entropy(logits, labels).backward();
  // The gradients in the same layout: a copy of the model holding them as weights.
  auto grads = std::dynamic_pointer_cast<AlexNetImpl>(model.clone());
  {
    torch::NoGradGuard no_grad;
    auto from = model.parameters();
    auto to = grads->parameters();
    for (size_t i = 0; i < from.size(); ++i) to[i].copy_(from[i].grad());
  }
  StateDict io{{"input", x}, {"labels", labels}, {"logits", logits.detach()}};
  for (const auto& [key, tensor] : to_state_dict(*grads)) io.emplace_back("grad." + key, tensor);
  write_state_dict(to_state_dict(model), path + ".pth");
  write_state_dict(io, path + "-io.pth");
}

}  // namespace

TEST_CASE("the paper and Caffe presets equal a grouped PyTorch module: logits and gradients", "[pytorch][parity]") {
  if (!python_torch()) return;
  const auto dir = test::temp_dir("pytorch-grouped");
  for (const auto* name : {"paper", "caffe"}) {
    INFO(name);
    torch::manual_seed(6);
    // Caffe's preset at a small input and 10 classes: the module reads both from the shapes.
    const bool paper = std::string(name) == "paper";
    AlexNet model(preset(name, paper ? 227 : 99).num_classes(paper ? 1000 : 10).init(Init::kPyTorch));
    model->eval();  // dropout off: the same function on both sides
    const auto size = model->options.input_size();
    const auto x = torch::randn({3, 3, size, size});
    const auto labels = torch::tensor({0, 5, 7}, torch::kLong);
    const auto path = dir + "/" + name;
    write_grouped_case(*model, x, labels, path);
    python("check-grouped " + path + ".pth " + path + "-io.pth " + name);
  }
}

// Sections 3.1-3.4's alternatives, each against the PyTorch module built the same way.
TEST_CASE("the paper's alternatives equal the grouped PyTorch module built alike", "[pytorch][parity]") {
  if (!python_torch()) return;
  const auto dir = test::temp_dir("pytorch-alternatives");
  struct Alternative {
    const char* name;
    AlexNetOptions options;
    const char* args;  // check-grouped's LRN, activation, pooling
  };
  const auto base = AlexNetOptions::paper().input_size(99).num_classes(10).init(Init::kPyTorch);
  const std::vector<Alternative> alternatives{
      {"tanh", AlexNetOptions(base).activation(Activation::kTanh), "paper tanh 3,2"},
      {"pool-2-2", AlexNetOptions(base).pool_size(2).pool_stride(2), "paper relu 2,2"},
      {"one-tower", AlexNetOptions(base).architecture(Architecture::kOneTower), "paper relu 3,2"},
      {"no-lrn", AlexNetOptions(base).lrn(c10::nullopt), "none relu 3,2"}};
  for (const auto& a : alternatives) {
    INFO(a.name);
    torch::manual_seed(8);
    AlexNet model(a.options);
    model->eval();
    const auto x = torch::randn({2, 3, 99, 99}) * 40;
    const auto labels = torch::tensor({1, 7}, torch::kLong);
    const auto path = dir + "/" + a.name;
    write_grouped_case(*model, x, labels, path);
    python("check-grouped " + path + ".pth " + path + "-io.pth " + a.args);
  }
}

#ifdef ALEXNET_CLI
TEST_CASE("convert, classify --json and export on the command line agree with torchvision", "[pytorch][parity][cli]") {
  if (!python_torch()) return;
  const auto dir = test::temp_dir("pytorch-cli");
  const std::string cli = ALEXNET_CLI;
  python("make " + dir + " zip photo");
  std::string out;
  auto sh = [&](const std::string& args) { return test::run(cli + " " + args, out, true); };
  REQUIRE(sh("convert --from torchvision " + dir + "/tv-zip.pth --out " + dir + "/tv.pt --class-names " + dir +
             "/classes.txt") == 0);
  // The checkpoint carries torchvision's preprocessing: no flags to remember.
  REQUIRE(test::run(cli + " classify --precision fp32 --weights " + dir + "/tv.pt --top 1000 --json " + dir + "/photo.png > " + dir +
                    "/classify.json", out) == 0);
  python("check-classify " + dir + "/classify.json " + dir + "/probs.pth");
  CHECK_THAT(read_bytes(dir + "/classify.json"), Catch::Contains("\"label\":\"class "));

  REQUIRE(sh("export --weights " + dir + "/tv.pt --format torchvision --out " + dir + "/back.pth") == 0);
  const auto original = read_state_dict(dir + "/tv-zip.pth");
  const auto back = read_state_dict(dir + "/back.pth");
  REQUIRE(back.size() == original.size());
  for (size_t i = 0; i < back.size(); ++i) CHECK(torch::equal(back[i].second, original[i].second));

  // Bad input: one line naming the file or value, non-zero exit, nothing overwritten.
  const auto before = read_bytes(dir + "/tv.pt");
  CHECK(sh("convert " + dir + "/tv-zip.pth --out " + dir + "/tv.pt") != 0);
  CHECK_THAT(out, Catch::Contains("'" + dir + "/tv.pt' exists; --overwrite to replace it"));
  CHECK(read_bytes(dir + "/tv.pt") == before);
  write_bytes(dir + "/three.txt", "a\nb\nc\n");
  CHECK(sh("convert " + dir + "/tv-zip.pth --out " + dir + "/x.pt --classes " + dir + "/three.txt") != 0);
  CHECK_THAT(out, Catch::Contains("3 class names for the 1000 outputs of '" + dir + "/tv-zip.pth'"));
  CHECK_FALSE(fs::exists(dir + "/x.pt"));
  CHECK(sh("convert " + dir + "/classes.txt --out " + dir + "/x.pt") != 0);
  CHECK_THAT(out, Catch::Contains("classes.txt': not a PyTorch file"));
  CHECK(sh("export --weights " + dir + "/tv.pt --format grouped --out " + dir + "/g.pth") != 0);
  CHECK_THAT(out, Catch::Contains("holds the torchvision network; export it with --format torchvision"));
  CHECK_FALSE(fs::exists(dir + "/g.pth"));
}
#endif

// Archives made to mislead (found by attacking the reader): pickles that nest deeper
// than a stack can follow or push millions of values from a few megabytes, a zip with
// one name twice or a directory whose offsets cross, and a FIFO that would block.
TEST_CASE("Archives made to mislead are refused in one line", "[pytorch]") {
  const auto dir = alexnet::test::temp_dir("pytorch-misleading");
  auto message = [&](const std::string& name) { return message_of([&] { read_state_dict(dir + "/" + name); }); };
  // 200,000 lists, each in the one before: freed without recursion (this crashed).
  write_zip(dir + "/nested.pth", "\x80\x02" + std::string(200000, ']') + std::string(199999, 'a') + ".");
  CHECK(message("nested.pth") == "'" + dir + "/nested.pth': holds a list of 1, not a state dict");
  // 1.1 million Nones from a 2 MB pickle: refused before they cost gigabytes.
  std::string many = "\x80\x02]";
  for (int i = 0; i < 1100000; ++i) many += "Na";
  write_zip(dir + "/many.pth", many + ".");
  CHECK_THAT(message("many.pth"), Catch::Contains("more than 1048576 values"));

  // A protocol Python's pickle does not know, and bytes after the pickle's STOP.
  write_zip(dir + "/protocol.pth", "\x80\x63}.");
  CHECK(message("protocol.pth") ==
        "'" + dir + "/protocol.pth': malformed pickle at byte 2: protocol 99, where pickle has 0 to 5");
  write_zip(dir + "/trailing.pth", "\x80\x02}.junk");
  CHECK(message("trailing.pth") ==
        "'" + dir + "/trailing.pth': data.pkl goes on for 4 bytes after its pickle ends (not one torch.save wrote)");

  // One tensor, its storage offset, element count and key as given (BININT, 4 bytes).
  auto tensor_pickle = [](int32_t offset, int32_t numel, const std::string& key) {
    auto int4 = [](int32_t v) {
      std::string b = "J";
      for (int i = 0; i < 4; ++i) b += static_cast<char>((static_cast<uint32_t>(v) >> (8 * i)) & 0xFF);
      return b;
    };
    auto text = [](const std::string& t) {
      std::string b = "X";
      for (int i = 0; i < 4; ++i) b += static_cast<char>((t.size() >> (8 * i)) & 0xFF);
      return b + t;
    };
    return "\x80\x02}" + text("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" + text("storage") +
           "ctorch\nFloatStorage\n" + text(key) + text("cpu") + int4(numel) + "tQ" + int4(offset) + "K\x02\x85K\x01\x85" +
           "\x89" "ccollections\nOrderedDict\n)RtRs.";
  };
  auto write_tensor = [&](const std::string& name, const std::string& pickle) {
    caffe2::serialize::PyTorchStreamWriter writer(dir + "/" + name);
    writer.writeRecord("data.pkl", pickle.data(), pickle.size());
    const std::string data(8, '\0');
    writer.writeRecord("data/0", data.data(), data.size());
    writer.writeEndOfFile();
  };
  write_tensor("tensor.pth", tensor_pickle(0, 2, "0"));
  REQUIRE(read_state_dict(dir + "/tensor.pth").size() == 1);  // the pickle is well made
  write_tensor("offset.pth", tensor_pickle(-1, 2, "0"));
  CHECK_THAT(message("offset.pth"), Catch::EndsWith(": a tensor starts at element -1 of its storage"));
  write_tensor("numel.pth", tensor_pickle(0, -1, "0"));
  CHECK(message("numel.pth") == "'" + dir + "/numel.pth': storage '0' has -1 elements");
  write_tensor("key.pth", tensor_pickle(0, 2, "\x1b[2J" + std::string(100000, 'k')));
  const auto refused = message("key.pth");
  CHECK_THAT(refused, Catch::Contains("that torch.save does not write"));
  CHECK(refused.find('\x1b') == std::string::npos);
  CHECK(refused.size() < 300);

  // Two records of the same length, then the directory edited.
  const std::string pickle = "\x80\x02}q\x00.";
  auto two_records = [&](const std::string& path) {
    caffe2::serialize::PyTorchStreamWriter writer(path);
    writer.writeRecord("data.pkl", pickle.data(), pickle.size());
    writer.writeRecord("data.pkx", pickle.data(), pickle.size());
    writer.writeEndOfFile();
    return read_bytes(path);
  };
  auto save = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
  };
  auto directory_entry = [](const std::string& bytes, int which) {
    size_t at = 0;
    for (int i = 0; i <= which; ++i) at = bytes.find("PK\x01\x02", i ? at + 4 : 0);
    REQUIRE(at != std::string::npos);
    return at;
  };
  auto twice = two_records(dir + "/twice.pth");
  const auto second = directory_entry(twice, 1);
  twice.replace(twice.find("data.pkx", second), 8, "data.pkl");
  save("twice.pth", twice);
  CHECK_THAT(message("twice.pth"), Catch::EndsWith("/data.pkl' appears twice)"));
  // The directory names a record its header does not: whose bytes are these?
  auto crossed = two_records(dir + "/crossed.pth");
  crossed.replace(crossed.find("data.pkl", directory_entry(crossed, 0)), 8, "data.pkz");
  save("crossed.pth", crossed);
  CHECK_THAT(message("crossed.pth"), Catch::EndsWith("/data.pkz' points at the header of another entry)"));

  REQUIRE(::mkfifo((dir + "/fifo.pth").c_str(), 0600) == 0);
  CHECK(message("fifo.pth") == "'" + dir + "/fifo.pth': a FIFO (named pipe), not a file torch.save wrote");
  CHECK(message_of([&] { (void)alexnet::load(dir + "/fifo.pth"); }) ==
        "checkpoint '" + dir + "/fifo.pth': a FIFO (named pipe), not weights: give a regular file");
}
