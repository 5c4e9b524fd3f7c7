#include "kalm/eval/task.h"

#include <simdjson.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "kalm/error.h"
#include "kalm/io/jsonl.h"

namespace kalm::eval {
namespace {

namespace fs = std::filesystem;
using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// One JSON object per non-blank line, with file:line for every message.
class JsonLines {
 public:
  explicit JsonLines(const std::string& path) : path_(path) {
    if (!fs::exists(path)) throw IoError(path + ": no such file");
    reader_ = std::make_unique<io::LineReader>(path);
  }
  // Parses the next non-blank line into `out`; false at the end.
  bool next(object& out) {
    std::string_view line;
    while (reader_->next(line)) {
      if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
      element root;
      // LineReader guarantees kLinePadding (= SIMDJSON_PADDING) readable bytes after the line.
      auto error = parser_.parse(line.data(), line.size(), false).get(root);
      if (error) throw FormatError(here() + ": invalid JSON: " + simdjson::error_message(error));
      if (root.type() != element_type::OBJECT) throw FormatError(here() + ": a record must be a JSON object");
      out = root.get_object().value_unsafe();
      return true;
    }
    return false;
  }
  std::string here() const { return where(reader_->name(), reader_->line_number()); }

 private:
  std::string path_;
  std::unique_ptr<io::LineReader> reader_;
  simdjson::dom::parser parser_;
};

std::string field_error(const std::string& at, std::string_view field, const std::string& what) {
  return at + ": field '" + std::string(field) + "': " + what;
}

std::optional<element> find_field(const object& o, std::string_view key) {
  element e;
  if (o.at_key(key).get(e)) return std::nullopt;
  if (e.is_null()) return std::nullopt;
  return e;
}

std::string as_string(const element& e, const std::string& at, std::string_view field) {
  std::string_view s;
  if (e.get_string().get(s)) throw FormatError(field_error(at, field, "expected a string"));
  return std::string(s);
}

std::string get_string(const object& o, std::string_view key, const std::string& at) {
  auto e = find_field(o, key);
  if (!e) throw FormatError(field_error(at, key, "missing"));
  return as_string(*e, at, key);
}

// An id or a label: a string, or an integer kept as its digits.
std::string get_key(const element& e, const std::string& at, std::string_view field) {
  if (e.type() == element_type::STRING) return std::string(e.get_string().value_unsafe());
  if (e.type() == element_type::INT64) return std::to_string(e.get_int64().value_unsafe());
  if (e.type() == element_type::UINT64) return std::to_string(e.get_uint64().value_unsafe());
  throw FormatError(field_error(at, field, "expected a string or an integer"));
}

std::string get_key(const object& o, std::string_view key, const std::string& at) {
  auto e = find_field(o, key);
  if (!e) throw FormatError(field_error(at, key, "missing"));
  return get_key(*e, at, key);
}

double get_number(const object& o, std::string_view key, const std::string& at) {
  auto e = find_field(o, key);
  if (!e) throw FormatError(field_error(at, key, "missing"));
  double v = 0;
  if (e->type() == element_type::DOUBLE) v = e->get_double().value_unsafe();
  else if (e->type() == element_type::INT64) v = static_cast<double>(e->get_int64().value_unsafe());
  else if (e->type() == element_type::UINT64) v = static_cast<double>(e->get_uint64().value_unsafe());
  else throw FormatError(field_error(at, key, "expected a number"));
  if (!std::isfinite(v)) throw FormatError(field_error(at, key, "not a finite number"));
  return v;
}

std::vector<std::string> get_string_list(const object& o, std::string_view key, const std::string& at, bool required) {
  auto e = find_field(o, key);
  if (!e) {
    if (required) throw FormatError(field_error(at, key, "missing"));
    return {};
  }
  simdjson::dom::array arr;
  if (e->get_array().get(arr)) throw FormatError(field_error(at, key, "expected an array of strings"));
  std::vector<std::string> out;
  for (element item : arr) out.push_back(as_string(item, at, key));
  return out;
}

std::string split_file(const TaskSpec& spec, const std::string& split) {
  return join_path(spec.dir, split + ".jsonl");
}

void require_records(std::size_t n, const std::string& path) {
  if (n == 0) throw FormatError(path + ": no records");
}

// Splits on runs of spaces and tabs.
std::vector<std::string_view> fields_of(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    std::size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

std::optional<std::int64_t> parse_int(std::string_view s) {
  std::string tmp(s);
  if (tmp.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(tmp.c_str(), &end, 10);
  if (errno != 0 || end != tmp.c_str() + tmp.size()) {
    // mteb qrels sometimes hold "1.0"; accept integral decimals.
    double d = std::strtod(tmp.c_str(), &end);
    if (end != tmp.c_str() + tmp.size() || !std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 1e15)
      return std::nullopt;
    return static_cast<std::int64_t>(d);
  }
  return v;
}

}  // namespace

std::string_view task_kind_name(TaskKind kind) {
  switch (kind) {
    case TaskKind::kRetrieval: return "retrieval";
    case TaskKind::kReranking: return "reranking";
    case TaskKind::kSts: return "sts";
    case TaskKind::kPairClassification: return "pair_classification";
    case TaskKind::kClassification: return "classification";
    case TaskKind::kClustering: return "clustering";
    case TaskKind::kBitext: return "bitext";
  }
  return "?";
}

std::optional<TaskKind> parse_task_kind(std::string_view name) {
  for (auto k : {TaskKind::kRetrieval, TaskKind::kReranking, TaskKind::kSts, TaskKind::kPairClassification,
                 TaskKind::kClassification, TaskKind::kClustering, TaskKind::kBitext})
    if (task_kind_name(k) == name) return k;
  return std::nullopt;
}

std::string_view default_main_score(TaskKind kind) {
  switch (kind) {
    case TaskKind::kRetrieval: return "ndcg_at_10";
    case TaskKind::kReranking: return "map";
    case TaskKind::kSts: return "cosine_spearman";
    case TaskKind::kPairClassification: return "max_ap";
    case TaskKind::kClassification: return "accuracy";
    case TaskKind::kClustering: return "v_measure";
    case TaskKind::kBitext: return "f1";
  }
  return "";
}

bool is_symmetric(TaskKind kind) {
  return kind == TaskKind::kSts || kind == TaskKind::kPairClassification || kind == TaskKind::kBitext;
}

TaskSpec load_task_spec(const std::string& dir) {
  const std::string path = join_path(dir, "task.json");
  if (!fs::is_directory(dir)) throw IoError(dir + ": not a task directory (no such directory)");
  if (!fs::exists(path)) throw IoError(path + ": no such file (a task directory needs a task.json)");
  simdjson::padded_string text;
  if (simdjson::padded_string::load(path).get(text)) throw IoError(path + ": cannot read");
  simdjson::dom::parser parser;
  element root;
  if (auto error = parser.parse(text).get(root)) throw FormatError(path + ": invalid JSON: " + simdjson::error_message(error));
  if (root.type() != element_type::OBJECT) throw FormatError(path + ": expected a JSON object");
  object o = root.get_object().value_unsafe();
  static const std::set<std::string, std::less<>> known = {
      "type", "name", "instruction", "instruction_both_sides", "main_score", "splits", "languages",
      "train_split", "n_experiments", "samples_per_label", "batch_size", "description", "reference", "revision"};
  for (auto field : o)
    if (!known.count(field.key))
      throw FormatError(field_error(path, field.key, "unknown field (typo?); known: type, name, instruction, "
                                                     "instruction_both_sides, main_score, splits, languages, "
                                                     "train_split, n_experiments, samples_per_label, batch_size, "
                                                     "description, reference, revision"));
  TaskSpec spec;
  spec.dir = dir;
  const std::string type = get_string(o, "type", path);
  auto kind = parse_task_kind(type);
  if (!kind)
    throw FormatError(field_error(path, "type", "unknown task type '" + type +
                                                    "' (retrieval, reranking, sts, pair_classification, "
                                                    "classification, clustering, bitext)"));
  spec.type = *kind;
  if (find_field(o, "name")) spec.name = get_string(o, "name", path);
  if (spec.name.empty()) {
    // "tasks/sts/" and "." name their directory too.
    fs::path p = fs::absolute(dir).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    spec.name = p.filename().string();
  }
  if (find_field(o, "instruction")) spec.instruction = get_string(o, "instruction", path);
  if (auto e = find_field(o, "instruction_both_sides")) {
    bool b = false;
    if (e->get_bool().get(b)) throw FormatError(field_error(path, "instruction_both_sides", "expected true or false"));
    spec.instruction_both_sides = b;
  }
  spec.main_score = find_field(o, "main_score") ? get_string(o, "main_score", path) : std::string(default_main_score(spec.type));
  if (find_field(o, "splits")) {
    spec.splits = get_string_list(o, "splits", path, true);
    if (spec.splits.empty()) throw FormatError(field_error(path, "splits", "must name at least one split"));
    for (const auto& s : spec.splits)
      if (s.empty() || s.find('/') != std::string::npos || s == "." || s == "..")
        throw FormatError(field_error(path, "splits", "bad split name '" + s + "'"));
  }
  spec.languages = get_string_list(o, "languages", path, false);
  if (find_field(o, "train_split")) spec.train_split = get_string(o, "train_split", path);
  auto positive_int = [&](std::string_view key, int& out) {
    if (auto e = find_field(o, key)) {
      std::int64_t v = 0;
      if (e->get_int64().get(v) || v < 1 || v > 1000000)
        throw FormatError(field_error(path, key, "expected an integer in [1, 1000000]"));
      out = static_cast<int>(v);
    }
  };
  positive_int("n_experiments", spec.n_experiments);
  positive_int("samples_per_label", spec.samples_per_label);
  positive_int("batch_size", spec.batch_size);
  return spec;
}

Qrels read_qrels_any(const std::string& path) {
  if (!fs::exists(path)) throw IoError(path + ": no such file");
  io::LineReader reader(path);
  Qrels qrels;
  std::unordered_map<std::string, std::size_t> first_line;  // "qid\tdocid" -> line
  std::string_view line;
  int form = 0;  // 3 = mteb, 4 = TREC
  bool seen_data = false;
  while (reader.next(line)) {
    const std::string at = where(reader.name(), reader.line_number());
    auto f = fields_of(line);
    if (f.empty() || f[0][0] == '#') continue;
    if (f.size() != 3 && f.size() != 4)
      throw FormatError(at + ": expected 3 fields (query-id corpus-id score) or 4 (qid iter docid rel), got " +
                        std::to_string(f.size()));
    auto rel = parse_int(f.back());
    if (!rel) {
      if (!seen_data && f.size() == 3) {  // mteb's header "query-id corpus-id score"
        seen_data = true;
        form = 3;
        continue;
      }
      throw FormatError(at + ": relevance '" + std::string(f.back()) + "' is not an integer");
    }
    seen_data = true;
    if (form == 0) form = static_cast<int>(f.size());
    if (static_cast<int>(f.size()) != form)
      throw FormatError(at + ": " + std::to_string(f.size()) + " fields where earlier lines have " +
                        std::to_string(form));
    std::string qid(f[0]);
    std::string docid(form == 3 ? f[1] : f[2]);
    auto key = qid + '\t' + docid;
    auto [it, fresh] = first_line.emplace(key, reader.line_number());
    if (!fresh)
      throw FormatError(at + ": query '" + qid + "' judges document '" + docid + "' again (first at line " +
                        std::to_string(it->second) + ")");
    qrels[qid][docid] = *rel;
  }
  if (qrels.empty()) throw FormatError(display_name(path) + ": no judgements");
  return qrels;
}

RetrievalData load_retrieval(const TaskSpec& spec, const std::string& split) {
  RetrievalData d;
  {
    const std::string path = join_path(spec.dir, "corpus.jsonl");
    JsonLines lines(path);
    object o;
    std::unordered_set<std::string> seen;
    while (lines.next(o)) {
      const std::string at = lines.here();
      std::string id = get_key(o, "id", at);
      if (!seen.insert(id).second) throw FormatError(field_error(at, "id", "duplicate document id '" + id + "'"));
      std::string text = get_string(o, "text", at);
      if (auto t = find_field(o, "title")) {
        std::string title = as_string(*t, at, "title");
        // mteb joins title and text with one space when there is a title.
        if (!title.empty()) text = title + " " + text;
      }
      d.corpus_ids.push_back(std::move(id));
      d.corpus_texts.push_back(std::move(text));
    }
    require_records(d.corpus_ids.size(), path);
  }
  std::unordered_set<std::string> query_set;
  {
    const std::string path = join_path(spec.dir, "queries.jsonl");
    JsonLines lines(path);
    object o;
    while (lines.next(o)) {
      const std::string at = lines.here();
      std::string id = get_key(o, "id", at);
      if (!query_set.insert(id).second) throw FormatError(field_error(at, "id", "duplicate query id '" + id + "'"));
      d.query_ids.push_back(std::move(id));
      d.query_texts.push_back(get_string(o, "text", at));
    }
    require_records(d.query_ids.size(), path);
  }
  const std::string qrels_path = join_path(join_path(spec.dir, "qrels"), split + ".tsv");
  d.qrels = read_qrels_any(qrels_path);
  for (const auto& [qid, docs] : d.qrels)
    if (!query_set.count(qid))
      throw FormatError(qrels_path + ": query '" + qid + "' is not in " + join_path(spec.dir, "queries.jsonl"));
  return d;
}

std::vector<RerankingSample> load_reranking(const TaskSpec& spec, const std::string& split) {
  const std::string path = split_file(spec, split);
  JsonLines lines(path);
  object o;
  std::vector<RerankingSample> out;
  while (lines.next(o)) {
    const std::string at = lines.here();
    RerankingSample s;
    s.query = get_string(o, "query", at);
    s.positive = get_string_list(o, "positive", at, true);
    s.negative = get_string_list(o, "negative", at, true);
    out.push_back(std::move(s));
  }
  require_records(out.size(), path);
  return out;
}

PairData load_pairs(const TaskSpec& spec, const std::string& split) {
  const std::string path = split_file(spec, split);
  JsonLines lines(path);
  object o;
  PairData d;
  while (lines.next(o)) {
    const std::string at = lines.here();
    d.first.push_back(get_string(o, "sentence1", at));
    d.second.push_back(get_string(o, "sentence2", at));
    if (spec.type == TaskKind::kSts) d.scores.push_back(get_number(o, "score", at));
    if (spec.type == TaskKind::kPairClassification) {
      double label = get_number(o, "label", at);
      if (label != 0 && label != 1) throw FormatError(field_error(at, "label", "expected 0 or 1"));
      d.labels.push_back(static_cast<int>(label));
    }
  }
  require_records(d.first.size(), path);
  if (spec.type == TaskKind::kSts && d.first.size() < 2) throw FormatError(path + ": STS needs at least 2 pairs");
  return d;
}

LabeledTexts load_labeled(const TaskSpec& spec, const std::string& split, LabelIds& label_ids) {
  const std::string path = split_file(spec, split);
  JsonLines lines(path);
  object o;
  LabeledTexts d;
  while (lines.next(o)) {
    const std::string at = lines.here();
    d.texts.push_back(get_string(o, "text", at));
    std::string label = get_key(o, "label", at);
    auto it = label_ids.emplace(label, static_cast<std::int64_t>(label_ids.size())).first;
    d.labels.push_back(it->second);
  }
  require_records(d.texts.size(), path);
  return d;
}

std::vector<LabeledTexts> load_clustering(const TaskSpec& spec, const std::string& split) {
  const std::string path = split_file(spec, split);
  JsonLines lines(path);
  object o;
  std::vector<LabeledTexts> sets;
  LabeledTexts single;
  LabelIds single_ids;
  int form = 0;  // 1 = text/label lines, 2 = sentences/labels lines
  while (lines.next(o)) {
    const std::string at = lines.here();
    const int this_form = find_field(o, "sentences") ? 2 : 1;
    if (form != 0 && form != this_form)
      throw FormatError(at + ": mixes {\"text\",\"label\"} and {\"sentences\",\"labels\"} records in one file");
    form = this_form;
    if (form == 1) {
      single.texts.push_back(get_string(o, "text", at));
      std::string label = get_key(o, "label", at);
      single.labels.push_back(single_ids.emplace(label, static_cast<std::int64_t>(single_ids.size())).first->second);
      continue;
    }
    LabeledTexts set;
    set.texts = get_string_list(o, "sentences", at, true);
    auto e = find_field(o, "labels");
    if (!e) throw FormatError(field_error(at, "labels", "missing"));
    simdjson::dom::array arr;
    if (e->get_array().get(arr)) throw FormatError(field_error(at, "labels", "expected an array"));
    LabelIds ids;
    for (element item : arr) {
      std::string label = get_key(item, at, "labels");
      set.labels.push_back(ids.emplace(label, static_cast<std::int64_t>(ids.size())).first->second);
    }
    if (set.labels.size() != set.texts.size())
      throw FormatError(at + ": " + std::to_string(set.texts.size()) + " sentences but " +
                        std::to_string(set.labels.size()) + " labels");
    if (set.texts.empty()) throw FormatError(field_error(at, "sentences", "empty set"));
    sets.push_back(std::move(set));
  }
  if (form == 1) sets.push_back(std::move(single));
  if (sets.empty()) throw FormatError(path + ": no records");
  return sets;
}

}  // namespace kalm::eval
