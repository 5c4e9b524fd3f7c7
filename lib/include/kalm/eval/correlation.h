#pragma once
// Pearson and Spearman correlation as scipy.stats defines them (scipy 1.10:
// pearsonr, spearmanr), which is how mteb scores STS tasks.
//
// - pearson: sum((x - mean x)(y - mean y)) / (|x - mean x| |y - mean y|),
//   clipped to [-1, 1] as scipy does.
// - spearman: pearson of the average ranks (scipy.stats.rankdata "average":
//   tied values share the mean of the 1-based ranks they span).
// - A constant input makes the correlation undefined: both return NaN, as scipy
//   does (with a warning there). Callers that write JSON must handle it.
//
// Thread safety: pure functions.
// Throws FormatError when the lengths differ, when there are fewer than 2
// values (scipy raises too), or when a value is not finite.

#include <vector>

namespace kalm::eval {

double pearson(const std::vector<double>& x, const std::vector<double>& y);
double spearman(const std::vector<double>& x, const std::vector<double>& y);

// 1-based ranks, ties averaged (scipy.stats.rankdata(method="average")).
// Throws FormatError on a non-finite value.
std::vector<double> average_ranks(const std::vector<double>& x);

}  // namespace kalm::eval
