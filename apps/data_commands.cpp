#include "commands.h"
#include "progress.h"

#include <alexnet/data.h>
#include <alexnet/network/checkpoint.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

namespace alexnet::app {
namespace {

// Flags every data-reading command shares.
struct DataFlags {
  std::string data;
  std::string class_names;
  int64_t size = 256;
  int64_t workers = 2;
  bool skip_bad = false;

  void add_to(CLI::App* cmd) {
    cmd->add_option("--data", data, "Image folder (root/<class>/<image>), list file ('path label' lines) or packed set")
        ->required();
    cmd->add_option("--class-names", class_names, "File of human-readable class names, one per line, in label order");
    cmd->add_option("--resize", size, "Side images are brought to: shorter side, then centre crop (Section 2: 256)")
        ->check(at_least(1))
        ->capture_default_str();
    cmd->add_option("--size", size)->group("");  // the old name, hidden (checked in open())
    cmd->add_option("--workers", workers, "Decoding threads (0: one, in the calling thread)")
        ->check(at_least(0))
        ->capture_default_str();
    cmd->add_flag("--skip-bad", skip_bad, "Leave out unreadable images and report how many (default: stop at the first)");
  }
  std::shared_ptr<data::Source> open() const {
    if (size < 1) throw std::invalid_argument("--resize: must be at least 1, got " + std::to_string(size));
    return data::open_source(data, data::ReadOptions().class_names(class_names));
  }
  data::OnError on_error() const { return skip_bad ? data::OnError::kSkip : data::OnError::kFail; }
};

void refuse_existing(const std::string& path, bool force) {
  if (!force && std::filesystem::exists(path)) {
    throw std::runtime_error("'" + path + "' exists; --overwrite to replace it");
  }
  check_writable(path, "output");  // before the pass over the data
}

}  // namespace

void add_data_commands(CLI::App& app) {
  {
    auto flags = std::make_shared<DataFlags>();
    auto out = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    auto force = std::make_shared<bool>(false);
    auto* cmd = app.add_subcommand("stats", "Mean image, channel means and RGB principal components of a training set");
    flags->add_to(cmd);
    cmd->add_option("--out", *out, "Statistics file to write (training, evaluation and classification read it)")
        ->required();
    cmd->add_flag("--json", *json, "Print mean_rgb, eigenvalues and eigenvectors as one JSON object");
    cmd->add_flag("--overwrite", *force, "Replace an existing statistics file");
    cmd->add_flag("--force", *force)->group("");  // the old name, hidden
    cmd->callback([=] {
      refuse_existing(*out, *force);
      const auto source = flags->open();
      if (const auto note = data::describe_left_out(*source); !note.empty()) spdlog::warn("{}", note);
      int64_t skipped = 0;
      const auto stats = data::compute_statistics(*source, flags->size, flags->workers, flags->on_error(), &skipped);
      stats.save(*out);
      if (skipped > 0) spdlog::warn("left out {} unreadable images", skipped);
      if (*json) {
        std::cout << stats.to_json() << "\n";
      } else {
        spdlog::info("{} images; wrote {}", stats.images, *out);
      }
    });
  }
  {
    auto flags = std::make_shared<DataFlags>();
    auto out = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand(
        "prepare", "Decode and resize a data set once into a packed set (resumable: rerun to finish an interrupted one)");
    flags->add_to(cmd);
    cmd->add_option("--out", *out, "Folder of the packed set")->required();
    cmd->callback([=] {
      const auto source = flags->open();
      ProgressLine progress("prepare");
      const auto result = data::prepare_packed(*source, *out, flags->size, flags->workers, flags->on_error(),
                                               [&](size_t done, size_t total) { progress.update(done, total); });
      if (result.skipped > 0) spdlog::warn("left out {} unreadable images", result.skipped);
      spdlog::info("{} images in {} shards ({} kept from an earlier run) in {}", result.records, result.shards,
                   result.shards_kept, *out);
    });
  }
  {
    auto dir = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("verify", "Check every record of a packed set against its checksum");
    cmd->add_option("dir", *dir, "The packed set's folder")->required();
    cmd->callback([=] {
      const auto records = data::verify_packed(*dir);
      std::cout << *dir << ": " << records << " records, every checksum holds\n";
    });
  }
  {
    auto from = std::make_shared<std::string>(data::kFashionMnistDir);
    auto out = std::make_shared<std::string>();
    auto examples = std::make_shared<int64_t>(0);
    auto* cmd = app.add_subcommand("import", "Import a data set shipped in another format");
    auto* fashion = cmd->add_subcommand("fashion-mnist", "Fashion-MNIST's IDX files into packed sets OUT/train and OUT/test");
    cmd->require_subcommand(1);
    fashion->add_option("--from", *from, "Folder of the IDX files")->capture_default_str();
    fashion->add_option("--out", *out, "Folder for the packed sets")->required();
    fashion->add_option("--examples", *examples, "Also write the first N test images as PNG files to OUT/examples")
        ->check(at_least(0));
    fashion->callback([=] {
      const auto [train, test] = data::import_fashion_mnist(*from, *out);
      if (*examples > 0) {
        const auto dir = std::filesystem::path(*out) / "examples";
        std::filesystem::create_directories(dir);
        const auto source = data::open_packed((std::filesystem::path(*out) / "test").string());
        for (size_t i = 0; i < std::min<size_t>(static_cast<size_t>(*examples), source->size()); ++i) {
          char name[64];
          std::snprintf(name, sizeof(name), "test-%05zu.png", i);
          data::write_image(source->image(i, 28), (dir / name).string());  // 28x28: stored as is
        }
      }
      spdlog::info("Fashion-MNIST: {} training and {} test images in {}", train.records, test.records, *out);
    });
  }
}

}  // namespace alexnet::app
