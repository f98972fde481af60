// SplitMix64 (Steele, Lea & Flood 2014): the metrics' own seeded stream,
// independent of torch's generators and of the standard library.
#pragma once

#include <cstdint>
#include <string>

namespace groklab::metrics {

class SplitMix64 {
 public:
  // A stream seeded by seed, mixed with each byte of salt (FNV-1a style).
  explicit SplitMix64(uint64_t seed, const std::string& salt = std::string()) : state_(seed) {
    for (unsigned char c : salt) state_ = (state_ ^ c) * 0x100000001b3ULL;
  }

  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  // Uniform in [0, range), range ≥ 1, without modulo bias.
  uint64_t below(uint64_t range) {
    const uint64_t limit = ~uint64_t{0} - (~uint64_t{0} % range);
    uint64_t x = next();
    while (x >= limit) x = next();
    return x % range;
  }

 private:
  uint64_t state_;
};

}  // namespace groklab::metrics
