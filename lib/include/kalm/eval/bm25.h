#pragma once
// Okapi BM25 over an in-memory corpus: the lexical baseline of retrieval
// evaluation, top-k search and reranking of given candidates.
//
// Scoring: Lucene's BM25Similarity (Lucene >= 8; also Pyserini's and bm25s's
// "lucene" method), with exact document lengths (Lucene stores them lossily):
//   score(q, d) = sum over query tokens t (repeats count again) of
//                 idf(t) * tf / (tf + k1 * (1 - b + b * |d| / avgdl))
//   idf(t)      = ln(1 + (N - df + 0.5) / (df + 0.5))    (always > 0)
// N = documents, df = documents containing t, tf = occurrences of t in d,
// |d| = tokens of d, avgdl = mean |d| over all documents. Classic Robertson BM25
// multiplies each term by (k1 + 1): a constant factor, the same ranking.
// Defaults k1 = 1.2, b = 0.75 are Lucene's (and Elasticsearch's). Other common
// defaults: rank_bm25 BM25Okapi k1 = 1.5, b = 0.75 with an idf that can be
// negative; Pyserini's searcher k1 = 0.9, b = 0.4 (tuned on MS MARCO); bm25s
// k1 = 1.5, b = 0.75.
//
// Tokenisation (bm25_tokenize), language-independent and documented rather than
// Lucene-identical: the text is mapped to NFKC with Unicode case folding
// (utf8proc: UTF8PROC_COMPAT | COMPOSE | CASEFOLD, so "Ｆｕｌｌ" = "full" and
// "Straße" = "strasse"), then split into maximal runs of letters, marks and
// numbers (general categories L*, M*, N*); every other character separates
// tokens. CJK ideographs (the blocks BERT's basic tokenizer treats as Chinese
// characters) are single-character tokens, since those scripts put no spaces
// between words. No stemming, no stop words.
//
// Ranking: score descending, then document index ascending. search() returns
// only documents that contain at least one query token, so fewer than k hits
// is normal.
//
// Thread safety: a built index is immutable; every const method may be called
// concurrently. search_all() runs queries in parallel (OpenMP).
// Errors: UsageError for bad options (k1 < 0, b outside [0, 1], non-finite);
// FormatError for invalid UTF-8 (naming the document or query index) and for
// candidate indices out of range.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kalm::eval {

struct Bm25Options {
  double k1 = 1.2;   // term-frequency saturation
  double b = 0.75;   // document-length normalisation (0 = none, 1 = full)
};

// The tokens of `text` (see above). Throws FormatError("<what>: invalid UTF-8 at byte N").
std::vector<std::string> bm25_tokenize(std::string_view text, std::string_view what = "text");

struct Bm25Hit {
  std::size_t doc = 0;  // index in the corpus given to the constructor
  double score = 0;
};

class Bm25Index {
 public:
  explicit Bm25Index(const std::vector<std::string>& documents, Bm25Options options = {});

  std::size_t size() const { return doc_length_.size(); }
  double average_length() const { return avgdl_; }
  // Documents containing the (already tokenised) term.
  std::size_t document_frequency(std::string_view term) const;
  // idf of a term (as above; for df = 0 it is ln(1 + (N + 0.5) / 0.5)).
  double idf(std::string_view term) const;

  // The k best documents for `query` (k = 0 gives none).
  std::vector<Bm25Hit> search(std::string_view query, std::size_t k) const;
  // search() for every query, in parallel; result i belongs to query i.
  std::vector<std::vector<Bm25Hit>> search_all(const std::vector<std::string>& queries,
                                               std::size_t k) const;
  // BM25 score of `query` for each candidate document index (reranking), in
  // candidate order. Throws FormatError for an index >= size().
  std::vector<double> score(std::string_view query, const std::vector<std::size_t>& candidates) const;

 private:
  struct Posting {
    std::uint32_t doc;
    std::uint32_t tf;
  };
  // Query tokens that occur in the corpus, as term ids, repeats kept.
  std::vector<std::uint32_t> query_terms(std::string_view query, std::string_view what) const;
  double term_weight(std::uint32_t term, std::uint32_t tf, std::uint32_t doc) const;

  Bm25Options options_;
  std::unordered_map<std::string, std::uint32_t> term_ids_;
  std::vector<std::vector<Posting>> postings_;  // [term] by doc ascending
  std::vector<double> idf_;                     // [term]
  std::vector<std::uint32_t> doc_length_;       // [doc] tokens
  double avgdl_ = 0;
};

}  // namespace kalm::eval
