// A run created and resumed by a program that links alexnet::train and nothing of the
// project's apps: a data set of two colours, one epoch, then the run continued to two,
// and its weights compared bit for bit with a run of two epochs straight through
// (dropout and PCA colour noise on: every random draw must be resumed).
#include <alexnet/data/image.h>
#include <alexnet/network/checkpoint.h>
#include <alexnet/train/run.h>

#include <filesystem>
#include <iostream>
#include <random>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: consumer_train SCRATCH_DIR\n";
    return 2;
  }
  const std::string dir = argv[1];
  std::mt19937 random(1);
  for (int c = 0; c < 2; ++c) {
    std::filesystem::create_directories(dir + "/data/" + std::to_string(c));
    for (int i = 0; i < 6; ++i) {
      alexnet::data::Image image;
      image.height = image.width = 40;
      image.channels = 3;
      for (int p = 0; p < 40 * 40 * 3; ++p) {
        image.pixels.push_back(static_cast<uint8_t>((p % 3 == 2 * c ? 170 : 70) + random() % 40));
      }
      alexnet::data::write_image(image, dir + "/data/" + std::to_string(c) + "/" + std::to_string(i) + ".png");
    }
  }
  alexnet::RunConfig config;
  config.data(dir + "/data").arch("caffe").input_size(67).dropout(0.5);
  config.train().epochs(1).batch_size(4).workers(1).resize(72).pca_std(0.1);
  config.trainer().lr(0.001);
  alexnet::TrainHooks hooks;
  hooks.on_epoch = [](const alexnet::EpochMetrics& m) { std::cout << m.to_text() << "\n"; };
  const auto run_dir = dir + "/run";
  auto run = alexnet::Run::create(run_dir, config, alexnet::RunOptions().overwrite(true).hooks(hooks));
  if (run.fit() != alexnet::Run::Outcome::kFinished) return 1;

  auto again = alexnet::Run::resume(run_dir, [](alexnet::RunConfig& c) { c.train().epochs(2); },
                                    alexnet::RunOptions().hooks(hooks));
  if (again.fit() != alexnet::Run::Outcome::kFinished) return 1;
  std::cout << "resumed to epoch " << again.history().size() << "\n";
  if (again.history().size() != 2) return 1;

  auto straight_config = config;
  straight_config.train().epochs(2);
  auto straight = alexnet::Run::create(dir + "/straight", straight_config, alexnet::RunOptions().overwrite(true));
  if (straight.fit() != alexnet::Run::Outcome::kFinished) return 1;
  const auto resumed = alexnet::load(run_dir + "/last.pt")->parameters();
  const auto reference = alexnet::load(dir + "/straight/last.pt")->parameters();
  for (size_t i = 0; i < resumed.size(); ++i) {
    if (!resumed[i].equal(reference[i])) {
      std::cout << "parameter " << i << " differs from the uninterrupted run\n";
      return 1;
    }
  }
  std::cout << "bitwise equal to an uninterrupted run\n";
  return 0;
}
