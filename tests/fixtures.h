#pragma once

// Data sets the data, training and distributed tests write (needs alexnet::data).

#include <string>

namespace alexnet::test {

/// Two classes a small network can tell apart, reddish and bluish noise, as 40x40
/// PNG files in a fresh folder `root/<class>/<i>.png`; returns the folder.
std::string make_colours(const std::string& name, int per_class);

}  // namespace alexnet::test
