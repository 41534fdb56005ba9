#pragma once

// A per-layer account of a network: output shapes, parameters and multiply-adds.

#include <alexnet/network/model.h>

#include <cstdint>
#include <string>
#include <vector>

namespace alexnet {

struct LayerSummary {
  std::string name;             ///< conv1 .. fc8, lrn1, pool1, ...
  int64_t tower;                ///< 0 or 1; -1 for one-tower networks
  std::vector<int64_t> output;  ///< per image: [C, H, W] or [features]
  int64_t parameters;
  int64_t macs;                 ///< multiply-adds per image (convolutions and fc layers)
};

struct ModelSummary {
  std::string architecture;
  int64_t input_size = 0;
  std::string activation;     ///< relu or tanh (Section 3.1)
  int64_t pool_size = 0;      ///< max pooling's window z (Section 3.4)
  int64_t pool_stride = 0;    ///< and its stride s
  std::vector<LayerSummary> layers;
  int64_t parameters = 0;  ///< every parameter of the module
  int64_t macs = 0;        ///< multiply-adds per image

  /// A plain-text table with a totals line.
  std::string to_table() const;
  /// One JSON object: architecture, input_size, layers, parameters, macs.
  std::string to_json() const;
};

/// Shapes follow from the options; parameters and multiply-adds from the module's
/// own weights, so the two cannot drift apart.
ModelSummary summarize(const AlexNetImpl& model);

}  // namespace alexnet
