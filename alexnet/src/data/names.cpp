// Class names in Unicode's normalisation form C (data::nfc), through ICU's normaliser
// where the build has it. No LibTorch here: compiled without the precompiled header.

#include <alexnet/data/source.h>

#ifdef ALEXNET_WITH_ICU
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>
#endif

namespace alexnet::data {
namespace {

// Whether `s` is UTF-8 (ICU would replace what is not, and change the name).
bool utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xE ? 2 : (c >> 3) == 0x1E ? 3 : 9;
    if (extra == 9 || i + extra >= s.size()) return false;
    for (size_t k = 1; k <= extra; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return false;
    }
    i += extra + 1;
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
