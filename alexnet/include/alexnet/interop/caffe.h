#pragma once

// Caffe import (target alexnet::interop, built with Debian's protobuf): the world's
// best-known AlexNet weights, BVLC's bvlc_alexnet.caffemodel and
// bvlc_reference_caffenet.caffemodel, as our checkpoints.
//
//   alexnet::CaffeOptions options;
//   options.mean = "imagenet_mean.binaryproto";
//   alexnet::convert_caffe("bvlc_alexnet.caffemodel", "bvlc_alexnet.pt", options);
//
// Caffe's semantics hold exactly: its LRN spans both towers' channels (the caffe
// preset's lrn_across_towers, k = 1, alpha averaged), CaffeNet pools before it
// normalises (pool_before_lrn), its pooling rounds up (ceil_mode), and its inputs
// are BGR at 0..255 minus the mean image: conv1's input channels are permuted so
// that our RGB input gives Caffe's logits.

#include <alexnet/network/model.h>
#include <alexnet/network/preprocessing.h>

#include <string>
#include <utility>
#include <vector>

namespace alexnet {

struct CaffeOptions {
  /// Caffe's mean image (a BlobProto, `.binaryproto`: [1, 3, S, S] BGR); empty: the
  /// channel means of Caffe's ImageNet mean, BGR (104.01, 116.67, 122.68).
  std::string mean;
  /// One name per output of fc8; empty: named by index.
  std::vector<std::string> classes;
  /// The network's input side (Caffe's crop_size): 227 for BVLC's models.
  int64_t input_size = 227;
};

/// The network and preprocessing a `.caffemodel` holds: Caffe's binary NetParameter,
/// in its current form (`layer`) or its V1 form (`layers`). Layers must be AlexNet's:
/// conv1..conv5 (96, 256 in two groups, 384, 384 and 256 in two groups), fc6..fc8, two
/// LRN and three max pooling layers in bvlc_alexnet's or CaffeNet's order; data, ReLU,
/// dropout, softmax, loss and accuracy layers are structure and carry no weights.
/// Throws std::runtime_error naming the file and the first layer that differs (its
/// name, type and what was expected). Every length in the file is checked against
/// what remains of it before anything is allocated.
std::pair<AlexNet, Preprocessing> read_caffe(const std::string& caffemodel, const CaffeOptions& options = {});

/// read_caffe, then a checkpoint at `checkpoint` carrying the model and preprocessing.
/// Nothing is written when the file is refused.
AlexNet convert_caffe(const std::string& caffemodel, const std::string& checkpoint, const CaffeOptions& options = {});

}  // namespace alexnet
