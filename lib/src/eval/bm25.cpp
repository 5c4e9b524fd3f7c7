#include "kalm/eval/bm25.h"

#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <memory>

#include "kalm/error.h"

namespace kalm::eval {

namespace {

// BERT's BasicTokenizer._is_chinese_char blocks.
bool is_cjk_ideograph(utf8proc_int32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool is_token_char(utf8proc_int32_t c) {
  const utf8proc_category_t cat = utf8proc_category(c);
  return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_NO;  // L*, M*, N*
}

}  // namespace

std::vector<std::string> bm25_tokenize(std::string_view text, std::string_view what) {
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  const auto len = static_cast<utf8proc_ssize_t>(text.size());
  for (utf8proc_ssize_t i = 0; i < len;) {
    utf8proc_int32_t c;
    const utf8proc_ssize_t n = utf8proc_iterate(bytes + i, len - i, &c);
    if (n <= 0 || c < 0)
      throw FormatError(std::string(what) + ": invalid UTF-8 at byte " + std::to_string(i));
    i += n;
  }
  std::vector<std::string> tokens;
  if (text.empty()) return tokens;

  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t mapped_len =
      utf8proc_map(bytes, len, &mapped,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE |
                                                  UTF8PROC_COMPAT | UTF8PROC_CASEFOLD));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owner(mapped, &std::free);
  if (mapped_len < 0)
    throw FormatError(std::string(what) + ": cannot normalise: " + utf8proc_errmsg(mapped_len));

  std::string current;
  auto flush = [&] {
    if (!current.empty()) tokens.push_back(std::move(current));
    current.clear();
  };
  for (utf8proc_ssize_t i = 0; i < mapped_len;) {
    utf8proc_int32_t c;
    const utf8proc_ssize_t n = utf8proc_iterate(mapped + i, mapped_len - i, &c);
    KALM_ASSERT(n > 0, "utf8proc_map produced invalid UTF-8");
    const char* start = reinterpret_cast<const char*>(mapped + i);
    i += n;
    if (is_cjk_ideograph(c)) {
      flush();
      tokens.emplace_back(start, static_cast<std::size_t>(n));
    } else if (is_token_char(c)) {
      current.append(start, static_cast<std::size_t>(n));
    } else {
      flush();
    }
  }
  flush();
  return tokens;
}

Bm25Index::Bm25Index(const std::vector<std::string>& documents, Bm25Options options)
    : options_(options) {
  if (!std::isfinite(options.k1) || options.k1 < 0)
    throw UsageError("BM25: k1 must be a finite number >= 0, got " + std::to_string(options.k1));
  if (!std::isfinite(options.b) || options.b < 0 || options.b > 1)
    throw UsageError("BM25: b must be in [0, 1], got " + std::to_string(options.b));
  if (documents.size() > UINT32_MAX) throw UsageError("BM25: more than 2^32 - 1 documents");

  doc_length_.reserve(documents.size());
  std::unordered_map<std::uint32_t, std::uint32_t> tf;  // term -> count, per document
  double total_length = 0;
  for (std::size_t d = 0; d < documents.size(); ++d) {
    const auto tokens = bm25_tokenize(documents[d], "BM25 document " + std::to_string(d));
    tf.clear();
    for (const std::string& t : tokens) {
      auto [it, fresh] = term_ids_.emplace(t, static_cast<std::uint32_t>(postings_.size()));
      if (fresh) postings_.emplace_back();
      ++tf[it->second];
    }
    for (const auto& [term, count] : tf) postings_[term].push_back({static_cast<std::uint32_t>(d), count});
    doc_length_.push_back(static_cast<std::uint32_t>(tokens.size()));
    total_length += static_cast<double>(tokens.size());
  }
  avgdl_ = documents.empty() ? 0.0 : total_length / static_cast<double>(documents.size());
  const double n = static_cast<double>(documents.size());
  idf_.resize(postings_.size());
  for (std::size_t t = 0; t < postings_.size(); ++t) {
    const double df = static_cast<double>(postings_[t].size());
    idf_[t] = std::log(1.0 + (n - df + 0.5) / (df + 0.5));
  }
}

std::size_t Bm25Index::document_frequency(std::string_view term) const {
  auto it = term_ids_.find(std::string(term));
  return it == term_ids_.end() ? 0 : postings_[it->second].size();
}

double Bm25Index::idf(std::string_view term) const {
  const double df = static_cast<double>(document_frequency(term));
  return std::log(1.0 + (static_cast<double>(size()) - df + 0.5) / (df + 0.5));
}

std::vector<std::uint32_t> Bm25Index::query_terms(std::string_view query, std::string_view what) const {
  std::vector<std::uint32_t> ids;
  for (const std::string& t : bm25_tokenize(query, what)) {
    auto it = term_ids_.find(t);
    if (it != term_ids_.end()) ids.push_back(it->second);
  }
  return ids;
}

double Bm25Index::term_weight(std::uint32_t term, std::uint32_t tf, std::uint32_t doc) const {
  const double f = static_cast<double>(tf);
  const double norm = options_.k1 * (1.0 - options_.b + options_.b * static_cast<double>(doc_length_[doc]) / avgdl_);
  return idf_[term] * f / (f + norm);
}

std::vector<Bm25Hit> Bm25Index::search(std::string_view query, std::size_t k) const {
  const auto terms = query_terms(query, "BM25 query");
  std::vector<Bm25Hit> hits;
  if (k == 0 || terms.empty()) return hits;
  std::vector<double> acc(size(), 0.0);
  std::vector<char> seen(size(), 0);
  std::vector<std::size_t> touched;
  // Accumulated term by term in query order, so a rescoring with score() gives
  // the same bits.
  for (std::uint32_t term : terms)
    for (const Posting& p : postings_[term]) {
      acc[p.doc] += term_weight(term, p.tf, p.doc);
      if (!seen[p.doc]) {
        seen[p.doc] = 1;
        touched.push_back(p.doc);
      }
    }
  hits.reserve(touched.size());
  for (std::size_t d : touched) hits.push_back({d, acc[d]});
  const auto better = [](const Bm25Hit& a, const Bm25Hit& b) {
    return a.score != b.score ? a.score > b.score : a.doc < b.doc;
  };
  if (hits.size() > k) {
    std::partial_sort(hits.begin(), hits.begin() + static_cast<std::ptrdiff_t>(k), hits.end(), better);
    hits.resize(k);
  } else {
    std::sort(hits.begin(), hits.end(), better);
  }
  return hits;
}

std::vector<std::vector<Bm25Hit>> Bm25Index::search_all(const std::vector<std::string>& queries,
                                                        std::size_t k) const {
  std::vector<std::vector<Bm25Hit>> results(queries.size());
  std::exception_ptr error;
  const auto n = static_cast<std::int64_t>(queries.size());
#pragma omp parallel for schedule(dynamic, 16)
  for (std::int64_t i = 0; i < n; ++i) {
    try {
      results[static_cast<std::size_t>(i)] = search(queries[static_cast<std::size_t>(i)], k);
    } catch (const FormatError& e) {
#pragma omp critical(kalm_bm25_error)
      if (!error) error = std::make_exception_ptr(FormatError("BM25 query " + std::to_string(i) + ": " + e.what()));
    } catch (...) {
#pragma omp critical(kalm_bm25_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  return results;
}

std::vector<double> Bm25Index::score(std::string_view query, const std::vector<std::size_t>& candidates) const {
  for (std::size_t i = 0; i < candidates.size(); ++i)
    if (candidates[i] >= size())
      throw FormatError("BM25 rerank: candidate " + std::to_string(i) + " is document " +
                        std::to_string(candidates[i]) + ", but the corpus has " + std::to_string(size()));
  const auto terms = query_terms(query, "BM25 query");
  std::vector<double> scores(candidates.size(), 0.0);
  for (std::uint32_t term : terms) {
    const auto& list = postings_[term];
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      auto it = std::lower_bound(list.begin(), list.end(), candidates[i],
                                 [](const Posting& p, std::size_t d) { return p.doc < d; });
      if (it != list.end() && it->doc == candidates[i]) scores[i] += term_weight(term, it->tf, it->doc);
    }
  }
  return scores;
}

}  // namespace kalm::eval
