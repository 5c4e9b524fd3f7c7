#include "kalm/eval/correlation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "kalm/error.h"

namespace kalm::eval {

namespace {

void check_finite(const std::vector<double>& x, const char* what) {
  for (std::size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i]))
      throw FormatError(std::string(what) + ": value " + std::to_string(i) + " is not finite");
}

void check_pair(const std::vector<double>& x, const std::vector<double>& y, const char* what) {
  if (x.size() != y.size())
    throw FormatError(std::string(what) + ": " + std::to_string(x.size()) + " values vs " +
                      std::to_string(y.size()));
  if (x.size() < 2)
    throw FormatError(std::string(what) + ": needs at least 2 pairs, got " + std::to_string(x.size()));
  check_finite(x, what);
  check_finite(y, what);
}

double pearson_unchecked(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  // scipy checks for constant input exactly (x == x[0]) before dividing.
  const bool x_const = std::all_of(x.begin(), x.end(), [&](double v) { return v == x[0]; });
  const bool y_const = std::all_of(y.begin(), y.end(), [&](double v) { return v == y[0]; });
  if (x_const || y_const) return std::numeric_limits<double>::quiet_NaN();
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  const double r = sxy / (std::sqrt(sxx) * std::sqrt(syy));
  return std::max(-1.0, std::min(1.0, r));
}

}  // namespace

std::vector<double> average_ranks(const std::vector<double>& x) {
  check_finite(x, "rank");
  std::vector<std::size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return x[a] < x[b]; });
  std::vector<double> ranks(x.size());
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && x[order[j + 1]] == x[order[i]]) ++j;
    // Ranks i+1 .. j+1 averaged.
    const double r = 0.5 * static_cast<double>(i + 1 + j + 1);
    for (std::size_t t = i; t <= j; ++t) ranks[order[t]] = r;
    i = j + 1;
  }
  return ranks;
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  check_pair(x, y, "pearson");
  return pearson_unchecked(x, y);
}

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  check_pair(x, y, "spearman");
  return pearson_unchecked(average_ranks(x), average_ranks(y));
}

}  // namespace kalm::eval
