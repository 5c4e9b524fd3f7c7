#include "kalm/eval/tfidf.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "kalm/error.h"
#include "kalm/eval/bm25.h"

namespace kalm::eval {

std::string_view tfidf_features_name(TfidfFeatures features) {
  return features == TfidfFeatures::kWords ? "words" : "char-trigrams";
}

std::vector<std::string> tfidf_features_of(std::string_view text, TfidfFeatures features, std::string_view what) {
  std::vector<std::string> tokens = bm25_tokenize(text, what);
  if (features == TfidfFeatures::kWords) return tokens;
  std::vector<std::string> grams;
  for (const auto& token : tokens) {
    const std::string padded = " " + token + " ";
    // Byte offsets where code points start (bm25_tokenize returns valid UTF-8).
    std::vector<std::size_t> starts;
    for (std::size_t i = 0; i < padded.size(); ++i)
      if ((static_cast<unsigned char>(padded[i]) & 0xC0) != 0x80) starts.push_back(i);
    starts.push_back(padded.size());
    const std::size_t points = starts.size() - 1;
    if (points < 3) {
      grams.push_back(padded);
      continue;
    }
    for (std::size_t k = 0; k + 3 <= points; ++k) grams.push_back(padded.substr(starts[k], starts[k + 3] - starts[k]));
  }
  return grams;
}

torch::Tensor tfidf_vectors(const std::vector<std::string>& texts, TfidfFeatures features, std::int64_t max_features,
                            std::string_view what) {
  if (max_features < 1) throw UsageError("TF-IDF needs max_features >= 1, got " + std::to_string(max_features));
  std::unordered_map<std::string, std::int64_t> id_of;
  std::vector<std::string> names;
  std::vector<double> total;
  std::vector<std::int64_t> df;
  std::vector<std::vector<std::pair<std::int64_t, double>>> rows(texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto grams = tfidf_features_of(texts[i], features, std::string(what) + " (text " + std::to_string(i) + ")");
    std::unordered_map<std::int64_t, double> counts;
    for (const auto& g : grams) {
      auto [it, fresh] = id_of.emplace(g, static_cast<std::int64_t>(names.size()));
      if (fresh) {
        names.push_back(g);
        total.push_back(0);
        df.push_back(0);
      }
      counts[it->second] += 1;
    }
    for (const auto& [k, c] : counts) {
      total[static_cast<std::size_t>(k)] += c;
      ++df[static_cast<std::size_t>(k)];
      rows[i].emplace_back(k, c);
    }
  }
  // The kept features, in byte order.
  std::vector<std::int64_t> kept(names.size());
  std::iota(kept.begin(), kept.end(), 0);
  if (static_cast<std::int64_t>(kept.size()) > max_features) {
    std::sort(kept.begin(), kept.end(), [&](std::int64_t a, std::int64_t b) {
      const auto ua = static_cast<std::size_t>(a), ub = static_cast<std::size_t>(b);
      return total[ua] != total[ub] ? total[ua] > total[ub] : names[ua] < names[ub];
    });
    kept.resize(static_cast<std::size_t>(max_features));
  }
  std::sort(kept.begin(), kept.end(),
            [&](std::int64_t a, std::int64_t b) { return names[static_cast<std::size_t>(a)] < names[static_cast<std::size_t>(b)]; });
  std::vector<std::int64_t> column(names.size(), -1);
  for (std::size_t c = 0; c < kept.size(); ++c) column[static_cast<std::size_t>(kept[c])] = static_cast<std::int64_t>(c);

  const double n = static_cast<double>(texts.size());
  const auto width = std::max<std::int64_t>(1, static_cast<std::int64_t>(kept.size()));
  torch::Tensor out = torch::zeros({static_cast<std::int64_t>(texts.size()), width}, torch::kFloat32);
  auto acc = out.accessor<float, 2>();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    double norm = 0;
    std::vector<std::pair<std::int64_t, double>> values;
    for (const auto& [k, c] : rows[i]) {
      const auto col = column[static_cast<std::size_t>(k)];
      if (col < 0) continue;
      const double idf = std::log((1.0 + n) / (1.0 + static_cast<double>(df[static_cast<std::size_t>(k)]))) + 1.0;
      const double v = c * idf;
      norm += v * v;
      values.emplace_back(col, v);
    }
    if (norm <= 0) continue;
    const double scale = 1.0 / std::sqrt(norm);
    for (const auto& [col, v] : values) acc[static_cast<std::int64_t>(i)][col] = static_cast<float>(v * scale);
  }
  return out;
}

}  // namespace kalm::eval
