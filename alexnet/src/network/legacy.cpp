#include "network/legacy.h"

#include <alexnet/network/numbers.h>
#include <alexnet/network/preprocessing.h>

#include "network/json.h"
#include "network/text.h"

#include <cmath>
#include <map>
#include <sstream>
#include <stdexcept>

namespace alexnet::detail {
namespace {

// A count stored as a double: a whole number in int64's range, or the entry is malformed.
int64_t count_of(double v, const char* what) {
  if (!std::isfinite(v) || v != std::floor(v) || std::abs(v) > 9.0e18) {
    throw std::invalid_argument("training state: '" + std::string(what) + "' is not a whole number: " + c10::str(v));
  }
  return static_cast<int64_t>(v);
}

void upgrade_preprocessing(CheckpointExtras& extras) {
  const auto classes = extras.strings.find("classes");
  const auto pre = extras.strings.find("preprocessing");
  const auto mean = extras.tensors.find("mean_rgb");
  if (classes == extras.strings.end() || pre == extras.strings.end() || mean == extras.tensors.end()) {
    // Without all three the file had no preprocessing; nothing may pass for one.
    extras.strings.erase("preprocessing");
    return;
  }
  auto malformed = [](const std::string& what) { return std::invalid_argument("preprocessing (" + what + ")"); };
  Preprocessing p;
  p.classes = text_lines(classes->second);
  if (mean->second.numel() != 3) throw malformed("mean_rgb");
  p.mean_rgb = mean->second.to(torch::kDouble).reshape({3});
  const auto std_rgb = extras.tensors.find("std_rgb");
  if (std_rgb != extras.tensors.end()) {
    if (std_rgb->second.numel() != 3) throw malformed("std_rgb");
    p.std_rgb = std_rgb->second.to(torch::kDouble).reshape({3});
  }
  for (const auto& line : text_lines(pre->second)) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const auto key = line.substr(0, eq), value = line.substr(eq + 1);
    if (key == "resize" || key == "crop") {
      const auto v = to_number<int64_t>(value);
      if (!v) throw malformed(line);
      (key == "resize" ? p.resize : p.crop) = *v;
    } else if (key == "mean") {
      try {
        p.mean = parse<Mean>("mean", value);
      } catch (const std::invalid_argument&) {
        throw malformed(line);
      }
    }
  }
  const auto image = extras.tensors.find("mean_image");
  if (p.mean == Mean::kImage && image != extras.tensors.end()) p.mean_image = image->second;
  extras.strings["preprocessing"] = p.to_json();
  extras.strings.erase("classes");
  extras.tensors.erase("mean_rgb");
  extras.tensors.erase("std_rgb");
}

void upgrade_training_state(CheckpointExtras& extras) {
  static const char* const kKeys[9] = {"epoch", "step", "best_error", "bad_epochs", "loss_sum",
                                       "correct", "seen", "seconds", "lr"};
  double s[9];
  const auto progress = extras.strings.find("train/progress");
  const auto state = extras.tensors.find("train/state");
  if (progress != extras.strings.end()) {
    const Record r(progress->second, "training state");
    for (int i = 0; i < 9; ++i) s[i] = r.real(kKeys[i]);
  } else if (state != extras.tensors.end()) {
    if (state->second.numel() != 9) throw std::invalid_argument("training state: not nine numbers");
    const auto t = state->second.to(torch::kDouble).contiguous();
    std::copy(t.data_ptr<double>(), t.data_ptr<double>() + 9, s);
  } else {
    return;  // a checkpoint for inference
  }
  Json trainer;
  trainer["epoch"] = count_of(s[0], "epoch");
  trainer["step"] = count_of(s[1], "step");
  trainer["lr"] = s[8];
  trainer["loss_scale"] = 65536.0;  // LossScaler's first scale, for runs before it was saved
  trainer["good_steps"] = 0;
  const auto scaler = extras.tensors.find("train/scaler");
  if (scaler != extras.tensors.end()) {
    if (scaler->second.numel() != 2) throw std::invalid_argument("training state: a loss scaler of " + std::to_string(scaler->second.numel()) + " numbers");
    const auto t = scaler->second.to(torch::kDouble).contiguous();
    trainer["loss_scale"] = t[0].item<double>();
    trainer["good_steps"] = count_of(t[1].item<double>(), "good_steps");
  }
  Json run;
  run["best_error"] = s[2];
  run["bad_epochs"] = count_of(s[3], "bad_epochs");
  run["loss_sum"] = s[4];
  run["correct"] = s[5];
  run["seen"] = s[6];
  run["seconds"] = s[7];
  run["history"] = Json::array();
  const auto history = extras.strings.find("train/history");
  if (history != extras.strings.end()) {
    for (const auto& line : text_lines(history->second)) {
      try {
        run["history"].push_back(Json::parse(line));
      } catch (const nlohmann::json::exception&) {
        throw std::invalid_argument("training history: a line that is not JSON");
      }
    }
  }
  extras.strings["trainer"] = dump(trainer);
  extras.strings["run/progress"] = dump(run);
  for (const char* key : {"train/progress", "train/history", "train/seed"}) extras.strings.erase(key);
  for (const char* key : {"train/state", "train/scaler"}) extras.tensors.erase(key);
}

}  // namespace

AlexNetOptions format1_options(const std::string& text) {
  std::map<std::string, std::string> values;
  std::istringstream in(text);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw std::invalid_argument("options line " + std::to_string(number) + " is not key=value: '" + line + "'");
    }
    values[line.substr(0, eq)] = line.substr(eq + 1);
  }
  auto take = [&](const std::string& key) {
    const auto found = values.find(key);
    if (found == values.end()) throw std::invalid_argument("options lack '" + key + "'");
    auto value = found->second;
    values.erase(found);
    return value;
  };
  auto number = [&](const std::string& key) {
    const auto text = take(key);
    if (const auto v = to_number<double>(text)) return *v;
    throw std::invalid_argument("option '" + key + "' is not a number: '" + text + "'");
  };
  auto integer = [&](const std::string& key) {
    const auto text = take(key);
    if (const auto v = to_number<int64_t>(text)) return *v;
    throw std::invalid_argument("option '" + key + "' is not a whole number: '" + text + "'");
  };
  // Options added after the first files: their defaults for files written before them.
  auto flag = [&](const std::string& key) {
    if (!values.count(key)) return false;
    const auto v = take(key);
    if (v != "0" && v != "1") throw std::invalid_argument("option '" + key + "' must be 0 or 1, got '" + v + "'");
    return v == "1";
  };
  AlexNetOptions o;
  o.architecture(parse<Architecture>("architecture", take("architecture")))
      .num_classes(integer("num_classes"))
      .input_size(integer("input_size"))
      .conv1_padding(integer("conv1_padding"))
      .dropout(number("dropout"))
      .init(parse<Init>("initialisation", take("init")))
      .execution(parse<Execution>("execution", take("execution")));
  o.lrn_across_towers(flag("lrn_across_towers")).pool_before_lrn(flag("pool_before_lrn")).ceil_mode(flag("ceil_mode"));
  if (values.count("lrn") && values.at("lrn") == "none") {
    values.erase("lrn");
    o.lrn(c10::nullopt);
  } else {
    const auto mode = parse<LRNMode>("LRN mode", take("lrn.mode"));
    o.lrn(LRNOptions()
              .size(integer("lrn.size"))
              .alpha(number("lrn.alpha"))
              .beta(number("lrn.beta"))
              .k(number("lrn.k"))
              .mode(mode));
  }
  if (!values.empty()) throw std::invalid_argument("unknown option '" + values.begin()->first + "'");
  return o;
}

void upgrade_format1(CheckpointExtras& extras) {
  upgrade_preprocessing(extras);
  upgrade_training_state(extras);
}

}  // namespace alexnet::detail
