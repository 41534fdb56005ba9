// Data parallelism over c10d (Gloo) on loopback: real processes, ephemeral ports,
// bounded waits. Each test runs the `alexnet` tool as users do.

#include "fixtures.h"
#include "helpers.h"

#include <alexnet/checkpoint.h>
#include <alexnet/distributed.h>

#include <catch2/catch.hpp>
#include <torch/nn/modules/linear.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>

using namespace alexnet;
using alexnet::test::message_of;
using alexnet::test::relative_error;
namespace fs = std::filesystem;

namespace {

const std::string kCli = ALEXNET_CLI;

// A listening socket on an ephemeral loopback port; its port, and it stays bound
// until closed (to hold a port "in use").
struct Listener {
  int fd = -1;
  int port = 0;
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(fd, 4) == 0);
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port = ntohs(address.sin_port);
  }
  ~Listener() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

int free_port() {
  Listener l;
  return l.port;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const std::string kTrain =
    " train --arch paper --init caffe --input-size 67 --resize 76 --pca-std 0 --workers 1 --lr 0.01 ";

// Runs `script` with bash -c (quoted), so it can use $!, wait and loops.
int bash(const std::string& script, std::string& out) {
  return test::run("bash -c '" + std::regex_replace(script, std::regex("'"), "'\\''") + "'", out);
}

double field(const std::string& json, const std::string& key) {
  std::smatch m;
  REQUIRE(std::regex_search(json, m, std::regex("\"" + key + "\":([-0-9.e]+)")));
  return std::stod(m[1].str());
}

}  // namespace

TEST_CASE("two processes train as one with the global batch, replicas identical", "[distributed][cli]") {
  const auto train = test::make_colours("dist-train", 20);
  const auto val = test::make_colours("dist-val", 5);
  const auto dir = test::temp_dir("dist-runs");
  std::string out;
  // Dropout off: then one process with batch 16 takes exactly the steps of two with 8.
  const auto common = kTrain + "--data " + train + " --val " + val + " --epochs 2 --dropout 0 ";
  REQUIRE(test::run(kCli + " --threads 1" + common + "--batch-size 16 --out " + dir + "/one", out, true) == 0);
  const int status = test::run(kCli + common + "--batch-size 8 --nproc-per-node 2 --out " + dir + "/two", out, true);
  INFO(out);
  REQUIRE(status == 0);
  CHECK_THAT(out, Catch::Contains("global batch 16 (8 per rank x 2 ranks)"));
  CHECK_THAT(out, Catch::Contains("the 2 replicas' weights are identical after epoch 2"));
  // Only rank 0 speaks and writes.
  CHECK_THAT(out, !Catch::Contains("[rank 1]"));

  auto one = load(dir + "/one/last.pt");
  auto two = load(dir + "/two/last.pt");
  const auto a = one->parameters();
  const auto b = two->parameters();
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, relative_error(b[i], a[i]));
  WARN("2 ranks x 8 vs 1 x 16 after 2 epochs: worst parameter relative error " << worst);
  CHECK(worst < 1e-4);
  // Training and validation figures are the world's, not an average of averages.
  const auto m1 = read_text(dir + "/one/metrics.jsonl");
  const auto m2 = read_text(dir + "/two/metrics.jsonl");
  CHECK(field(m2, "train_loss") == Approx(field(m1, "train_loss")).epsilon(1e-5));
  CHECK(field(m2, "val_top1") == field(m1, "val_top1"));
  CHECK(field(m2, "val_loss") == Approx(field(m1, "val_loss")).epsilon(1e-5));

  SECTION("evaluation split over two ranks equals one process") {
    std::string single, split;
    REQUIRE(test::run(kCli + " evaluate --json --weights " + dir + "/one/last.pt --data " + val, single) == 0);
    REQUIRE(test::run(kCli + " evaluate --json --nproc-per-node 2 --weights " + dir + "/one/last.pt --data " + val,
                      split) == 0);
    CHECK(field(split, "images") == 10);
    CHECK(field(split, "top1") == field(single, "top1"));
    CHECK(field(split, "top5") == field(single, "top5"));
    CHECK(field(split, "loss") == Approx(field(single, "loss")).epsilon(1e-6));
  }
}

TEST_CASE("a rank that dies or hangs stops the others within the timeout", "[distributed][cli]") {
  const auto train = test::make_colours("dist-kill", 40);
  const auto dir = test::temp_dir("dist-kill-runs");
  // Killed: its connections close and rank 0 fails at once. Stopped (SIGSTOP, a hang):
  // nothing closes and rank 0 must give up after --dist-timeout (5 s).
  const auto [how, bound_ms] = GENERATE(std::make_pair(std::string("KILL"), 20000), std::make_pair(std::string("STOP"), 30000));
  INFO("rank 1 gets SIG" << how);
  const auto port = free_port();
  // Two ranks started as torchrun would; rank 1 is signalled once training runs.
  const auto cmd = "export WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + "; " +
                   "RANK=0 " + kCli + " --threads 1" + kTrain + "--data " + train + " --epochs 100 --batch-size 2 " +
                   "--dist-timeout 5 --out " + dir + "/run > " + dir + "/r0.log 2>&1 & p0=$!; " + "RANK=1 " + kCli +
                   " --threads 1" + kTrain + "--data " + train + " --epochs 100 --batch-size 2 --dist-timeout 5 --out " +
                   dir + "/run > " + dir + "/r1.log 2>&1 & p1=$!; " +
                   "for i in $(seq 300); do grep -q 'epoch 1 ' " + dir + "/r0.log && break; sleep 0.1; done; " +
                   "kill -" + how + " $p1; start=$(date +%s%N); wait $p0; status=$?; " +
                   "echo status=$status ms=$(( ($(date +%s%N) - start) / 1000000 )); kill -KILL $p1 2>/dev/null; true";
  std::string out;
  REQUIRE(bash(cmd, out) == 0);
  const auto log = read_text(dir + "/r0.log");
  INFO(out << log);
  std::smatch m;
  REQUIRE(std::regex_search(out, m, std::regex("status=([0-9]+) ms=([0-9]+)")));
  CHECK(std::stoi(m[1].str()) != 0);
  WARN("rank 0 exited " << m[2].str() << " ms after rank 1 got SIG" << how);
  CHECK(std::stoi(m[2].str()) < bound_ms);
  CHECK_THAT(log, Catch::Contains("data parallel:") && Catch::Contains("failed on rank 0"));
}

TEST_CASE("a port in use or an unreachable master is a one-line error", "[distributed]") {
  Listener taken;
  DistributedOptions o;
  o.world_size = 2;
  o.rank = 0;
  o.master_port = taken.port;
  o.timeout = std::chrono::seconds(3);
  const auto busy = message_of([&] { ProcessGroup group(o); });
  CHECK_THAT(busy, Catch::StartsWith("data parallel: rank 0 could not serve the rendezvous on 127.0.0.1:" +
                                     std::to_string(taken.port) + " (port in use? set MASTER_PORT)"));
  CHECK(busy.find('\n') == std::string::npos);

  o.rank = 1;
  o.master_port = free_port();  // nobody serves it
  const auto start = std::chrono::steady_clock::now();
  const auto unreachable = message_of([&] { ProcessGroup group(o); });
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK_THAT(unreachable, Catch::StartsWith("data parallel: rank 1 could not reach the master at 127.0.0.1:" +
                                            std::to_string(o.master_port) + " within 3 s"));
  CHECK(unreachable.find('\n') == std::string::npos);
  CHECK(seconds < 30);

  setenv("WORLD_SIZE", "2", 1);
  setenv("RANK", "two", 1);
  CHECK(message_of([] { DistributedOptions::from_environment(); }) ==
        "environment variable RANK='two' is not an integer");
  setenv("RANK", "2", 1);
  CHECK(message_of([] { DistributedOptions::from_environment(); }) ==
        "rank 2 is not in a world of 2 (RANK / WORLD_SIZE)");
  unsetenv("WORLD_SIZE");
  unsetenv("RANK");
  CHECK(DistributedOptions::from_environment().world_size == 1);
}

TEST_CASE("Ctrl-C on the launcher stops every rank with a valid checkpoint, and resume continues",
          "[distributed][cli]") {
  const auto train = test::make_colours("dist-stop", 40);
  const auto dir = test::temp_dir("dist-stop-runs");
  const auto cmd = kCli + kTrain + "--data " + train + " --epochs 30 --batch-size 2 --nproc-per-node 2 --out " + dir +
                   "/run > " + dir + "/log 2>&1 & p=$!; " + "for i in $(seq 300); do grep -q 'epoch 1 ' " + dir +
                   "/log && break; sleep 0.1; done; kill -INT $p; wait $p; echo status=$?";
  std::string out;
  REQUIRE(bash(cmd, out) == 0);
  const auto log = read_text(dir + "/log");
  INFO(out << log);
  CHECK_THAT(out, Catch::Contains("status=130"));
  CHECK_THAT(log, Catch::Contains("continue with: alexnet train --resume"));
  auto stopped = load(dir + "/run/last.pt");  // loadable
  CHECK(stopped->parameters().size() == 32);  // two towers, 8 layers, weight and bias
  // No rank is left running.
  std::string ps;
  test::run("ps -eo args | grep -- '[b]in/alexnet .*--out " + dir + "/run' || true", ps);
  CHECK(ps.empty());
  // Resume with two ranks again and finish a short run.
  REQUIRE(test::run(kCli + " train --resume " + dir + "/run --epochs 2 --nproc-per-node 2", out, true) == 0);
  CHECK_THAT(out, Catch::Contains("the 2 replicas' weights are identical after epoch 2"));
}

// Run by the next test as two processes (ranks) of one world; hidden from the list.
TEST_CASE("distributed worker", "[.][worker]") {
  auto options = DistributedOptions::from_environment();
  REQUIRE(options.world_size == 2);
  options.timeout = std::chrono::seconds(30);
  options.bucket_bytes = 64;  // several buckets for a few small tensors
  ProcessGroup group(options);
  const double r = group.rank();

  std::vector<torch::Tensor> tensors{torch::full({3}, r + 1), torch::full({2, 5}, 10 * (r + 1)),
                                     torch::full({4}, r, torch::kDouble)};
  group.average(tensors);
  CHECK(torch::equal(tensors[0], torch::full({3}, 1.5)));
  CHECK(torch::equal(tensors[1], torch::full({2, 5}, 15.0)));
  CHECK(torch::equal(tensors[2], torch::full({4}, 0.5, torch::kDouble)));
  const auto total = torch::tensor({r + 1, 10 * r}, torch::kDouble);
  group.sum(total);
  CHECK(torch::equal(total, torch::tensor({3.0, 10.0}, torch::kDouble)));
  const auto from_root = torch::full({4}, r == 0 ? 7.0 : -1.0);
  group.broadcast({from_root});
  CHECK(torch::equal(from_root, torch::full({4}, 7.0)));
  group.barrier();

  // Overlapped averaging during backward: rank r's input is r + 1 everywhere, so the
  // weight gradients are 2 (r + 1) per rank and 3 on average; the bias's are 2.
  torch::manual_seed(0);
  torch::nn::Linear linear(4, 3);
  group.overlap(linear->parameters());
  const auto x = torch::full({2, 4}, r + 1);
  for (int pass = 0; pass < 2; ++pass) {  // the buckets start again each pass
    linear->zero_grad();
    linear(x).sum().backward();
    group.finish_overlap();
    CHECK(torch::equal(linear->weight.grad(), torch::full({3, 4}, 3.0)));
    CHECK(torch::equal(linear->bias.grad(), torch::full({3}, 2.0)));
  }
}

TEST_CASE("the process group averages, sums, broadcasts and overlaps across two processes", "[distributed]") {
  const auto self = fs::read_symlink("/proc/self/exe").string();
  const auto dir = test::temp_dir("dist-worker");
  const auto cmd = "export WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_port()) + "; " +
                   "RANK=0 " + self + " '[worker]' > " + dir + "/0.log 2>&1 & p0=$!; " + "RANK=1 " + self +
                   " '[worker]' > " + dir + "/1.log 2>&1 & p1=$!; wait $p0; s0=$?; wait $p1; echo s0=$s0 s1=$?";
  std::string out;
  REQUIRE(bash(cmd, out) == 0);
  INFO(out << read_text(dir + "/0.log") << read_text(dir + "/1.log"));
  CHECK_THAT(out, Catch::Contains("s0=0 s1=0"));
  CHECK_THAT(read_text(dir + "/0.log"), Catch::Contains("All tests passed"));
}
