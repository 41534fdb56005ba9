#pragma once

// What inference needs besides the weights: the class names, and how an image becomes
// the network's input (Section 2). Every checkpoint the trainer writes carries it, and
// so does every conversion, so that classifying an image needs no data set.
//
// An image is brought to `resize` x `resize` (shorter side, then the centre), and a
// `crop` x `crop` window is cut from it: the centre at test time, Section 4.1's random
// windows and reflections in training, ten windows for ten-crop testing. `apply` makes
// the uint8 crops the network's float input on the raw 0..255 scale: it subtracts the
// mean (the paper's mean image, cropped at each crop's window and mirrored with it, or
// per-channel means), adds the PCA colour offsets of training (Section 4.1(b)), and
// divides by a standard deviation where there is one (torchvision's preprocessing).
//
//   auto [model, pre] = alexnet::load_for_inference("run/best.pt");

#include <alexnet/network/checkpoint.h>
#include <alexnet/network/model.h>
#include <alexnet/network/names.h>
#include <alexnet/network/precision.h>

#include <c10/core/Device.h>

#include <string>
#include <utility>
#include <vector>

namespace alexnet {

/// What is subtracted from the pixels.
enum class Mean {
  kImage,     ///< The mean image over the training set, at each crop's window (Section 2; Caffe's).
  kChannels,  ///< One mean per colour channel (torchvision's; a common simplification).
};

template <>
const std::vector<std::pair<std::string, Mean>>& names<Mean>();  ///< image, channels

struct Preprocessing {
  std::vector<std::string> classes;  ///< one name per output of the network
  torch::Tensor mean_rgb;            ///< float64 [3], 0..255
  int64_t resize = 256;              ///< side images are brought to (Section 2: 256)
  int64_t crop = 227;                ///< side of the network's input
  torch::Tensor std_rgb;             ///< float64 [3], 0..255; undefined: not divided (the paper)
  Mean mean = Mean::kChannels;
  torch::Tensor mean_image;          ///< float32 [3, resize, resize], 0..255 (Mean::kImage)

  /// torchvision's ImageNet pipeline: shorter side 256, centre 224, pixels scaled to
  /// 0..1 and normalised by mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
  static Preprocessing torchvision(std::vector<std::string> classes);

  /// From a data set's statistics (<alexnet/data/statistics.h>): `mean_image` float64
  /// [3, S, S] at any side S (resampled to `resize` when S differs), `mean_rgb` [3].
  static Preprocessing from_statistics(std::vector<std::string> classes, Mean mean, const torch::Tensor& mean_image,
                                       const torch::Tensor& mean_rgb, int64_t resize, int64_t crop);

  /// The network's input on `device`, float32 [B, 3, crop, crop], from uint8 crops
  /// `images` [B, 3, crop, crop]. `windows` int64 [B, 3] holds each crop's (y0, x0,
  /// flip) in its resize x resize image (undefined: the centre, unflipped); `colour`
  /// float32 [B, 3] offsets to add (undefined: none). Throws naming a shape that does
  /// not fit.
  torch::Tensor apply(const torch::Tensor& images, const torch::Tensor& windows, const torch::Tensor& colour,
                      const c10::Device& device) const;

  /// Everything but the mean image's values as one JSON object: {"classes": [...],
  /// "resize", "crop", "mean": "image"|"channels", "mean_rgb": [3], "std_rgb": [3] or
  /// null, "mean_image": {"shape": [3, S, S], "dtype": "float32"} or null}. What
  /// checkpoints carry (the mean image beside it, as a tensor) and exported files
  /// state (the mean image where the exporter puts it).
  std::string to_json() const;
  /// Reads what to_json wrote, with the mean image (`Mean::kImage`) given apart.
  /// Throws std::invalid_argument naming the field that is missing or malformed (a crop
  /// larger than the resize, a std that is not positive, a mean image of another shape).
  static Preprocessing from_json(const std::string& text, const torch::Tensor& mean_image = {});

  /// Adds the classes and preprocessing to a checkpoint's extras: "preprocessing"
  /// (to_json) and, for Mean::kImage, the tensor "mean_image".
  void add_to(CheckpointExtras& extras) const;
  /// From a checkpoint's extras; throws naming `path` when they are missing or malformed.
  static Preprocessing from(const CheckpointExtras& extras, const std::string& path);
};

/// A checkpoint's model (on the CPU, in eval mode) and preprocessing, from one read of
/// the file: what evaluation, classification and features need. `precision` (kAuto:
/// bf16 where this CPU multiplies in bf16, else fp32; see <alexnet/network/precision.h>)
/// is the type the weights are kept in: bf16 reads them from the file straight into
/// bfloat16 (half the memory) with the convolutions' weights channels-last; infer with
/// the same precision in InferenceOptions. No random initialisation is done, no
/// random number drawn, and the file's bytes are read once.
std::pair<AlexNet, Preprocessing> load_for_inference(const std::string& path, Precision precision = Precision::kFp32);

/// Converts torchvision's weights (a file `torch.save` wrote; see <alexnet/network/pytorch.h>)
/// into a checkpoint at `checkpoint` carrying torchvision's preprocessing and `classes`
/// (one name per output; empty: named by index). Throws naming the file, or the class
/// count, before anything is written.
AlexNet convert_torchvision(const std::string& weights, const std::string& checkpoint,
                            std::vector<std::string> classes = {});

}  // namespace alexnet
