// A program using the network alone, built by the tests against the installed library and
// through add_subdirectory.
#include <alexnet/network/model.h>

#include <iostream>

int main() {
  torch::manual_seed(0);
  alexnet::AlexNet net(alexnet::AlexNetOptions::paper().num_classes(10));
  net->eval();
  torch::NoGradGuard no_grad;
  const auto probabilities = net->forward(torch::randn({2, 3, 227, 227})).softmax(1);
  std::cout << "probabilities " << probabilities.sizes() << "\n";
  return probabilities.sizes() == torch::IntArrayRef({2, 10}) ? 0 : 1;
}
