#include "helpers.h"

#include <alexnet/network/precision.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

using alexnet::test::run;

namespace {
const std::string kCli = ALEXNET_CLI;

// DIR/d: two classes of two real photographs each (python3-skimage's).
void make_two_classes(const std::string& dir) {
  const std::string photos = "/usr/lib/python3/dist-packages/skimage/data";
  std::string out;
  REQUIRE(run("mkdir -p " + dir + "/d/one " + dir + "/d/two && cp " + photos + "/coffee.png " + photos +
                  "/rocket.jpg " + dir + "/d/one/ && cp " + photos + "/motorcycle_left.png " + photos + "/retina.jpg " +
                  dir + "/d/two/",
              out) == 0);
}
}

TEST_CASE("alexnet summary prints the paper's totals", "[cli]") {
  std::string out;
  REQUIRE(run(kCli + " summary", out) == 0);
  CHECK_THAT(out, Catch::Contains("60,965,224") && Catch::Contains("724,406,816") &&
                      Catch::Contains("conv1    0      48x55x55"));
  REQUIRE(run(kCli + " summary --arch torchvision", out) == 0);
  CHECK_THAT(out, Catch::Contains("61,100,840"));
  REQUIRE(run(kCli + " summary --arch caffe --input-size 224 --json", out) == 0);
  CHECK_THAT(out, Catch::StartsWith("{\"architecture\":\"two_tower\",\"input_size\":224,\"activation\":\"relu\","
                                    "\"pool_size\":3,\"pool_stride\":2,\"layers\":[") &&
                      Catch::EndsWith("\"parameters\":60965224,\"macs\":724406816}\n"));
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  // The paper's alternatives, as train takes them: one tower of half the kernels
  // (Section 3.2), tanh, non-overlapping pooling of the same output sizes.
  REQUIRE(run(kCli + " summary --towers 1 --activation tanh --no-lrn --pool-size 2", out) == 0);
  CHECK_THAT(out, Catch::Contains("conv1    -      48x55x55") && Catch::Contains("pool5    -      256x6x6") &&
                      Catch::Contains("total (one_tower, 227x227)       59,798,312") &&
                      Catch::Contains("activation tanh, max pooling 2x2 stride 2\n") && !Catch::Contains("lrn"));
  CHECK(run(kCli + " summary --arch torchvision --activation tanh", out, true) == 1);
  CHECK_THAT(out, Catch::Contains("torchvision has none of the paper's alternatives"));
}

TEST_CASE("alexnet refuses bad arguments with one line and a non-zero exit", "[cli]") {
  std::string out;
  CHECK(run(kCli + " summary --arch vgg", out, true) != 0);
  CHECK(out == "error: --arch: vgg not in {paper,caffe,torchvision} (see alexnet --help)\n");
  CHECK(run(kCli + " summary --input-size 50", out, true) == 1);
  CHECK_THAT(out, Catch::StartsWith("error: AlexNet: input size 50 with conv1 padding 0 is too small"));
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  CHECK(run(kCli + " frobnicate", out, true) != 0);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  CHECK(run(kCli, out, true) != 0);
  CHECK(run(kCli + " summary --help", out) == 0);
  CHECK_THAT(out, Catch::Contains("--arch") && Catch::Contains("--json"));
}

TEST_CASE("alexnet stats, prepare and import work as documented, and name bad input", "[cli][data]") {
  const auto dir = alexnet::test::temp_dir("cli-data");
  std::string out;
  // Two classes of real photographs from python3-skimage (ones whose PNGs do not make
  // libpng print warnings of its own).
  const std::string photos = "/usr/lib/python3/dist-packages/skimage/data";
  REQUIRE(run("mkdir -p " + dir + "/images/cat " + dir + "/images/coffee && cp " + photos + "/motorcycle_left.png " + dir +
                  "/images/cat/ && cp " + photos + "/coffee.png " + photos + "/rocket.jpg " + dir + "/images/coffee/",
              out) == 0);
  REQUIRE(run(kCli + " stats --data " + dir + "/images --out " + dir + "/stats.pt --json", out) == 0);
  CHECK_THAT(out, Catch::StartsWith("{\"images\":3,\"mean_rgb\":[") && Catch::Contains("\"eigenvalues\":[") &&
                      Catch::EndsWith("]]}\n"));
  CHECK(run(kCli + " stats --data " + dir + "/images --out " + dir + "/stats.pt", out, true) == 1);
  CHECK(out == "error: '" + dir + "/stats.pt' exists; --overwrite to replace it\n");
  CHECK(run(kCli + " stats --data " + dir + "/images --out " + dir + "/stats.pt --overwrite", out, true) == 0);
  // The old names still work, unlisted: --force for --overwrite, --size for --resize.
  CHECK(run(kCli + " stats --data " + dir + "/images --out " + dir + "/stats.pt --force --size 64", out, true) == 0);
  REQUIRE(run(kCli + " stats --help", out) == 0);
  CHECK_THAT(out, Catch::Contains("--overwrite") && Catch::Contains("--resize INT") && !Catch::Contains("--force") &&
                      !Catch::Contains("--size"));
  REQUIRE(run(kCli + " train --help", out) == 0);
  CHECK_THAT(out, Catch::Contains("--epochs INT=90") && Catch::Contains("--lr FLOAT=0.01") &&
                      !Catch::Contains("--epochs TEXT"));

  REQUIRE(run(kCli + " prepare --data " + dir + "/images --out " + dir + "/packed", out, true) == 0);
  CHECK_THAT(out, Catch::Contains("3 images in 1 shards (0 kept from an earlier run)"));
  REQUIRE(run(kCli + " prepare --data " + dir + "/images --out " + dir + "/packed", out, true) == 0);
  CHECK_THAT(out, Catch::Contains("(1 kept from an earlier run)"));

  REQUIRE(run("printf 'not an image' > " + dir + "/images/cat/broken.jpg", out) == 0);
  CHECK(run(kCli + " prepare --data " + dir + "/images --out " + dir + "/packed2", out, true) == 1);
  CHECK(out == "error: image '" + dir + "/images/cat/broken.jpg': not a decodable image (corrupt, truncated, or not JPEG/PNG/BMP/WebP/TIFF)\n");
  CHECK(run(kCli + " prepare --skip-bad --data " + dir + "/images --out " + dir + "/packed2", out, true) == 0);
  CHECK_THAT(out, Catch::Contains("left out 1 unreadable images") && Catch::Contains("3 images in 1 shards"));

  CHECK(run(kCli + " stats --data " + dir + "/nowhere --out " + dir + "/x.pt", out, true) == 1);
  CHECK(out == "error: data '" + dir + "/nowhere': does not exist\n");
  CHECK(run(kCli + " prepare --out " + dir + "/p", out, true) == 2);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);

  CHECK(run(kCli + " import fashion-mnist --from " + dir + " --out " + dir + "/fm", out, true) == 1);
  CHECK_THAT(out, Catch::StartsWith("error: Fashion-MNIST: no train-images-idx3-ubyte[.gz] in '" + dir + "'"));
  REQUIRE(run("rm -rf " + dir, out) == 0);
}

TEST_CASE("alexnet train, evaluate and classify work from the command line, Ctrl-C checkpoints", "[cli][train]") {
  const auto dir = alexnet::test::temp_dir("cli-train");
  std::string out;
  make_two_classes(dir);
  const std::string common = " --data " + dir + "/d --val " + dir +
                             "/d --arch caffe --input-size 67 --resize 72 --batch-size 2 --workers 1";
  REQUIRE(run(kCli + " train" + common + " --epochs 2 --out " + dir + "/run", out, true) == 0);
  CHECK_THAT(out, Catch::Contains("epoch 2: train loss"));
  for (const char* file : {"last.pt", "best.pt", "metrics.jsonl", "options.txt", "train.log", "stats.pt"}) {
    CHECK(std::filesystem::exists(dir + "/run/" + file));
  }
  // --precision auto: bf16 where this CPU multiplies in bf16, else fp32, as the run records.
  REQUIRE(run(kCli + " train" + common + " --epochs 1 --precision auto --out " + dir + "/auto", out, true) == 0);
  REQUIRE(run("cat " + dir + "/auto/options.txt", out) == 0);
  CHECK_THAT(out, Catch::Contains(alexnet::cpu_bf16() == alexnet::CpuBf16::kNative ? "\nprecision=bf16\n"
                                                                                   : "\nprecision=fp32\n"));
  CHECK(run(kCli + " train" + common + " --epochs 2 --out " + dir + "/run", out, true) == 1);
  CHECK(out == "error: run '" + dir + "/run' exists: --resume " + dir + "/run to continue it, or --overwrite to replace it\n");

  // Fine-tuning from the run's weights, the feature extractor frozen, fc8 at 10x.
  REQUIRE(run(kCli + " train --data " + dir + "/d --batch-size 2 --workers 1 --epochs 1 --weights " + dir +
                  "/run/best.pt --freeze conv1..conv5 --lr-mult fc8=10 --out " + dir + "/tuned",
              out, true) == 0);
  CHECK_THAT(out, Catch::Contains("fine-tuning from " + dir + "/run/best.pt: every layer loaded, fc8 2 of the 2 classes "
                                  "kept (of its 2), 0 new; input normalised with the weights' preprocessing; frozen: "
                                  "conv1,conv2,conv3,conv4,conv5; lr_mult fc8=10"));
  REQUIRE(run("cat " + dir + "/tuned/options.txt", out) == 0);
  CHECK_THAT(out, Catch::Contains("\nweights=" + dir + "/run/best.pt\n") && Catch::Contains("\nresize=72\n") &&
                      Catch::Contains("\nfreeze=conv1,conv2,conv3,conv4,conv5\n") &&
                      Catch::Contains("\nlr_mult=fc8=10\n"));
  CHECK(run(kCli + " train --data " + dir + "/d --weights " + dir + "/run/best.pt --freeze conv0 --out " + dir + "/x",
            out, true) == 1);
  CHECK(out == "error: --freeze has 'conv0', not a layer (conv1 .. conv5, fc6 .. fc8)\n");

  REQUIRE(run(kCli + " evaluate --json --weights " + dir + "/run/best.pt --data " + dir + "/d", out) == 0);
  CHECK_THAT(out, Catch::StartsWith("{\"images\":4,\"top1\":") && Catch::Contains("\"label\":\"two\""));
  REQUIRE(run(kCli + " classify --json --top 2 --weights " + dir + "/run/best.pt " + dir + "/d/one/rocket.jpg", out) == 0);
  CHECK_THAT(out, Catch::StartsWith("{\"image\":\"" + dir + "/d/one/rocket.jpg\",\"top\":[{\"label\":\"") &&
                      Catch::Contains(",\"index\":") && Catch::Contains(",\"probability\":"));
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  // Logits from the command line: classify --logits and features --layer logits agree,
  // and the probabilities shown are their softmax. The precision is said first.
  REQUIRE(run(kCli + " classify --json --logits --top 1 --precision fp32 --weights " + dir + "/run/best.pt " + dir +
                  "/d/one/rocket.jpg 2>&1",
              out) == 0);
  CHECK_THAT(out, Catch::Contains("info: precision fp32\n"));
  std::smatch numbers;
  REQUIRE(std::regex_search(out, numbers, std::regex(R"re("probability":([-0-9.e]+)\}\],"logits":\[([^\]]+)\]\}\n$)re")));
  std::vector<double> logits;
  {
    std::istringstream list(numbers[2].str());
    for (std::string v; std::getline(list, v, ',');) logits.push_back(std::stod(v));
  }
  REQUIRE(logits.size() == 2);
  const double top = std::max(logits[0], logits[1]);
  CHECK(std::stod(numbers[1].str()) == Approx(1 / (1 + std::exp(std::min(logits[0], logits[1]) - top))).epsilon(1e-6));
  REQUIRE(run(kCli + " features --precision fp32 --layer logits --weights " + dir + "/run/best.pt --data " + dir +
                  "/d/one/rocket.jpg --out " + dir + "/logits.npy",
              out, true) == 0);
  REQUIRE(run("/usr/bin/python3 -c \"import numpy as np; print(*np.load('" + dir + "/logits.npy')[0])\"", out) == 0);
  {
    std::istringstream row(out);
    for (const double expected : logits) {
      double v = 0;
      REQUIRE(row >> v);
      CHECK(v == Approx(expected).epsilon(1e-5));
    }
  }
  REQUIRE(run(kCli + " classify --weights " + dir + "/run/best.pt " + dir + "/d/one/rocket.jpg 2>&1 >/dev/null", out) == 0);
  CHECK_THAT(out, Catch::StartsWith("info: precision " +
                                    alexnet::name_of(alexnet::resolve(alexnet::Precision::kAuto, {c10::Device(c10::kCPU)})) +
                                    " (auto: "));
  CHECK(run(kCli + " classify --logits --ten-crop --weights " + dir + "/run/best.pt " + dir + "/d/one/rocket.jpg", out,
            true) == 1);
  CHECK(out == "error: --logits with --ten-crop: ten crops have ten rows of logits, and the classes come from the mean "
               "of their probabilities; give one of the two\n");
  REQUIRE(run("printf 'x' > " + dir + "/bad.jpg", out) == 0);
  CHECK(run(kCli + " classify --weights " + dir + "/run/best.pt " + dir + "/bad.jpg", out, true) == 1);
  CHECK_THAT(out, Catch::StartsWith("error: image '" + dir + "/bad.jpg': "));
  CHECK(run(kCli + " evaluate --weights " + dir + "/none.pt --data " + dir + "/d", out, true) == 1);
  CHECK(out == "error: checkpoint '" + dir + "/none.pt': No such file or directory\n");

  // Features, neighbours, kernels and curves from the run.
  REQUIRE(run(kCli + " features --weights " + dir + "/run/best.pt --data " + dir + "/d --out " + dir + "/f.npy", out, true) == 0);
  REQUIRE(run("/usr/bin/python3 -c \"import numpy as np; print(np.load('" + dir + "/f.npy').shape)\"", out) == 0);
  CHECK(out == "(4, 4096)\n");
  REQUIRE(run("cat " + dir + "/f.txt", out) == 0);
  CHECK(out == dir + "/d/one/coffee.png\n" + dir + "/d/one/rocket.jpg\n" + dir + "/d/two/motorcycle_left.png\n" + dir +
                   "/d/two/retina.jpg\n");
  // Relative paths are recorded absolute: neighbours run from another folder finds the
  // checkpoint and the images.
  REQUIRE(run("cd " + dir + " && " + kCli + " features --weights run/best.pt --data d --layer fc6 --out rel.npy", out,
              true) == 0);
  REQUIRE(run("cat " + dir + "/rel.txt", out) == 0);
  CHECK_THAT(out, Catch::StartsWith(dir + "/d/one/coffee.png\n"));
  CHECK_THAT(alexnet::test::read_text(dir + "/rel.json"), Catch::Contains("\"weights\":\"" + dir + "/run/best.pt\""));
  REQUIRE(run("cd / && " + kCli + " neighbours --features " + dir + "/rel.npy --query " + dir +
                  "/d/one/rocket.jpg --k 1 --grid " + dir + "/rel.png",
              out, true) == 0);
  CHECK_THAT(out, Catch::EndsWith("\t" + dir + "/d/one/rocket.jpg\n"));
  REQUIRE(run(kCli + " neighbours --features " + dir + "/f.npy --query 1 --k 2 --grid " + dir + "/n.png", out) == 0);
  CHECK_THAT(out, Catch::StartsWith("query " + dir + "/d/one/rocket.jpg\n1\t"));
  CHECK(std::filesystem::exists(dir + "/n.png"));
  CHECK(run(kCli + " neighbours --features " + dir + "/f.npy --query 9", out, true) == 1);
  CHECK(out == "error: --query 9: the features have 4 rows\n");
  // Features know their layer: an image query against fc6 features is computed at fc6
  // with their checkpoint (fc6 and fc7 are both 4,096 wide) and finds the image itself.
  REQUIRE(run(kCli + " features --weights " + dir + "/run/best.pt --data " + dir + "/d --layer fc6 --out " + dir +
                  "/f6.npy",
              out, true) == 0);
  // Computed at --precision auto: bf16 where this CPU multiplies in bf16, and recorded.
  const auto precision = alexnet::name_of(alexnet::resolve(alexnet::Precision::kAuto, {c10::Device(c10::kCPU)}));
  CHECK(alexnet::test::read_text(dir + "/f6.json") == "{\"layer\":\"fc6\",\"weights\":\"" + dir +
                                                          "/run/best.pt\",\"rows\":4,\"dimension\":4096,\"precision\":\"" +
                                                          precision + "\"}\n");
  REQUIRE(run(kCli + " neighbours --features " + dir + "/f6.npy --k 2 --query " + dir + "/d/one/rocket.jpg", out) == 0);
  std::smatch found;
  REQUIRE(std::regex_match(out, found, std::regex("query [^\n]*\n1\t1\t([^\t]+)\t[^\n]*rocket.jpg\n2\t[0-9]+\t([^\t]+)\t[^\n]*\n")));
  INFO(out);
  CHECK(std::stod(found[1].str()) < 1e-4 * std::stod(found[2].str()));
  CHECK(run(kCli + " neighbours --features " + dir + "/f6.npy --weights " + dir + "/none.pt --query " + dir +
                "/d/one/rocket.jpg",
            out, true) == 1);
  CHECK(out == "error: the features are fc6 activations of '" + dir + "/run/best.pt', not of '" + dir +
                   "/none.pt': a query must be computed with the same weights\n");
  REQUIRE(run(kCli + " kernels --weights " + dir + "/run/best.pt --out " + dir + "/k.png", out, true) == 0);
  REQUIRE(run(kCli + " plot " + dir + "/run --out " + dir + "/c.png", out, true) == 0);
  for (const char* png : {"/k.png", "/c.png"}) CHECK(std::filesystem::file_size(dir + png) > 1000);
  CHECK(run(kCli + " plot " + dir + "/nothing --out " + dir + "/c.png", out, true) == 1);
  CHECK(out == "error: metrics '" + dir + "/nothing/metrics.jsonl': cannot open\n");

  // A real SIGINT to a training process: it checkpoints, says how to resume, exits non-zero.
  const std::string interrupted = dir + "/interrupted";
  const int status = run("bash -c '" + kCli + " train" + common + " --epochs 100000 --out " + interrupted +
                             " & pid=$!; until grep -q training " + interrupted +
                             "/train.log 2>/dev/null; do sleep 0.2; done; sleep 2; kill -INT $pid; wait $pid'",
                         out, true);
  CHECK(status == 130);
  CHECK_THAT(out, Catch::Contains("continue with: alexnet train --resume " + interrupted));
  REQUIRE(run(kCli + " evaluate --weights " + interrupted + "/last.pt --data " + dir + "/d", out) == 0);
  CHECK(run(kCli + " train --resume " + interrupted + " --epochs 1", out, true) == 0);
  CHECK_THAT(out, Catch::Contains("resuming " + interrupted));
  REQUIRE(run("rm -rf " + dir, out) == 0);
}

// Schedulers send SIGTERM twice, and a second process may be pointed at a run in use:
// neither may cost the run its steps, its checkpoint or its folder.
TEST_CASE("A second stop signal keeps the checkpoint, and a second process is refused a run in use", "[cli][train]") {
  const auto dir = alexnet::test::temp_dir("cli-signals");
  std::string out;
  make_two_classes(dir);
  // At 227x227 a step and a save take a moment: the second signal lands in one of them.
  const std::string train = kCli + " train --data " + dir + "/d --arch caffe --batch-size 1 --workers 1 "
                                   "--epochs 100000 --out " + dir + "/run";
  // Two SIGTERMs (the second once the first is handled: the kernel merges two pending
  // ones): the run still finishes its step, checkpoints and says so.
  int status = run("bash -c '" + train + " & pid=$!; until grep -q training " + dir +
                       "/run/train.log 2>/dev/null; do sleep 0.2; done; sleep 1; kill -TERM $pid; sleep 0.1; "
                       "kill -TERM $pid; wait $pid'",
                   out, true);
  CHECK(status == 130);
  CHECK_THAT(out, Catch::Contains("already stopping: the checkpoint is being written") &&
                      Catch::Contains("continue with: alexnet train --resume " + dir + "/run"));
  REQUIRE(run("ls -A " + dir + "/run", out) == 0);
  CHECK_THAT(out, Catch::Contains("last.pt") && !Catch::Contains(".tmp-"));
  // A second process on a run that is training: refused, naming the holder; the first
  // trains on and stops as asked.
  status = run("bash -c '" + kCli + " train --resume " + dir + "/run & pid=$!; until grep -q resuming " + dir +
                   "/run/train.log 2>/dev/null; do sleep 0.2; done; sleep 1; " + train +
                   " --overwrite > " + dir + "/second.txt 2>&1; echo second=$? pid=$pid; kill -INT $pid; wait $pid'",
               out, true);
  CHECK(status == 130);
  const std::regex refused("second=1 pid=([0-9]+)");
  std::smatch match;
  REQUIRE(std::regex_search(out, match, refused));
  CHECK(alexnet::test::read_text(dir + "/second.txt") ==
        "error: run '" + dir + "/run' is in use by process " + match[1].str() +
            ": one process at a time (wait for it, or stop it)\n");
  CHECK(std::filesystem::exists(dir + "/run/last.pt"));
  // Its lock ends with it: the folder is free again.
  CHECK(run(kCli + " train --resume " + dir + "/run --epochs 1", out, true) == 0);

  // kill -9, most likely during a save (at 227x227 each epoch writes 2 x 230 MB and
  // trains for a moment): no temporary is left, and the run resumes.
  const std::string big = kCli + " train --data " + dir + "/d --arch caffe --batch-size 2 --workers 1 "
                                 "--epochs 100000 --out " + dir + "/big";
  REQUIRE(run("bash -c '" + big + " & pid=$!; until grep -q \"epoch 1:\" " + dir +
                  "/big/train.log 2>/dev/null; do sleep 0.1; done; sleep 1.5; kill -KILL $pid; wait $pid; true'",
              out, true) == 0);
  REQUIRE(run("ls -A " + dir + "/big", out) == 0);
  CHECK_THAT(out, Catch::Contains("last.pt") && Catch::Contains("best.pt") && !Catch::Contains(".tmp-"));
  CHECK(run(kCli + " train --resume " + dir + "/big --epochs 1", out, true) == 0);
  CHECK_THAT(out, Catch::Contains("done: " + dir + "/big/last.pt (last), " + dir + "/big/best.pt (best)"));
  REQUIRE(run("rm -rf " + dir, out) == 0);
}

// The scenario of a user who extends a run, stops it, and continues it with a plain
// --resume: the extension holds. Changes that alter the run are refused by flag.
TEST_CASE("alexnet train --resume keeps what the last resume changed, changes that alter a run are refused",
          "[cli][train]") {
  const auto dir = alexnet::test::temp_dir("cli-resume");
  std::string out;
  const std::string photos = "/usr/lib/python3/dist-packages/skimage/data";
  // Enough images that an epoch takes a few seconds: a Ctrl-C lands inside one.
  REQUIRE(run("mkdir -p " + dir + "/d/one " + dir + "/d/two && for i in $(seq 1 12); do cp " + photos +
                  "/coffee.png " + dir + "/d/one/$i.png; cp " + photos + "/motorcycle_left.png " + dir +
                  "/d/two/$i.png; done",
              out) == 0);
  const std::string run_dir = dir + "/run";
  const std::string common = " train --data " + dir + "/d --arch caffe --input-size 67 --resize 72 --batch-size 2 "
                             "--workers 1 --pca-std 0";
  REQUIRE(run(kCli + common + " --epochs 1 --out " + run_dir, out, true) == 0);
  // Away from a terminal, progress says images/s and the time left.
  CHECK_THAT(out, Catch::Contains(" images/s, ") && Catch::Contains(" left"));

  const int status = run("bash -c '" + kCli + " train --resume " + run_dir + " --epochs 3 & pid=$!; " +
                             "until grep -q \"epoch 2 \" " + run_dir + "/train.log 2>/dev/null; do sleep 0.1; done; " +
                             "kill -INT $pid; wait $pid'",
                         out, true);
  INFO(out);
  CHECK(status == 130);
  CHECK_THAT(out, Catch::Contains("resume: epochs 1 -> 3") &&
                      Catch::Contains("continue with: alexnet train --resume " + run_dir));
  REQUIRE(run(kCli + " train --resume " + run_dir, out, true) == 0);
  CHECK_THAT(out, Catch::Contains("epoch 3: train loss") && Catch::Contains("done:"));
  REQUIRE(run("wc -l < " + run_dir + "/metrics.jsonl", out) == 0);
  CHECK(out == "3\n");

  CHECK(run(kCli + " train --resume " + run_dir + " --epochs 4 --batch-size 4", out, true) == 1);
  CHECK(out == "error: --batch-size is '2' in run '" + run_dir +
                   "' and '4' now: the run would differ from an uninterrupted one (--allow-changes resumes anyway)\n");
  REQUIRE(run(kCli + " train --resume " + run_dir + " --epochs 4 --batch-size 4 --allow-changes", out, true) == 0);
  CHECK_THAT(out, Catch::Contains("resume: batch_size 2 -> 4"));
  REQUIRE(run("grep -x batch_size=4 " + run_dir + "/options.txt", out) == 0);
  CHECK(run(kCli + " train --out " + dir + "/bad --data " + dir + "/d --batch-size 0", out, true) == 1);
  CHECK(out == "error: --batch-size must be positive, got 0\n");
  CHECK_FALSE(std::filesystem::exists(dir + "/bad"));
  // A diverging loss names the flag that helps, as every message of the tool does.
  CHECK(run(kCli + common + " --epochs 3 --lr 1e4 --out " + dir + "/nan", out, true) == 1);
  CHECK_THAT(out, Catch::EndsWith("): lower the learning rate (--lr)\n") && Catch::Contains("error: the loss became"));
  REQUIRE(run("rm -rf " + dir, out) == 0);
}

TEST_CASE("alexnet ablate trains every variant on a tiny budget, continues, grows and writes its report",
          "[cli][ablation]") {
  const auto dir = alexnet::test::temp_dir("cli-ablate");
  std::string out;
  make_two_classes(dir);
  const std::string study = kCli + " ablate --out " + dir + "/study --data " + dir + "/d --val " + dir +
                            "/d --arch caffe --init caffe --input-size 67 --resize 72 --batch-size 2 --workers 1 "
                            "--lr 0.001 --seeds 1";
  REQUIRE(run(study + " --epochs 1", out, true) == 0);
  for (const char* v : {"paper", "tanh", "one_tower", "no_lrn", "pool_2x2", "centre_crop", "no_pca", "no_dropout"}) {
    CHECK_THAT(out, Catch::Contains(std::string("\n| ") + v + " | "));
    CHECK(std::filesystem::exists(dir + "/study/runs/" + v + "-seed1/best.pt"));
  }
  for (const char* file : {"ablation.md", "ablation-results.json", "figure1.png", "differences.png"}) {
    CHECK(std::filesystem::exists(dir + "/study/" + file));
  }
  // Again with more epochs: every run resumes and trains on.
  REQUIRE(run(study + " --epochs 2", out, true) == 0);
  CHECK_THAT(out, Catch::Contains("continuing the study in " + dir + "/study") &&
                      Catch::Contains("no_dropout, seed 1 (8 of 8): resuming at epoch 2"));
  REQUIRE(run("wc -l < " + dir + "/study/runs/pool_2x2-seed1/metrics.jsonl", out) == 0);
  CHECK(out == "2\n");
  // --out alone continues with what was stored; --report writes from the finished runs.
  REQUIRE(run(kCli + " ablate --out " + dir + "/study --report --threshold 0.4", out) == 0);
  CHECK_THAT(out, Catch::Contains("epochs to 40% train error"));
  // A change to what the runs compute is refused, in one line, and nothing is lost.
  CHECK(run(study + " --epochs 2 --momentum 0.5", out, true) == 1);
  CHECK(out ==
        "error: --momentum was 0.9 in the study '" + dir + "/study', now 0.5: use another folder for another study\n");
  CHECK(std::filesystem::exists(dir + "/study/runs/paper-seed1/best.pt"));
  CHECK(run(kCli + " ablate --out " + dir + "/new --data " + dir + "/d", out, true) == 1);
  CHECK(out == "error: --val is needed: the study compares validation errors (give a validation set)\n");
  REQUIRE(run("rm -rf " + dir, out) == 0);
}
