// Class names in Unicode's normalisation form C (data::nfc), through ICU's normaliser
// where the build has it. No LibTorch here: compiled without the precompiled header.

#include <alexnet/data/source.h>

#include "network/text.h"

#ifdef ALEXNET_WITH_ICU
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>
#endif

namespace alexnet::data {
namespace {

// Whether `s` is UTF-8 (ICU would replace what is not, and change the name).
bool utf8(const std::string& s) {
  for (size_t i = 0, n = 0; i < s.size(); i += n) {
    n = detail::utf8_length(s, i);
    if (n == 0 || i + n > s.size()) return false;
  }
  return true;
}

}  // namespace

std::string nfc(const std::string& name) {
  bool ascii = true;
  for (const char c : name) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii || !utf8(name)) return name;
#ifdef ALEXNET_WITH_ICU
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) return name;
  const auto normal = normalizer->normalize(icu::UnicodeString::fromUTF8(name), status);
  if (U_FAILURE(status)) return name;
  std::string out;
  normal.toUTF8String(out);
  return out;
#else
  return name;
#endif
}

bool nfc_available() {
#ifdef ALEXNET_WITH_ICU
  return true;
#else
  return false;
#endif
}

}  // namespace alexnet::data
