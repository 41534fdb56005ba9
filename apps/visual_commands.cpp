#include "commands.h"

#include <alexnet/network/checkpoint.h>
#include <alexnet/network/numbers.h>
#include <alexnet/data.h>
#include <alexnet/train/inference.h>
#include <alexnet/train/visualize.h>

#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <regex>

namespace alexnet::app {
namespace fs = std::filesystem;
namespace {

// An image by the name `features` recorded (a file, or "DIR record N" of a packed set)
// and what to call it under the picture: a record's class, or a file's folder (its
// class in a class-per-folder set) and name.
std::pair<data::Image, std::string> image_named(const std::string& name) {
  static const std::regex record("^(.*) record ([0-9]+)$");
  std::smatch m;
  if (std::regex_match(name, m, record)) {
    const auto index = to_number<size_t>(m[2].str());
    const auto source = data::open_packed(m[1].str());
    if (!index || *index >= source->size()) throw std::invalid_argument("'" + name + "': no such record");
    const auto label = static_cast<size_t>(source->label(*index));
    return {data::to_rgb(source->image(*index, 96)),
            label < source->classes().size() ? source->classes()[label] : "record " + m[2].str()};
  }
  const fs::path path(name);
  const auto folder = path.parent_path().filename().string();
  return {data::decode_resized(name, 96), (folder.empty() ? "" : folder + "/") + path.filename().string()};
}

}  // namespace

void add_visual_commands(CLI::App& app) {
  {
    struct Flags {
      std::string weights, layer = "fc7", out;
      std::vector<std::string> data;
      InferenceOptions options;
    };
    auto f = std::make_shared<Flags>();
    auto* cmd = app.add_subcommand("features", "Activations of a layer for a data set or images, as a NumPy .npy file");
    cmd->add_option("--weights", f->weights, "Checkpoint written by alexnet train")->required();
    cmd->add_option("--data", f->data, "Image folder, list file, packed set, or image files")->required();
    cmd->add_option("--layer", f->layer, "pool5, fc6, fc7 (Section 6.1 uses fc7) or logits (fc8's outputs, before the softmax)")
        ->check(CLI::IsMember({"pool5", "fc6", "fc7", "logits"}))->capture_default_str();
    cmd->add_option("--out", f->out, "The .npy file; the images, in row order, go to the same name with .txt")
        ->required();
    add_inference_flags(cmd, f->options, /*ten_crop=*/false);
    cmd->callback([f] {
      check_writable(f->out, "features");  // before every image is computed
      // The checkpoint and images are recorded beside the features for `neighbours`:
      // absolute, so that it finds them from any folder.
      const auto absolute = [](const std::string& path) { return fs::absolute(path).lexically_normal().string(); };
      f->weights = absolute(f->weights);
      for (auto& d : f->data) d = absolute(d);
      auto [model, pre] = load_for_inference(f->weights, f->options.precision());
      std::error_code error;
      const bool collection = f->data.size() == 1 && (fs::is_directory(f->data[0], error) ||
                                                      fs::path(f->data[0]).extension() == ".txt");
      const auto source = collection ? data::open_source(f->data[0]) : data::open_image_files(f->data);
      say_precision(*model, f->options.precision());
      Features features;
      features.layer = parse<Layer>("layer", f->layer);
      features.weights = f->weights;
      features.values = extract_features(model, source, pre, *features.layer, f->options);
      features.precision = inference_precision(*model, f->options.precision());
      for (size_t i = 0; i < source->size(); ++i) features.images.push_back(source->describe(i));
      write_features(features, f->out);
      spdlog::info("{} x {} {} features in {} (images and layer beside it, .txt and .json)", features.values.size(0),
                   features.values.size(1), f->layer, f->out);
    });
  }
  {
    struct Flags {
      std::string features, query, weights, grid;
      int64_t k = 8;
      InferenceOptions options;
    };
    auto f = std::make_shared<Flags>();
    auto* cmd = app.add_subcommand("neighbours", "Nearest images by Euclidean distance between features (Figure 4)");
    cmd->add_option("--features", f->features, "A .npy file written by alexnet features")->required();
    cmd->add_option("--query", f->query, "A row number of the features, or an image file (needs --weights)")->required();
    cmd->add_option("--weights", f->weights,
                    "Checkpoint for an image query's features (default: the one the features were computed with)");
    cmd->add_option("--k", f->k, "How many neighbours")->check(at_least(1))->capture_default_str();
    cmd->add_option("--grid", f->grid, "Also draw the query and its neighbours to this PNG");
    add_precision_flag(cmd, f->options, "the precision the features were computed at, where their .json records it");
    cmd->callback([f] {
      const auto file = read_features(f->features);
      const auto& features = file.values;
      const auto& names = file.images;
      torch::Tensor query;
      int64_t exclude = -1;
      std::string query_name = f->query;
      if (!f->query.empty() && f->query.find_first_not_of("0123456789") == std::string::npos) {
        const auto row = to_number<int64_t>(f->query);
        if (!row || *row >= features.size(0)) {
          throw std::invalid_argument("--query " + f->query + ": the features have " +
                                      std::to_string(features.size(0)) + " rows");
        }
        exclude = *row;
        query = features[exclude];
        if (static_cast<size_t>(exclude) < names.size()) query_name = names[static_cast<size_t>(exclude)];
      } else {
        query = features_like(file, f->query, f->weights, f->options.precision());
      }
      const auto [indices, distances] = nearest(features, query, f->k, exclude);
      std::cout << "query " << query_name << "\n";
      for (size_t i = 0; i < indices.size(); ++i) {
        const auto index = static_cast<size_t>(indices[i]);
        std::cout << (i + 1) << "\t" << indices[i] << "\t" << distances[i] << "\t"
                  << (index < names.size() ? names[index] : "") << "\n";
      }
      if (!f->grid.empty()) {
        std::vector<data::Image> row;
        std::vector<std::vector<std::string>> captions;
        auto [query_image, query_what] = image_named(query_name);
        row.push_back(std::move(query_image));
        captions.push_back({"query", query_what});
        for (size_t i = 0; i < indices.size(); ++i) {
          auto [image, what] = image_named(names.at(static_cast<size_t>(indices[i])));
          row.push_back(std::move(image));
          char distance[64];
          std::snprintf(distance, sizeof distance, "%zu: d = %.3g", i + 1, distances[i]);
          captions.push_back({distance, what});
        }
        data::write_image(image_row(row, captions), f->grid);
      }
    });
  }
  {
    auto weights = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    auto scale = std::make_shared<int64_t>(4);
    auto* cmd = app.add_subcommand("kernels", "conv1's kernels as a picture, the two towers apart (Figure 3)");
    cmd->add_option("--weights", *weights, "Checkpoint")->required();
    cmd->add_option("--out", *out, "PNG file")->required();
    cmd->add_option("--scale", *scale, "Pixels per kernel weight")->check(at_least(1))->capture_default_str();
    cmd->callback([=] {
      data::write_image(kernel_grid(*load(*weights), *scale), *out);
      spdlog::info("wrote {}", *out);
    });
  }
  {
    auto run = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("plot", "Training curves of a run: loss, top-1/top-5 error, learning rate");
    cmd->add_option("run", *run, "Run directory (its metrics.jsonl)")->required();
    cmd->add_option("--out", *out, "PNG file")->required();
    cmd->callback([=] {
      data::write_image(plot_curves(read_metrics((fs::path(*run) / "metrics.jsonl").string())), *out);
      spdlog::info("wrote {}", *out);
    });
  }
}

}  // namespace alexnet::app
