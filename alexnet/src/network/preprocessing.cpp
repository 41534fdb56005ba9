#include <alexnet/network/preprocessing.h>
#include <alexnet/network/error.h>
#include <alexnet/network/pytorch.h>

#include "network/classes.h"
#include "network/json.h"
#include "network/loading.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace alexnet {

template <>
const std::vector<std::pair<std::string, Mean>>& names<Mean>() {
  static const std::vector<std::pair<std::string, Mean>> table{{"image", Mean::kImage}, {"channels", Mean::kChannels}};
  return table;
}

Preprocessing Preprocessing::torchvision(std::vector<std::string> classes) {
  Preprocessing p;
  p.classes = std::move(classes);
  // torchvision's ImageNet statistics, given on the 0..1 scale, here on 0..255.
  p.mean_rgb = torch::tensor({0.485, 0.456, 0.406}, torch::kDouble) * 255;
  p.std_rgb = torch::tensor({0.229, 0.224, 0.225}, torch::kDouble) * 255;
  p.resize = 256;
  p.crop = 224;
  return p;
}

Preprocessing Preprocessing::from_statistics(std::vector<std::string> classes, Mean mean,
                                             const torch::Tensor& mean_image, const torch::Tensor& mean_rgb,
                                             int64_t resize, int64_t crop) {
  Preprocessing p;
  p.classes = std::move(classes);
  p.mean = mean;
  p.mean_rgb = mean_rgb.to(torch::kDouble);
  p.resize = resize;
  p.crop = crop;
  if (mean == Mean::kImage) {
    if (!mean_image.defined() || mean_image.dim() != 3 || mean_image.size(0) != 3) {
      throw std::invalid_argument("preprocessing: the mean image must be [3, S, S]");
    }
    auto image = mean_image.to(torch::kFloat);
    if (image.size(1) != resize || image.size(2) != resize) {
      // Statistics computed at another side: the mean image resampled as the images are.
      image = at::upsample_bilinear2d(image.unsqueeze(0), {resize, resize}, /*align_corners=*/false).squeeze(0);
    }
    p.mean_image = image.contiguous();
  }
  return p;
}

torch::Tensor Preprocessing::apply(const torch::Tensor& images, const torch::Tensor& windows,
                                   const torch::Tensor& colour, const c10::Device& device) const {
  if (images.dim() != 4 || images.size(1) != 3 || images.size(2) != crop || images.size(3) != crop) {
    throw std::invalid_argument("preprocessing: expected images [B, 3, " + std::to_string(crop) + ", " +
                                std::to_string(crop) + "], got " + c10::str(images.sizes()));
  }
  const auto n = images.size(0);
  auto x = images.to(device, /*non_blocking=*/true).to(torch::kFloat);
  if (mean == Mean::kImage) {
    if (!mean_image.defined()) throw std::invalid_argument("preprocessing: Mean::kImage without a mean image");
    const auto m = mean_image.to(device);
    auto window = [&](int64_t y0, int64_t x0, bool flip) {
      if (y0 < 0 || x0 < 0 || y0 + crop > resize || x0 + crop > resize) {
        throw std::invalid_argument("preprocessing: crop window (" + std::to_string(y0) + ", " + std::to_string(x0) +
                                    ") does not fit a " + std::to_string(resize) + "-pixel image");
      }
      const auto part = m.narrow(1, y0, crop).narrow(2, x0, crop);
      return flip ? part.flip(2) : part;
    };
    const int64_t centre = (resize - crop) / 2;
    if (!windows.defined()) {
      x.sub_(window(centre, centre, false));
    } else {
      if (windows.dim() != 2 || windows.size(0) != n || windows.size(1) != 3) {
        throw std::invalid_argument("preprocessing: expected windows [" + std::to_string(n) + ", 3], got " +
                                    c10::str(windows.sizes()));
      }
      const auto w = windows.to(torch::kCPU, torch::kLong).contiguous();
      const auto rows = w.accessor<int64_t, 2>();
      bool same = true;
      for (int64_t i = 1; i < n && same; ++i) {
        same = rows[i][0] == rows[0][0] && rows[i][1] == rows[0][1] && rows[i][2] == rows[0][2];
      }
      if (n > 0 && same) {  // centre crops: one window for the whole batch
        x.sub_(window(rows[0][0], rows[0][1], rows[0][2] != 0));
      } else if (n > 0) {
        std::vector<torch::Tensor> crops;
        crops.reserve(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) crops.push_back(window(rows[i][0], rows[i][1], rows[i][2] != 0));
        x.sub_(torch::stack(crops));
      }
    }
  } else {
    x.sub_(mean_rgb.to(torch::kFloat).to(device).view({1, 3, 1, 1}));
  }
  if (colour.defined()) x.add_(colour.to(device, /*non_blocking=*/true).to(torch::kFloat).view({-1, 3, 1, 1}));
  if (std_rgb.defined()) x.div_(std_rgb.to(torch::kFloat).to(device).view({1, 3, 1, 1}));
  return x;
}

std::string Preprocessing::to_json() const {
  auto rgb = [](const torch::Tensor& v) {
    if (!v.defined()) return detail::Json(nullptr);
    const auto d = v.to(torch::kDouble).contiguous();
    return detail::Json::array({d[0].item<double>(), d[1].item<double>(), d[2].item<double>()});
  };
  detail::Json j;
  j["classes"] = classes;
  j["resize"] = resize;
  j["crop"] = crop;
  j["mean"] = name_of(mean);
  j["mean_rgb"] = rgb(mean_rgb);
  j["std_rgb"] = rgb(std_rgb);
  if (mean == Mean::kImage && mean_image.defined()) {
    j["mean_image"] = {{"shape", mean_image.sizes().vec()}, {"dtype", "float32"}};
  } else {
    j["mean_image"] = nullptr;
  }
  return detail::dump(j);
}

Preprocessing Preprocessing::from_json(const std::string& text, const torch::Tensor& image) {
  const detail::Record r(text, "preprocessing");
  Preprocessing p;
  p.classes = r.texts("classes");
  p.resize = r.whole("resize");
  p.crop = r.whole("crop");
  p.mean = r.choice<Mean>("mean");
  p.mean_rgb = torch::tensor(r.reals("mean_rgb", 3), torch::kDouble);
  if (!r.is_null("std_rgb")) {
    const auto s = r.reals("std_rgb", 3);
    if (!std::all_of(s.begin(), s.end(), [](double v) { return v > 0 && std::isfinite(v); })) {
      throw std::invalid_argument("preprocessing: 'std_rgb' must be positive, got " + detail::dump(r.at("std_rgb")));
    }
    p.std_rgb = torch::tensor(s, torch::kDouble);
  }
  if (p.crop <= 0 || p.crop > p.resize) {
    throw std::invalid_argument("preprocessing: crop " + std::to_string(p.crop) + " must be in [1, resize " +
                                std::to_string(p.resize) + "]");
  }
  if (p.mean == Mean::kImage) {
    if (!image.defined() || image.sizes() != torch::IntArrayRef({3, p.resize, p.resize})) {
      throw std::invalid_argument("preprocessing: the mean image must be [3, " + std::to_string(p.resize) + ", " +
                                  std::to_string(p.resize) + "]" +
                                  (image.defined() ? ", got " + c10::str(image.sizes()) : ", and there is none"));
    }
    p.mean_image = image.to(torch::kFloat).contiguous();
  }
  return p;
}

void Preprocessing::add_to(CheckpointExtras& extras) const {
  extras.strings["preprocessing"] = to_json();
  if (mean == Mean::kImage) extras.tensors["mean_image"] = mean_image.to(torch::kFloat);
}

Preprocessing Preprocessing::from(const CheckpointExtras& extras, const std::string& path) {
  const auto pre = extras.strings.find("preprocessing");
  if (pre == extras.strings.end()) {
    throw std::runtime_error("checkpoint '" + path +
                             "': has no preprocessing (class names, mean, sizes); was it written by alexnet train?");
  }
  const auto image = extras.tensors.find("mean_image");
  try {
    return from_json(pre->second, image == extras.tensors.end() ? torch::Tensor() : image->second);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("checkpoint '" + path + "': malformed " + e.what());
  }
}

std::pair<AlexNet, Preprocessing> load_for_inference(const std::string& path, Precision precision) {
  const c10::Device cpu(c10::kCPU);
  precision = resolve(precision, {cpu});  // fp16 refused there
  const bool reduced = precision == Precision::kBf16;
  CheckpointExtras extras;
  auto model = detail::load(path, {cpu}, reduced ? c10::kBFloat16 : c10::kFloat, runs_channels_last(cpu),
                            &extras);
  model->eval();
  return {model, Preprocessing::from(extras, path)};
}

std::vector<std::string> detail::class_names(std::vector<std::string> classes, int64_t outputs,
                                            const std::string& source) {
  if (classes.empty()) {
    for (int64_t c = 0; c < outputs; ++c) classes.push_back(std::to_string(c));
  } else if (static_cast<int64_t>(classes.size()) != outputs) {
    throw std::invalid_argument(std::to_string(classes.size()) + " class names for the " + std::to_string(outputs) +
                                " outputs of '" + source + "'");
  }
  return classes;
}

AlexNet convert_torchvision(const std::string& weights, const std::string& checkpoint,
                            std::vector<std::string> classes) {
  auto model = from_torchvision(read_state_dict(weights), weights);
  classes = detail::class_names(std::move(classes), model->options.num_classes(), weights);
  CheckpointExtras extras;
  Preprocessing::torchvision(std::move(classes)).add_to(extras);
  save(*model, checkpoint, extras);
  return model;
}

}  // namespace alexnet
