#include "kalm/eval/trec_files.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <vector>

#include "kalm/error.h"
#include "kalm/io/json_writer.h"
#include "kalm/io/zstd_stream.h"

namespace kalm::eval {

namespace {

// C isspace() in the "C" locale, which is what trec_eval splits on.
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' || c == '\n';
}

// Calls fn(line_number, fields) for every line that holds data.
template <typename Fn>
void for_each_record(std::string_view text, Fn fn) {
  std::size_t line_no = 0, pos = 0;
  std::vector<std::string_view> fields;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    fields.clear();
    std::size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && is_space(line[i])) ++i;
      std::size_t start = i;
      while (i < line.size() && !is_space(line[i])) ++i;
      if (i > start) fields.push_back(line.substr(start, i - start));
    }
    if (fields.empty() || fields[0].front() == '#') continue;
    fn(line_no, fields);
  }
}

std::int64_t parse_int(std::string_view s, const std::string& name, std::size_t line) {
  std::string tmp(s);
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(tmp.c_str(), &end, 10);
  if (end != tmp.c_str() + tmp.size() || tmp.empty() || errno == ERANGE)
    throw FormatError(where(name, line) + ": relevance '" + tmp + "' is not an integer");
  return static_cast<std::int64_t>(v);
}

double parse_score(std::string_view s, const std::string& name, std::size_t line) {
  std::string tmp(s);
  char* end = nullptr;
  // strtod: the C conversion trec_eval's atof uses, so the same digits give the same double.
  double v = std::strtod(tmp.c_str(), &end);
  if (end != tmp.c_str() + tmp.size() || tmp.empty() || !std::isfinite(v))
    throw FormatError(where(name, line) + ": score '" + tmp + "' is not a finite number");
  return v;
}

// Plain or zstd (detected by magic bytes), file or stdin, as every kalm input.
std::string read_all(const std::string& path) {
  io::InputStream in(path);
  std::string data;
  char buf[1 << 16];
  while (const std::size_t n = in.read(buf, sizeof buf)) data.append(buf, n);
  return data;
}

// Where each (qid, docid) was first seen, for duplicate messages.
using FirstLine = std::map<std::string, std::unordered_map<std::string, std::size_t>>;

}  // namespace

Qrels parse_qrels(std::string_view text, const std::string& name) {
  Qrels qrels;
  FirstLine first;
  for_each_record(text, [&](std::size_t line, const std::vector<std::string_view>& f) {
    if (f.size() != 4)
      throw FormatError(where(name, line) + ": a qrels line has 4 fields (qid iter docid rel), found " +
                        std::to_string(f.size()));
    const std::int64_t rel = parse_int(f[3], name, line);
    std::string qid(f[0]), doc(f[2]);
    auto [it, fresh] = first[qid].emplace(doc, line);
    if (!fresh)
      throw FormatError(where(name, line) + ": query '" + qid + "', document '" + doc +
                        "' judged twice (first at line " + std::to_string(it->second) + ")");
    qrels[qid].emplace(std::move(doc), rel);
  });
  return qrels;
}

Run parse_run(std::string_view text, const std::string& name) {
  Run run;
  FirstLine first;
  for_each_record(text, [&](std::size_t line, const std::vector<std::string_view>& f) {
    if (f.size() < 6)
      throw FormatError(where(name, line) +
                        ": a run line has 6 fields (qid Q0 docid rank score tag), found " +
                        std::to_string(f.size()));
    const double score = parse_score(f[4], name, line);
    std::string qid(f[0]), doc(f[2]);
    auto [it, fresh] = first[qid].emplace(doc, line);
    if (!fresh)
      throw FormatError(where(name, line) + ": query '" + qid + "', document '" + doc +
                        "' retrieved twice (first at line " + std::to_string(it->second) + ")");
    run[qid].emplace(std::move(doc), score);
  });
  return run;
}

Qrels read_qrels(const std::string& path) { return parse_qrels(read_all(path), path); }
Run read_run(const std::string& path) { return parse_run(read_all(path), path); }

std::string retrieval_report_json(const RetrievalEvaluation& e, bool per_query) {
  std::string out = "{\n";
  auto object = [&](std::string_view key, const std::vector<double>& values, bool summary) {
    out += "  ";
    try {
      io::append_json_string(out, key);
    } catch (const FormatError& ex) {
      throw FormatError(std::string("retrieval report: query id: ") + ex.what());
    }
    out += ": {";
    bool first = true;
    auto field = [&](std::string_view name, double v) {
      out += first ? "\n    " : ",\n    ";
      first = false;
      io::append_json_string(out, name);
      out += ": ";
      io::append_json_number(out, v);
    };
    if (summary) field("num_q", static_cast<double>(e.query_ids.size()));
    for (std::size_t m = 0; m < e.measures.size(); ++m) field(e.measures[m], values[m]);
    out += "\n  }";
  };
  object("all", e.means, true);
  if (per_query) {
    for (std::size_t q = 0; q < e.query_ids.size(); ++q) {
      if (e.query_ids[q] == "all")
        throw FormatError("per-query report: a query is named 'all', which is the key of the means");
      out += ",\n";
      object(e.query_ids[q], e.values[q], false);
    }
  }
  out += "\n}\n";
  return out;
}

std::string evaluate_trec_files(const std::string& qrels_path, const std::string& run_path,
                                bool per_query, const RetrievalOptions& options) {
  if ((qrels_path == "-" || qrels_path.empty()) && (run_path == "-" || run_path.empty()))
    throw UsageError("--qrels and --run cannot both be stdin");
  const Qrels qrels = read_qrels(qrels_path);
  const Run run = read_run(run_path);
  return retrieval_report_json(evaluate_retrieval(qrels, run, options), per_query);
}

}  // namespace kalm::eval
