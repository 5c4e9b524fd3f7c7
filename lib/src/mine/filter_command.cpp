#include "kalm/mine/filter_command.h"

#include <simdjson.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>

#include "kalm/cli/progress.h"
#include "kalm/encode/embed_command.h"
#include "kalm/error.h"
#include "kalm/io/json_writer.h"
#include "kalm/io/jsonl.h"
#include "kalm/mine/retrieve.h"
#include "kalm/mine/selection.h"
#include "kalm/text/unicode.h"
#include "meta_json.h"

namespace kalm::mine {
namespace {

namespace fs = std::filesystem;

struct Record {
  std::string raw;
  std::string where;
  io::TrainingGroup group;  // valid unless rejected at the parse stage
  bool rejected = false;
  std::string stage, reason;
  io::RawFields extra;
};

void reject(Record& r, const char* stage, const char* reason, const std::string& detail = {}) {
  r.rejected = true;
  r.stage = stage;
  r.reason = reason;
  if (!detail.empty()) {
    std::string v;
    io::append_json_string(v, detail);
    r.extra.add("detail", v);
  }
}

std::vector<Record> read_records(const std::vector<std::string>& inputs) {
  std::vector<Record> out;
  for (const auto& path : inputs.empty() ? std::vector<std::string>{"-"} : inputs) {
    io::JsonlReader reader(path);
    std::optional<std::size_t> failed_at;
    while (true) {
      Record r;
      try {
        if (!reader.next(r.group)) break;
      } catch (const FormatError& e) {
        // A content error leaves the reader on the next line; a stream error
        // repeats at the same line, and then it is the run's failure.
        if (failed_at && reader.line_number() == *failed_at) throw;
        failed_at = reader.line_number();
        r.raw.assign(reader.line());
        r.where = where(reader.name(), reader.line_number());
        r.group = {};
        reject(r, "parse", "malformed", e.what());
        out.push_back(std::move(r));
        continue;
      }
      r.raw.assign(reader.line());
      r.where = where(reader.name(), reader.line_number());
      out.push_back(std::move(r));
    }
  }
  return out;
}

bool blank(const std::string& s) { return normalize_whitespace(s).empty(); }

void check_validity(Record& r) {
  const auto& g = r.group;
  if (blank(g.query)) return reject(r, "validity", "empty_query");
  for (std::size_t i = 0; i < g.pos.size(); ++i)
    if (blank(g.pos[i])) return reject(r, "validity", "empty_positive", "pos[" + std::to_string(i) + "]");
  for (std::size_t i = 0; i < g.neg.size(); ++i)
    if (blank(g.neg[i])) return reject(r, "validity", "empty_negative", "neg[" + std::to_string(i) + "]");
}

void check_equality(Record& r) {
  const auto& g = r.group;
  const std::string q = normalize_whitespace(g.query);
  std::set<std::string> pos;
  for (std::size_t i = 0; i < g.pos.size(); ++i) {
    auto p = normalize_whitespace(g.pos[i]);
    if (p == q) return reject(r, "equality", "query_equals_positive", "pos[" + std::to_string(i) + "]");
    pos.insert(std::move(p));
  }
  for (std::size_t i = 0; i < g.neg.size(); ++i)
    if (pos.count(normalize_whitespace(g.neg[i])))
      return reject(r, "equality", "negative_equals_positive", "neg[" + std::to_string(i) + "]");
}

// The texts of a record with their field names, for the token bounds.
std::vector<std::pair<std::string, const std::string*>> fields_of(const io::TrainingGroup& g) {
  std::vector<std::pair<std::string, const std::string*>> f = {{"query", &g.query}};
  for (std::size_t i = 0; i < g.pos.size(); ++i) f.push_back({"pos[" + std::to_string(i) + "]", &g.pos[i]});
  for (std::size_t i = 0; i < g.neg.size(); ++i) f.push_back({"neg[" + std::to_string(i) + "]", &g.neg[i]});
  return f;
}

void check_token_bounds(std::vector<Record>& records, TextEmbedder& embedder, const FilterOptions& o) {
  std::vector<std::string> texts;
  std::vector<std::pair<std::size_t, std::string>> owner;  // record, field
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (records[i].rejected) continue;
    for (auto& [name, text] : fields_of(records[i].group)) {
      texts.push_back(*text);
      owner.push_back({i, name});
    }
  }
  const auto counts = embedder.count_tokens(texts);
  for (std::size_t t = 0; t < counts.size(); ++t) {
    Record& r = records[owner[t].first];
    if (r.rejected) continue;
    const std::string detail = owner[t].second + ": " + std::to_string(counts[t]) + " tokens";
    if (o.min_tokens && counts[t] < *o.min_tokens)
      reject(r, "validity", "too_short", detail + " < --min-tokens " + std::to_string(*o.min_tokens));
    else if (o.max_tokens && counts[t] > *o.max_tokens)
      reject(r, "validity", "too_long", detail + " > --max-tokens " + std::to_string(*o.max_tokens));
  }
}

void check_duplicates(std::vector<Record>& records) {
  std::unordered_map<std::string, std::string> first;  // key -> where
  for (auto& r : records) {
    if (r.rejected) continue;
    std::set<std::string> pos;
    for (const auto& p : r.group.pos) pos.insert(normalize_whitespace(p));
    std::string key = normalize_whitespace(r.group.query);
    for (const auto& p : pos) {
      key.push_back('\x1f');  // a unit separator cannot occur in normalised text's structure
      key += p;
    }
    auto [it, fresh] = first.emplace(std::move(key), r.where);
    if (!fresh) reject(r, "dedup", "duplicate", "same query and positives as " + it->second);
  }
}

std::vector<std::size_t> kept_indices(const std::vector<Record>& records) {
  std::vector<std::size_t> kept;
  for (std::size_t i = 0; i < records.size(); ++i)
    if (!records[i].rejected) kept.push_back(i);
  return kept;
}

void check_near_duplicates(std::vector<Record>& records, TextEmbedder& embedder, const FilterOptions& o) {
  const auto kept = kept_indices(records);
  std::vector<std::string> texts, at;
  for (auto i : kept) {
    texts.push_back(records[i].group.query);
    at.push_back(records[i].where);
  }
  torch::Tensor q = embedder.embed(texts, {}, at);
  auto hits = retrieve(q, q, o.near_dup_k + 1, search_precision_of(o.model), search_device_of(o.model));  // +1: each query finds itself
  std::vector<bool> alive(kept.size(), true);
  for (std::size_t j = 0; j < kept.size(); ++j) {
    for (const auto& h : hits[j]) {
      const auto i = static_cast<std::size_t>(h.index);
      if (i >= j || !alive[i] || static_cast<double>(h.score) <= *o.near_dup_threshold) continue;
      alive[j] = false;
      Record& r = records[kept[j]];
      reject(r, "near_dup", "near_duplicate", "query close to " + records[kept[i]].where);
      r.extra.add("cosine", [&] {
        std::string s;
        io::append_json_number(s, static_cast<double>(h.score));
        return s;
      }());
      break;
    }
  }
}

void check_ranking(std::vector<Record>& records, TextEmbedder& embedder, const FilterOptions& o) {
  const auto kept = kept_indices(records);
  // The pool is KaLM's: every distinct pos/neg text of the kept records.
  std::unordered_map<std::string, std::int64_t> row_of;
  std::vector<std::string> pool, pool_at;
  std::vector<std::vector<std::int64_t>> pos_rows(kept.size());
  for (std::size_t j = 0; j < kept.size(); ++j) {
    const Record& r = records[kept[j]];
    auto add = [&](const std::string& text) {
      auto [it, fresh] = row_of.emplace(normalize_whitespace(text), static_cast<std::int64_t>(pool.size()));
      if (fresh) {
        pool.push_back(text);
        pool_at.push_back(r.where);
      }
      return it->second;
    };
    for (const auto& p : r.group.pos) pos_rows[j].push_back(add(p));
    for (const auto& n : r.group.neg) add(n);
  }
  std::vector<std::string> queries, prefixes, at;
  for (auto i : kept) {
    const auto& g = records[i].group;
    queries.push_back(g.query);
    const std::string& ins = g.instruction && !g.instruction->empty() ? *g.instruction : o.instruction;
    prefixes.push_back(ins.empty() ? std::string() : encode::apply_instruction(o.instruction_template, ins));
    at.push_back(records[i].where);
  }
  torch::Tensor q = embedder.embed(queries, prefixes, at);
  torch::Tensor p = embedder.embed(pool, {}, pool_at);
  auto hits = retrieve(q, p, *o.filter_topk + 1, search_precision_of(o.model), search_device_of(o.model));
  for (std::size_t j = 0; j < kept.size(); ++j) {
    double anchor = -std::numeric_limits<double>::infinity();
    for (auto row : pos_rows[j]) {
      // The retrieved score when the positive was retrieved, so ties compare exactly.
      std::optional<double> s;
      for (const auto& h : hits[j])
        if (h.index == row) {
          s = h.score;
          break;
        }
      if (!s) s = q[static_cast<std::int64_t>(j)].dot(p[row]).item<float>();
      anchor = std::max(anchor, *s);
    }
    auto check = ranking_consistency(hits[j], anchor, *o.filter_topk);
    if (check.keep) continue;
    Record& r = records[kept[j]];
    reject(r, "ranking", "ranking_consistency");
    r.extra.add("positive_rank", std::to_string(check.positive_rank));
  }
}

}  // namespace

CLI::App* add_filter_flags(cli::Tool& tool, FilterOptions& o, PromptOptions& po) {
  auto& app = tool.app();
  const char* kFilters = "Filters";
  app.add_option("inputs", o.inputs, "Training groups (JSONL, plain or zstd); none or - = stdin")
      ->group(cli::kGroupInput);
  app.add_option("-o,--output", o.output, "Kept records, unchanged; - = stdout (.zst compresses)")
      ->group(cli::kGroupOutput);
  app.add_option("--rejects", o.rejects, "Rejected records with \"_reject\": {stage, reason, detail}")
      ->group(cli::kGroupOutput);
  app.add_option("--min-tokens", o.min_tokens, "Reject a record with any text shorter than this (needs --model)")
      ->group(kFilters);
  app.add_option("--max-tokens", o.max_tokens, "Reject a record with any text longer than this (needs --model)")
      ->group(kFilters);
  app.add_flag("--dedup,!--no-dedup", o.dedup, "Reject exact duplicates (same normalised query and positives)")
      ->group(kFilters);
  app.add_option("--near-dup-threshold", o.near_dup_threshold,
                 "Reject a record whose query has cosine above this with an earlier one (needs --model)")
      ->group(kFilters);
  app.add_option("--near-dup-k", o.near_dup_k, "Nearest queries examined for --near-dup-threshold")
      ->check(cli::positive_number())
      ->group(kFilters);
  app.add_option("--filter-topk", o.filter_topk,
                 "Ranking-consistency filter: reject when the best positive scores below the hit at 0-based "
                 "index K of the union pool (needs --model; KaLM: 50)")
      ->group(kFilters);
  encode::ModelFlagTargets model_flags;
  model_flags.model = &o.model.model;
  model_flags.model_help = "Model directory (tokenizer for token bounds; embeddings)";
  model_flags.instruction = &o.instruction;
  model_flags.instruction_help = "Query instruction for records without an \"instruction\" field";
  model_flags.instruction_template = &o.instruction_template;
  model_flags.instruction_template_help = "How an instruction prefixes a query";
  model_flags.max_length = &o.model.max_length;
  model_flags.max_length_help = "Tokens per text when embedding, special tokens included";
  model_flags.pooling = &o.model.pooling;
  model_flags.attention = &o.model.attention;
  encode::add_model_flags(app, model_flags);
  encode::add_compute_flags(app, o.model.batch_tokens, o.model.dtype, o.model.device);
  encode::add_search_precision_flag(app, o.model.search_precision);

  CLI::App* sub = app.add_subcommand("prompts", "Personas x task-type templates -> generation prompts (JSONL)");
  sub->fallthrough();  // the shared flags (--seed, -q, --threads) work after the subcommand too
  sub->add_option("--personas", po.personas, "Personas, JSONL: {\"persona\": str} per line")->required();
  sub->add_option("--templates", po.templates,
                  "Directory of <type>.generate.txt (+ <type>.brainstorm.txt for two-step types), e.g. examples/prompts")
      ->required();
  sub->add_option("--task-types", po.task_types, "Task types to use (default: every template found)");
  sub->add_option("--language", po.language, "Fills {language} in the templates");
  sub->add_option("-o,--output", po.output, "Prompts JSONL; - = stdout");
  return sub;
}

void run_filter(const FilterOptions& o, const cli::Tool& tool) {
  const bool has_model = !o.model.model.empty();
  if (!has_model && (o.min_tokens || o.max_tokens || o.near_dup_threshold || o.filter_topk))
    throw UsageError("--min-tokens, --max-tokens, --near-dup-threshold and --filter-topk need --model");
  if (o.filter_topk && *o.filter_topk < 0) throw UsageError("--filter-topk must be >= 0");
  if (!o.instruction.empty()) encode::apply_instruction(o.instruction_template, o.instruction);  // validates
  if (has_model) search::resolve_f32_products(search::F32Products::Auto);  // a bad KALM_SEARCH_BLAS fails first
  const io::OutputLock claim = MetaJson::claim_outputs(o.output, o.rejects, tool);

  cli::Progress progress(tool.name(), "records", std::nullopt, tool.common().quiet);
  auto records = read_records(o.inputs);
  for (auto& r : records)
    if (!r.rejected) check_validity(r);
  std::unique_ptr<TextEmbedder> embedder;
  if (has_model) embedder = std::make_unique<TextEmbedder>(o.model);
  if (has_model && (o.min_tokens || o.max_tokens)) check_token_bounds(records, *embedder, o);
  for (auto& r : records)
    if (!r.rejected) check_equality(r);
  if (o.dedup) check_duplicates(records);
  if (o.near_dup_threshold) check_near_duplicates(records, *embedder, o);
  if (o.filter_topk) check_ranking(records, *embedder, o);

  std::map<std::string, std::int64_t> counts;
  std::int64_t kept = 0;
  for (const auto& r : records) {
    if (r.rejected)
      ++counts[r.reason];
    else
      ++kept;
  }
  const auto rejected = static_cast<std::int64_t>(records.size()) - kept;
  if (rejected > 0 && o.rejects.empty())
    throw Error(std::to_string(rejected) + " of " + std::to_string(records.size()) +
                " records were rejected but no --rejects FILE was given; nothing was written");

  io::JsonlWriter out(o.output);
  std::unique_ptr<io::JsonlWriter> rej;
  if (!o.rejects.empty()) rej = std::make_unique<io::JsonlWriter>(o.rejects);
  for (const auto& r : records) {
    if (r.rejected)
      rej->write_reject(r.raw, r.stage, r.reason, r.extra);
    else
      out.write_line(r.raw);
  }
  out.finish();
  if (rej) rej->finish();
  progress.advance(records.size());

  MetaJson meta(tool);
  meta.add("model", o.model.model);
  meta.add("min_tokens", o.min_tokens);
  meta.add("max_tokens", o.max_tokens);
  meta.add("dedup", o.dedup);
  meta.add("near_dup_threshold", o.near_dup_threshold);
  meta.add("near_dup_k", o.near_dup_k);
  meta.add("filter_topk", o.filter_topk);
  meta.add("instruction", o.instruction);
  meta.add("instruction_template", o.instruction_template);
  meta.add("max_length", embedder ? std::optional<std::int64_t>(embedder->max_length()) : std::nullopt);
  meta.add("input_records", static_cast<std::int64_t>(records.size()));
  meta.add("kept", kept);
  meta.add("rejected", counts);
  meta.write_beside(o.output);

  std::string reasons;
  for (const auto& [reason, n] : counts) reasons += (reasons.empty() ? "" : ", ") + reason + " " + std::to_string(n);
  progress.finish(std::to_string(records.size()) + " records: " + std::to_string(kept) + " kept, " +
                  std::to_string(rejected) + " rejected" + (reasons.empty() ? "" : " (" + reasons + ")") + " in " +
                  cli::format_seconds(progress.elapsed_seconds()));
}

// ---- prompts ---------------------------------------------------------------

std::string fill_template(const std::string& text, const std::vector<std::pair<std::string, std::string>>& values) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    bool replaced = false;
    if (text[i] == '{') {
      for (const auto& [name, value] : values) {
        const std::string key = "{" + name + "}";
        if (text.compare(i, key.size(), key) == 0) {
          out += value;
          i += key.size();
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out.push_back(text[i++]);
  }
  return out;
}

namespace {

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path.string() + ": cannot open");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw IoError(path.string() + ": read error");
  return s;
}

struct Template {
  std::string type;
  std::string brainstorm;  // empty for one-step types
  std::string generate;
};

std::vector<Template> load_templates(const PromptOptions& o) {
  const fs::path dir(o.templates);
  if (!fs::is_directory(dir)) throw IoError(o.templates + ": no such template directory");
  std::map<std::string, Template> found;
  const std::string gen = ".generate.txt", brain = ".brainstorm.txt";
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    auto ends = [&](const std::string& suf) {
      return name.size() > suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0;
    };
    if (ends(gen)) {
      auto type = name.substr(0, name.size() - gen.size());
      found[type].type = type;
      found[type].generate = read_text_file(entry.path());
    } else if (ends(brain)) {
      auto type = name.substr(0, name.size() - brain.size());
      found[type].type = type;
      found[type].brainstorm = read_text_file(entry.path());
    }
  }
  std::vector<Template> out;
  for (auto& [type, t] : found) {
    if (t.generate.empty())
      throw FormatError((dir / (type + gen)).string() + ": missing or empty (every task type needs a generate template)");
    text::check_utf8(t.generate, type + gen);
    text::check_utf8(t.brainstorm, type + brain);
  }
  if (o.task_types.empty()) {
    for (auto& [type, t] : found) out.push_back(t);
  } else {
    for (const auto& type : o.task_types) {
      auto it = found.find(type);
      if (it == found.end()) throw UsageError("--task-types " + type + ": no template " + type + gen + " in " + o.templates);
      out.push_back(it->second);
    }
  }
  if (out.empty()) throw FormatError(o.templates + ": no *" + gen + " templates");
  return out;
}

std::string message(const char* role, const std::string& content) {
  std::string m = "{\"role\":";
  io::append_json_string(m, role);
  m += ",\"content\":";
  io::append_json_string(m, content);
  m += "}";
  return m;
}

// A persona line's text: the "persona" field, else "text" (JSON strings).
std::string persona_text(const io::RawFields& f, const std::string& at) {
  const std::string* raw = f.find("persona");
  if (!raw) raw = f.find("text");
  if (!raw) throw FormatError(at + ": a persona needs a \"persona\" (or \"text\") string field");
  simdjson::padded_string padded(*raw);
  simdjson::dom::parser parser;
  std::string_view s;
  if (parser.parse(padded).get_string().get(s) != simdjson::SUCCESS)
    throw FormatError(at + ": field \"persona\" must be a string");
  if (normalize_whitespace(s).empty()) throw FormatError(at + ": empty persona");
  return std::string(s);
}

}  // namespace

void run_prompts(const PromptOptions& o, const cli::Tool& tool) {
  const auto templates = load_templates(o);
  const std::vector<std::pair<std::string, std::string>> values = {{"language", o.language}};
  cli::Progress progress(tool.name(), "prompts", std::nullopt, tool.common().quiet);
  io::JsonlReader reader(o.personas);
  io::JsonlWriter out(o.output);
  io::RawFields fields;
  std::int64_t personas = 0;
  std::string line;
  while (reader.next(fields)) {
    const std::string at = where(reader.name(), reader.line_number());
    const std::string persona = persona_text(fields, at);
    ++personas;
    for (const auto& t : templates) {
      line = "{\"id\":";
      io::append_json_string(line, "p" + std::to_string(personas) + "-" + t.type);
      line += ",\"persona\":";
      io::append_json_string(line, persona);
      line += ",\"task_type\":";
      io::append_json_string(line, t.type);
      const std::string generate = fill_template(t.generate, values);
      if (!t.brainstorm.empty()) {
        // Two-step type: the persona shapes the brainstormed tasks only, so the
        // example-generation step cannot meet a second, conflicting persona.
        line += ",\"step\":\"brainstorm\",\"messages\":[" + message("system", persona) + "," +
                message("user", fill_template(t.brainstorm, values)) + "]";
        line += ",\"next\":{\"step\":\"generate\",\"messages\":[" + message("user", generate) + "]}";
      } else {
        line += ",\"step\":\"generate\",\"messages\":[" + message("system", persona) + "," +
                message("user", generate) + "]";
      }
      line += "}";
      out.write_line(line);
      progress.advance();
    }
  }
  out.finish();
  progress.finish(std::to_string(personas) + " personas x " + std::to_string(templates.size()) +
                  " task types = " + std::to_string(out.records()) + " prompts");
}

}  // namespace kalm::mine
