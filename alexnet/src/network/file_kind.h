#pragma once

// Internal: what a file is, from its first bytes, when it is one that users give in
// place of another (a failed download's HTML page, a Git LFS pointer, an archive, an
// image, PyTorch's own files), with what to do about it. Messages name the file's kind
// and never echo its bytes.

#include <string>

namespace alexnet::detail {

/// What `path` was expected to be.
enum class Expected {
  kCheckpoint,  ///< weights alexnet reads: a checkpoint of ours
  kListFile,    ///< a data set given as a file: lines "path label"
};

/// "" when nothing in the first bytes of `path` says it is not `expected`; otherwise one
/// phrase saying what it is and what to do ("an HTML page, not weights: the download
/// failed (open it to read why)"). The zip archives PyTorch writes are told apart by
/// their entries' names (a torch.save file has data.pkl and no constants.pkl; a
/// TorchScript module has code/__torch__/ entries of its own classes).
std::string foreign_file(const std::string& path, Expected expected);

/// What `path` is (after symbolic links) when reading it could block or never end: "a
/// FIFO (named pipe)", "a socket", "a character device" or "a block device"; "" for a
/// regular file, a folder or a path that does not exist (their readers say why).
std::string special_file(const std::string& path);

/// `text` as it may be printed: bytes that are not printable ASCII or UTF-8 become
/// "\xNN", and at most `limit` characters are kept ("..." marks the cut).
std::string printable(const std::string& text, size_t limit = 80);

}  // namespace alexnet::detail
