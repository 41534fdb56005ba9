#include "network/pickle.h"

#include "network/file_kind.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

namespace alexnet::detail {
namespace {

using Kind = PickleValue::Kind;

// Python's pickle opcodes (Lib/pickletools.py), the ones PyTorch files use.
enum Op : uint8_t {
  kMark = '(', kStop = '.', kPop = '0', kPopMark = '1', kDup = '2', kBinInt = 'J', kBinInt1 = 'K',
  kBinInt2 = 'M', kNone = 'N', kBinPersId = 'Q', kReduce = 'R', kBinString = 'T', kShortBinString = 'U',
  kBinUnicode = 'X', kAppend = 'a', kBuild = 'b', kGlobal = 'c', kDict = 'd', kEmptyDict = '}',
  kAppends = 'e', kBinGet = 'h', kLongBinGet = 'j', kList = 'l', kEmptyList = ']', kBinPut = 'q',
  kLongBinPut = 'r', kSetItem = 's', kTuple = 't', kEmptyTuple = ')', kSetItems = 'u', kBinFloat = 'G',
  kBinBytes = 'B', kShortBinBytes = 'C', kProto = 0x80, kTuple1 = 0x85, kTuple2 = 0x86, kTuple3 = 0x87,
  kNewTrue = 0x88, kNewFalse = 0x89, kLong1 = 0x8a, kShortBinUnicode = 0x8c, kBinUnicode8 = 0x8d,
  kStackGlobal = 0x93, kMemoize = 0x94, kFrame = 0x95, kNewObj = 0x81,
};

// LibTorch's archives (torch::serialize, our checkpoints) pickle a TorchScript object
// of this class whose attributes are the archive's entries.
constexpr const char* kScriptObject = "__torch__.Module";

// The only Python globals a state dict or a LibTorch archive needs; anything else is
// refused by name.
const std::map<std::string, Kind>& allowed_globals() {
  static const std::map<std::string, Kind> globals = [] {
    std::map<std::string, Kind> g{{"collections.OrderedDict", Kind::kDict},
                                  {kScriptObject, Kind::kDict},
                                  {"torch.jit._pickle.restore_type_tag", Kind::kDict},
                                  {"torch._utils._rebuild_tensor_v2", Kind::kTensor},
                                  {"torch._utils._rebuild_parameter", Kind::kTensor},
                                  {"torch._utils._rebuild_parameter_with_state", Kind::kTensor}};
    for (const char* type : {"Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"}) {
      g[std::string("torch.") + type + "Storage"] = Kind::kStorage;
    }
    return g;
  }();
  return globals;
}

PickleValuePtr make(Kind kind) {
  auto v = std::make_shared<PickleValue>();
  v->kind = kind;
  return v;
}

class Reader {
 public:
  Reader(const char* data, size_t size, size_t offset, const PersistentLoad& persistent_load)
      : data_(data), size_(size), at_(offset), persistent_load_(persistent_load) {}

  PickleValuePtr run() {
    for (;;) {
      const size_t op_at = at_;
      const auto op = static_cast<uint8_t>(*take(1));
      switch (op) {
        case kProto: {
          const auto version = static_cast<uint8_t>(*take(1));
          // Python's pickle reads protocols up to 5; torch.save writes 2.
          if (version > 5) fail("protocol " + std::to_string(version) + ", where pickle has 0 to 5");
          break;
        }
        case kFrame: take(8); break;
        case kStop:
          if (stack_.size() != 1 || !marks_.empty()) fail("ends with " + std::to_string(stack_.size()) + " values");
          return stack_.back();
        case kMark: marks_.push_back(stack_.size()); break;
        case kPop: pop(); break;
        case kPopMark: since_mark(); break;
        case kDup: push(top()); break;
        case kNone: push(make(Kind::kNone)); break;
        case kNewTrue: case kNewFalse: {
          auto v = make(Kind::kBool);
          v->integer = op == kNewTrue;
          push(v);
          break;
        }
        case kBinInt: push_int(static_cast<int32_t>(little(4))); break;
        case kBinInt1: push_int(static_cast<int64_t>(little(1))); break;
        case kBinInt2: push_int(static_cast<int64_t>(little(2))); break;
        case kLong1: long1(); break;
        case kBinFloat: {
          const uint64_t bits = big(8);
          double d;
          std::memcpy(&d, &bits, 8);
          auto v = make(Kind::kFloat);
          v->real = d;
          push(v);
          break;
        }
        case kShortBinUnicode: case kShortBinString: case kShortBinBytes: push_string(little(1)); break;
        case kBinUnicode: case kBinString: case kBinBytes: push_string(little(4)); break;
        case kBinUnicode8: push_string(little(8)); break;
        case kEmptyTuple: push(make(Kind::kTuple)); break;
        case kTuple: {
          auto v = make(Kind::kTuple);
          v->items = since_mark();
          push(v);
          break;
        }
        case kTuple1: case kTuple2: case kTuple3: {
          const size_t n = op - kTuple1 + 1;
          if (stack_.size() < floor() + n) fail("TUPLE" + std::to_string(n) + " on a short stack");
          auto v = make(Kind::kTuple);
          v->items.assign(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
          stack_.resize(stack_.size() - n);
          push(v);
          break;
        }
        case kEmptyList: push(make(Kind::kList)); break;
        case kList: {
          auto v = make(Kind::kList);
          v->items = since_mark();
          push(v);
          break;
        }
        case kAppend: {
          auto item = pop();
          expect(top(), Kind::kList, "APPEND")->items.push_back(item);
          break;
        }
        case kAppends: {
          auto items = since_mark();
          auto& list = expect(top(), Kind::kList, "APPENDS")->items;
          list.insert(list.end(), items.begin(), items.end());
          break;
        }
        case kEmptyDict: push(make(Kind::kDict)); break;
        case kDict: {
          auto v = make(Kind::kDict);
          set_items(*v, since_mark());
          push(v);
          break;
        }
        case kSetItem: {
          auto value = pop();
          auto key = pop();
          set_items(*expect(top(), Kind::kDict, "SETITEM"), {key, value});
          break;
        }
        case kSetItems: {
          auto items = since_mark();
          set_items(*expect(top(), Kind::kDict, "SETITEMS"), items);
          break;
        }
        case kBinPut: memo_[little(1)] = top(); break;
        case kLongBinPut: memo_[little(4)] = top(); break;
        case kMemoize: memo_[memo_.size()] = top(); break;
        case kBinGet: get(little(1)); break;
        case kLongBinGet: get(little(4)); break;
        case kGlobal: {
          auto module = line();
          push_global(module + "." + line());
          break;
        }
        case kStackGlobal: {
          auto name = expect(pop(), Kind::kString, "STACK_GLOBAL");
          auto module = expect(pop(), Kind::kString, "STACK_GLOBAL");
          push_global(module->text + "." + name->text);
          break;
        }
        case kReduce: {
          auto args = expect(pop(), Kind::kTuple, "REDUCE");
          auto callable = expect(pop(), Kind::kGlobal, "REDUCE");
          push(reduce(*callable, args->items));
          break;
        }
        case kNewObj: {
          // cls.__new__(cls, *args): only LibTorch's script object, empty until BUILD.
          auto args = expect(pop(), Kind::kTuple, "NEWOBJ");
          auto cls = expect(pop(), Kind::kGlobal, "NEWOBJ");
          if (cls->text != kScriptObject || !args->items.empty()) fail("NEWOBJ of " + cls->text);
          auto object = make(Kind::kDict);
          object->text = cls->text;
          push(object);
          break;
        }
        case kBuild: {
          // A script object's state is its attributes. An OrderedDict's state
          // (state_dict's `_metadata`) and a parameter's attributes carry nothing the
          // weights need.
          auto state = pop();
          const auto& target = top();
          if (target->kind == Kind::kDict && target->text == kScriptObject) {
            if (state->kind != Kind::kDict || !target->entries.empty()) fail("BUILD of a script object with " + state->describe());
            target->entries = state->entries;
            break;
          }
          if (target->kind != Kind::kDict && target->kind != Kind::kTensor) fail("BUILD on " + target->describe());
          break;
        }
        case kBinPersId: {
          auto id = pop();
          auto storage = persistent_load_(*id);
          push(storage);
          break;
        }
        default: {
          std::ostringstream message;
          message << "unsupported pickle opcode 0x" << std::hex << static_cast<int>(op) << std::dec << " at byte "
                  << op_at;
          throw std::runtime_error(message.str());
        }
      }
    }
  }

  size_t offset() const { return at_; }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("malformed pickle at byte " + std::to_string(at_) + ": " + what);
  }

  const char* take(size_t n) {
    if (n > size_ - at_) throw std::runtime_error("the file is truncated (pickle data ends early)");
    const char* p = data_ + at_;
    at_ += n;
    return p;
  }

  uint64_t little(size_t n) {
    const auto* p = reinterpret_cast<const uint8_t*>(take(n));
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
  }

  uint64_t big(size_t n) {
    const auto* p = reinterpret_cast<const uint8_t*>(take(n));
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v = (v << 8) | p[i];
    return v;
  }

  std::string line() {
    const size_t start = at_;
    while (at_ < size_ && data_[at_] != '\n') ++at_;
    if (at_ == size_) throw std::runtime_error("the file is truncated (pickle data ends early)");
    return std::string(data_ + start, data_ + at_++);
  }

  void push(PickleValuePtr v) {
    if (stack_.size() >= kMaxStack) fail("stack deeper than " + std::to_string(kMaxStack));
    // Every value pushed costs memory whatever becomes of it: a small file must not
    // build gigabytes of them (state dicts and checkpoints push a few thousand).
    if (++pushed_ > kMaxValues) fail("more than " + std::to_string(kMaxValues) + " values");
    stack_.push_back(std::move(v));
  }

  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }

  PickleValuePtr pop() {
    if (stack_.size() <= floor()) fail("pop from an empty stack");
    auto v = stack_.back();
    stack_.pop_back();
    return v;
  }

  const PickleValuePtr& top() {
    if (stack_.size() <= floor()) fail("read from an empty stack");
    return stack_.back();
  }

  std::vector<PickleValuePtr> since_mark() {
    if (marks_.empty()) fail("no MARK");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<PickleValuePtr> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }

  const PickleValuePtr& expect(const PickleValuePtr& v, Kind kind, const char* op) {
    if (v->kind != kind) fail(std::string(op) + " on " + v->describe());
    return v;
  }

  void push_int(int64_t i) {
    auto v = make(Kind::kInt);
    v->integer = i;
    push(v);
  }

  // Python ints of any size: little-endian two's complement. PyTorch's legacy magic
  // number needs 10 bytes; anything up to 8 becomes an int64.
  void long1() {
    const size_t n = little(1);
    const char* p = take(n);
    if (n > 8) {
      auto v = make(Kind::kBigInt);
      v->text.assign(p, n);
      push(v);
      return;
    }
    uint64_t u = 0;
    for (size_t i = 0; i < n; ++i) u |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
    if (n > 0 && n < 8 && (static_cast<uint8_t>(p[n - 1]) & 0x80)) u |= ~uint64_t{0} << (8 * n);
    push_int(static_cast<int64_t>(u));
  }

  void push_string(uint64_t n) {
    if (n > size_ - at_) throw std::runtime_error("the file is truncated (pickle data ends early)");
    auto v = make(Kind::kString);
    v->text.assign(take(n), n);
    push(v);
  }

  void get(uint64_t key) {
    const auto it = memo_.find(key);
    if (it == memo_.end()) fail("memo entry " + std::to_string(key) + " was never stored");
    push(it->second);
  }

  void set_items(PickleValue& dict, const std::vector<PickleValuePtr>& items) {
    if (items.size() % 2) fail("odd number of dict items");
    for (size_t i = 0; i < items.size(); i += 2) {
      bool replaced = false;
      for (auto& entry : dict.entries) {
        if (entry.first->kind == items[i]->kind && entry.first->kind == Kind::kString &&
            entry.first->text == items[i]->text) {
          entry.second = items[i + 1];
          replaced = true;
        }
      }
      if (!replaced) dict.entries.emplace_back(items[i], items[i + 1]);
    }
  }

  void push_global(const std::string& name) {
    const auto it = allowed_globals().find(name);
    if (it == allowed_globals().end()) {
      throw std::runtime_error("refusing the Python global '" + printable(name) +
                               "': a state dict or checkpoint needs only tensors, dicts and storages, and a pickle "
                               "that names anything else is not loaded");
    }
    auto v = make(Kind::kGlobal);
    v->text = name;
    push(v);
  }

  static int64_t as_int(const PickleValuePtr& v, const char* what) {
    if (v->kind != Kind::kInt) throw std::runtime_error(std::string("tensor ") + what + " is " + v->describe());
    return v->integer;
  }

  PickleValuePtr reduce(const PickleValue& callable, const std::vector<PickleValuePtr>& args) {
    const auto& name = callable.text;
    if (name == "collections.OrderedDict") {
      if (!args.empty()) fail("OrderedDict with arguments");
      return make(Kind::kDict);
    }
    if (name == "torch.jit._pickle.restore_type_tag") {
      // (value, "Dict[str, Tensor]"): the value, its TorchScript type noted.
      if (args.size() != 2 || args[1]->kind != Kind::kString) fail("restore_type_tag with unexpected arguments");
      return args[0];
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      if (args.empty() || args[0]->kind != Kind::kTensor) fail(name + " without a tensor");
      return args[0];
    }
    if (name == "torch._utils._rebuild_tensor_v2") {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      if (args.size() < 4 || args[0]->kind != Kind::kStorage || args[2]->kind != Kind::kTuple ||
          args[3]->kind != Kind::kTuple || args[2]->items.size() != args[3]->items.size()) {
        fail("_rebuild_tensor_v2 with unexpected arguments");
      }
      const auto& storage = *args[0];
      const int64_t offset = as_int(args[1], "offset");
      std::vector<int64_t> sizes, strides;
      int64_t last = offset;  // the largest element index the view reaches
      bool empty = false;
      for (size_t d = 0; d < args[2]->items.size(); ++d) {
        sizes.push_back(as_int(args[2]->items[d], "size"));
        strides.push_back(as_int(args[3]->items[d], "stride"));
        if (sizes.back() < 0 || strides.back() < 0) fail("negative tensor size or stride");
        if (sizes.back() == 0) empty = true;
        int64_t reach = 0;
        if (sizes.back() > 0 && (__builtin_mul_overflow(sizes.back() - 1, strides.back(), &reach) ||
                                 __builtin_add_overflow(last, reach, &last))) {
          fail("a tensor's sizes and strides overflow");
        }
      }
      if (offset < 0) fail("a tensor starts at element " + std::to_string(offset) + " of its storage");
      if (!empty && last >= storage.numel) {
        throw std::runtime_error("a tensor reaches element " + std::to_string(last) + " of a storage of " +
                                 std::to_string(storage.numel));
      }
      auto v = make(Kind::kTensor);
      v->tensor = storage.tensor.as_strided(sizes, strides, storage.integer + offset);
      return v;
    }
    fail("cannot call " + name);
  }

  static constexpr size_t kMaxStack = 1 << 20;
  static constexpr size_t kMaxValues = 1 << 20;
  size_t pushed_ = 0;
  const char* data_;
  size_t size_, at_;
  const PersistentLoad& persistent_load_;
  std::vector<PickleValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValuePtr> memo_;
};

// --- writing -------------------------------------------------------------------

class Writer {
 public:
  void op(uint8_t o) { out_.push_back(static_cast<char>(o)); }

  void global(const std::string& module, const std::string& name) {
    op(kGlobal);
    out_ += module + "\n" + name + "\n";
  }

  void string(const std::string& s) {
    op(kBinUnicode);
    raw(s.size(), 4);
    out_ += s;
  }

  void integer(int64_t i) {
    if (i >= INT32_MIN && i <= INT32_MAX) {
      op(kBinInt);
      raw(static_cast<uint64_t>(static_cast<int32_t>(i)) & 0xffffffffu, 4);
    } else {
      op(kLong1);
      op(8);
      raw(static_cast<uint64_t>(i), 8);
    }
  }

  void ints(at::IntArrayRef values) {
    if (values.empty()) return op(kEmptyTuple);
    op(kMark);
    for (auto v : values) integer(v);
    op(kTuple);
  }

  std::string& bytes() { return out_; }

 private:
  void raw(uint64_t v, size_t n) {
    for (size_t i = 0; i < n; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string out_;
};

const char* storage_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat: return "FloatStorage";
    case c10::kDouble: return "DoubleStorage";
    case c10::kHalf: return "HalfStorage";
    case c10::kBFloat16: return "BFloat16Storage";
    case c10::kLong: return "LongStorage";
    case c10::kInt: return "IntStorage";
    case c10::kShort: return "ShortStorage";
    case c10::kChar: return "CharStorage";
    case c10::kByte: return "ByteStorage";
    case c10::kBool: return "BoolStorage";
    default: throw std::invalid_argument(std::string("cannot write tensors of type ") + c10::toString(dtype));
  }
}

}  // namespace

PickleValue::~PickleValue() {
  std::vector<PickleValuePtr> pending;
  auto adopt = [&](PickleValue& v) {
    for (auto& item : v.items) pending.push_back(std::move(item));
    for (auto& [key, value] : v.entries) {
      pending.push_back(std::move(key));
      pending.push_back(std::move(value));
    }
    v.items.clear();
    v.entries.clear();
  };
  adopt(*this);
  while (!pending.empty()) {
    auto value = std::move(pending.back());
    pending.pop_back();
    // The last owner empties it first, so that freeing it frees no nested value.
    if (value && value.use_count() == 1) adopt(*value);
  }
}

std::string PickleValue::describe() const {
  switch (kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return integer ? "True" : "False";
    case Kind::kInt: return "the integer " + std::to_string(integer);
    case Kind::kBigInt: return "a large integer";
    case Kind::kFloat: return "a float";
    case Kind::kString: return "the string '" + text.substr(0, 64) + "'";
    case Kind::kTuple: return "a tuple of " + std::to_string(items.size());
    case Kind::kList: return "a list of " + std::to_string(items.size());
    case Kind::kDict: return "a dict of " + std::to_string(entries.size());
    case Kind::kGlobal: return "the global " + text;
    case Kind::kStorage: return "a storage";
    case Kind::kTensor: return "a tensor";
  }
  return "?";
}

PickleValuePtr unpickle(const char* data, size_t size, size_t* offset, const PersistentLoad& persistent_load) {
  Reader reader(data, size, *offset, persistent_load);
  auto value = reader.run();
  *offset = reader.offset();
  return value;
}

StorageId parse_storage_id(const PickleValue& id) {
  const auto& t = id.items;
  if (id.kind != Kind::kTuple || t.size() < 5 || t[0]->kind != Kind::kString || t[0]->text != "storage" ||
      t[1]->kind != Kind::kGlobal || t[2]->kind != Kind::kString || t[4]->kind != Kind::kInt) {
    throw std::runtime_error("unexpected persistent id (" + id.describe() + "), not a PyTorch storage");
  }
  // torch.save's keys are numbers ("0", "1", ...): a key is printed in messages, so
  // one that could carry anything else (terminal escapes, megabytes) is refused here.
  const auto& key = t[2]->text;
  const bool plain = !key.empty() && key.size() <= 64 && std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
  });
  if (!plain) throw std::runtime_error("a storage key '" + printable(key) + "' that torch.save does not write");
  if (t[4]->integer < 0) {
    throw std::runtime_error("storage '" + key + "' has " + std::to_string(t[4]->integer) + " elements");
  }
  StorageId s{t[2]->text, storage_dtype(t[1]->text), t[4]->integer};
  if (t.size() > 5 && t[5]->kind != Kind::kNone) s.view = t[5].get();
  return s;
}

PickleValuePtr storage_value(const at::Tensor& root, int64_t offset, int64_t numel) {
  auto v = make(Kind::kStorage);
  v->tensor = root;
  v->integer = offset;
  v->numel = numel;
  return v;
}

c10::ScalarType storage_dtype(const std::string& global) {
  static const std::map<std::string, c10::ScalarType> types{
      {"torch.FloatStorage", c10::kFloat}, {"torch.DoubleStorage", c10::kDouble},
      {"torch.HalfStorage", c10::kHalf},   {"torch.BFloat16Storage", c10::kBFloat16},
      {"torch.LongStorage", c10::kLong},   {"torch.IntStorage", c10::kInt},
      {"torch.ShortStorage", c10::kShort}, {"torch.CharStorage", c10::kChar},
      {"torch.ByteStorage", c10::kByte},   {"torch.BoolStorage", c10::kBool}};
  const auto it = types.find(global);
  if (it == types.end()) throw std::runtime_error("unknown storage type '" + global + "'");
  return it->second;
}

std::string pickle_state_dict(const std::vector<std::pair<std::string, at::Tensor>>& entries) {
  Writer w;
  w.op(kProto);
  w.op(2);
  w.global("collections", "OrderedDict");
  w.op(kEmptyTuple);
  w.op(kReduce);
  w.op(kMark);
  std::vector<at::Tensor> storages;
  for (const auto& [name, value] : entries) {
    const auto tensor = value.detach().to(c10::kCPU).contiguous();
    w.string(name);
    w.global("torch._utils", "_rebuild_tensor_v2");
    w.op(kMark);
    // Persistent id: ('storage', torch.<Type>Storage, key, location, numel).
    w.op(kMark);
    w.string("storage");
    w.global("torch", storage_name(tensor.scalar_type()));
    w.string(std::to_string(storages.size()));
    w.string("cpu");
    w.integer(tensor.numel());
    w.op(kTuple);
    w.op(kBinPersId);
    w.integer(0);
    w.ints(tensor.sizes());
    w.ints(tensor.strides());
    w.op(kNewFalse);
    w.global("collections", "OrderedDict");
    w.op(kEmptyTuple);
    w.op(kReduce);
    w.op(kTuple);
    w.op(kReduce);
    storages.push_back(tensor);
  }
  w.op(kSetItems);
  w.op(kStop);

  std::string zip;
  caffe2::serialize::PyTorchStreamWriter writer([&](const void* p, size_t n) {
    zip.append(static_cast<const char*>(p), n);
    return n;
  });
  writer.writeRecord("data.pkl", w.bytes().data(), w.bytes().size());
  writer.writeRecord("byteorder", "little", 6);
  for (size_t i = 0; i < storages.size(); ++i) {
    writer.writeRecord("data/" + std::to_string(i), storages[i].data_ptr(), storages[i].nbytes());
  }
  writer.writeEndOfFile();
  return zip;
}

}  // namespace alexnet::detail
