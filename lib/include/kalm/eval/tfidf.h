#pragma once
// TF-IDF vectors: the lexical baseline of the tasks that compare texts as
// vectors (sts, pair classification, classification, clustering, bitext),
// beside BM25 for retrieval and reranking (runner.h). As scikit-learn's
// TfidfVectorizer with its defaults (raw counts, smooth_idf, norm="l2"),
// fitted on the very texts it transforms:
//   idf(t) = ln((1 + n) / (1 + df(t))) + 1    n texts, df(t) = texts containing t
//   x(d, t) = count(t, d) · idf(t), each row scaled to unit L2 norm (an empty
//   row stays zero)
// Features:
//   kWords         the tokens of bm25_tokenize (NFKC, Unicode case folding,
//                  runs of letters/marks/numbers, CJK ideographs one by one)
//                  rather than scikit-learn's \b\w\w+\b pattern, which drops
//                  one-character words
//   kCharTrigrams  scikit-learn's analyzer="char_wb", ngram_range=(3, 3) over
//                  those tokens: each token padded with a space on both sides,
//                  every window of 3 code points; a padded token shorter than
//                  3 code points is one feature
// Vocabulary: every feature, or, when there are more than max_features, the
// max_features of highest total count (ties: bytes ascending), as
// max_features does; columns in byte order of the features.
//
// Thread safety: pure function. Errors: FormatError for invalid UTF-8, naming
// `what` and the text's index; UsageError for max_features < 1.

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kalm::eval {

enum class TfidfFeatures { kWords, kCharTrigrams };

// "words" / "char-trigrams"
std::string_view tfidf_features_name(TfidfFeatures features);

// [texts.size(), V] float32, V <= max_features (V >= 1: an all-empty input
// gives one zero column).
torch::Tensor tfidf_vectors(const std::vector<std::string>& texts, TfidfFeatures features,
                            std::int64_t max_features, std::string_view what = "text");

// The features of one text, in order (for tests and explanations).
std::vector<std::string> tfidf_features_of(std::string_view text, TfidfFeatures features,
                                           std::string_view what = "text");

}  // namespace kalm::eval
