#include "kalm/train/data.h"

#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <filesystem>
#include <numeric>

#include "kalm/error.h"
#include "kalm/io/jsonl.h"
#include "kalm/io/records.h"

namespace kalm::train {
namespace {

namespace fs = std::filesystem;

std::string task_name_of_file(const fs::path& path) {
  std::string name = path.filename().string();
  for (bool changed = true; changed;) {
    changed = false;
    for (const char* ext : {".zst", ".jsonl", ".json"}) {
      const std::string e(ext);
      if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0) {
        name.resize(name.size() - e.size());
        changed = true;
      }
    }
  }
  return name;
}

bool hidden(const fs::path& p) {
  auto n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

std::vector<fs::path> sorted_entries(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (!hidden(it->path())) out.push_back(it->path());
  if (ec) throw IoError(dir.string() + ": cannot list directory: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

void collect_files(const fs::path& dir, std::vector<fs::path>& out) {
  for (const auto& p : sorted_entries(dir)) {
    if (fs::is_directory(p))
      collect_files(p, out);
    else
      out.push_back(p);
  }
}

// (file, default task name) in reading order.
std::vector<std::pair<std::string, std::string>> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& in : inputs) {
    if (in.empty() || in == "-")
      throw UsageError("training data must come from files or directories, not stdin (tasks are named by files)");
    fs::path p(in);
    std::error_code ec;
    auto status = fs::status(p, ec);
    if (ec || !fs::exists(status)) throw IoError(in + ": no such file or directory");
    if (fs::is_directory(status)) {
      for (const auto& entry : sorted_entries(p)) {
        if (fs::is_directory(entry)) {
          std::vector<fs::path> sub;
          collect_files(entry, sub);
          for (const auto& f : sub) files.emplace_back(f.string(), entry.filename().string());
        } else {
          files.emplace_back(entry.string(), task_name_of_file(entry));
        }
      }
    } else {
      files.emplace_back(p.string(), task_name_of_file(p));
    }
  }
  return files;
}

std::map<std::string, std::string> read_instructions(const std::string& path) {
  std::map<std::string, std::string> out;
  simdjson::dom::parser parser;
  simdjson::padded_string text;
  if (simdjson::padded_string::load(path).get(text) != simdjson::SUCCESS)
    throw IoError(path + ": cannot read the instructions file");
  simdjson::dom::element doc;
  if (auto err = parser.parse(text).get(doc))
    throw FormatError(path + ": invalid JSON (" + simdjson::error_message(err) + ")");
  simdjson::dom::object obj;
  if (doc.get_object().get(obj) != simdjson::SUCCESS)
    throw FormatError(path + ": expected a JSON object {\"task\": \"instruction\", ...}");
  for (auto field : obj) {
    std::string_view value;
    if (field.value.get_string().get(value) != simdjson::SUCCESS)
      throw FormatError(path + ": instruction of task '" + std::string(field.key) + "' is not a string");
    out[std::string(field.key)] = std::string(value);
  }
  return out;
}

template <typename T>
void fisher_yates(std::vector<T>& v, std::mt19937_64& rng) {
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[uniform_index(rng, i)]);
}

}  // namespace

std::uint64_t uniform_index(std::mt19937_64& rng, std::uint64_t n) {
  KALM_ASSERT(n >= 1, "uniform_index over an empty range");
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t x;
  do x = rng();
  while (x >= limit);
  return x % n;
}

std::mt19937_64 batch_rng(std::uint64_t seed, std::uint64_t epoch, std::uint64_t batch) {
  std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32), 0x6b616c6du,
                    static_cast<std::uint32_t>(epoch), static_cast<std::uint32_t>(epoch >> 32),
                    static_cast<std::uint32_t>(batch), static_cast<std::uint32_t>(batch >> 32)};
  return std::mt19937_64(seq);
}

std::string apply_query_template(const std::string& instruction_template, const std::string& instruction,
                                 const std::string& query) {
  const std::string ki = "{instruction}", kq = "{query}";
  auto pi = instruction_template.find(ki);
  auto pq = instruction_template.find(kq);
  if (pi == std::string::npos || pq == std::string::npos)
    throw UsageError("--instruction-template must contain {instruction} and {query}: '" + instruction_template + "'");
  // Replace in one pass so that an instruction containing "{query}" stays literal.
  std::string out;
  if (pi < pq) {
    out = instruction_template.substr(0, pi) + instruction + instruction_template.substr(pi + ki.size(), pq - pi - ki.size()) +
          query + instruction_template.substr(pq + kq.size());
  } else {
    out = instruction_template.substr(0, pq) + query + instruction_template.substr(pq + kq.size(), pi - pq - kq.size()) +
          instruction + instruction_template.substr(pi + ki.size());
  }
  return out;
}

std::string query_prompt(const std::string& instruction_template, const std::string& instruction) {
  const std::string kq = "{query}", ki = "{instruction}";
  auto pq = instruction_template.find(kq);
  if (pq == std::string::npos || pq + kq.size() != instruction_template.size()) return {};
  std::string prefix = instruction_template.substr(0, pq);
  auto pi = prefix.find(ki);
  if (pi == std::string::npos) return {};
  return prefix.replace(pi, ki.size(), instruction);
}

Dataset load_dataset(const DataOptions& options) {
  if (options.inputs.empty()) throw UsageError("no training data: give at least one JSONL file or directory");
  apply_query_template(options.instruction_template, "", "");  // validates the template early
  std::optional<std::map<std::string, std::string>> table;
  if (!options.instructions_file.empty()) table = read_instructions(options.instructions_file);

  Dataset data;
  std::map<std::string, std::int32_t> task_index;
  io::TrainingGroup record;
  for (const auto& [file, default_task] : expand_inputs(options.inputs)) {
    io::JsonlReader reader(file);
    while (reader.next(record)) {
      const std::string here = where(reader.name(), reader.line_number());
      const std::string& task = record.task ? *record.task : default_task;
      auto [it, inserted] = task_index.emplace(task, static_cast<std::int32_t>(data.tasks.size()));
      if (inserted) data.tasks.push_back(task);

      std::optional<std::string> instruction = record.instruction;
      if (!instruction && table) {
        auto found = table->find(task);
        if (found == table->end())
          throw FormatError(here + ": task '" + task + "' has no entry in " + options.instructions_file +
                           " (use \"\" for no instruction)");
        instruction = found->second;
      }
      Example ex;
      if (instruction && !instruction->empty()) {
        ex.query = apply_query_template(options.instruction_template, *instruction, record.query);
        ex.prompt = query_prompt(options.instruction_template, *instruction);
        data.instructions.emplace(task, *instruction);
      } else {
        ex.query = record.query;
      }
      ex.pos = std::move(record.pos);
      ex.neg = std::move(record.neg);
      ex.pos_scores = std::move(record.pos_scores);
      ex.neg_scores = std::move(record.neg_scores);
      ex.task = it->second;
      ex.type = record.type ? std::string(io::task_type_name(*record.type)) : std::string();
      ex.source = here;
      data.examples.push_back(std::move(ex));
    }
  }
  if (data.examples.empty()) {
    std::string names;
    for (const auto& input : options.inputs) names += (names.empty() ? "" : ", ") + display_name(input);
    throw FormatError(names + ": no training groups (the input is empty)");
  }
  for (const auto& [task, factor] : options.oversample) {
    if (task_index.count(task) == 0) {
      std::string names;
      for (const auto& t : data.tasks) names += (names.empty() ? "" : ", ") + t;
      throw UsageError("--oversample " + task + "=" + std::to_string(factor) + ": no input has task '" + task +
                       "' (tasks: " + names + ")");
    }
    if (factor < 1)
      throw UsageError("--oversample " + task + "=" + std::to_string(factor) + ": the factor must be at least 1");
  }
  if (!options.oversample.empty()) {
    const std::size_t loaded = data.examples.size();
    std::vector<std::int64_t> factor(data.tasks.size(), 1);
    for (const auto& [task, k] : options.oversample) factor[static_cast<std::size_t>(task_index.at(task))] = k;
    for (std::int64_t copy = 1;; ++copy) {
      bool any = false;
      for (std::size_t i = 0; i < loaded; ++i) {
        if (factor[static_cast<std::size_t>(data.examples[i].task)] <= copy) continue;
        data.examples.push_back(data.examples[i]);
        any = true;
      }
      if (!any) break;
    }
  }
  return data;
}

std::pair<std::string, std::int64_t> parse_oversample(const std::string& spec) {
  const auto eq = spec.rfind('=');
  const auto bad = [&](const std::string& why) {
    return UsageError("--oversample '" + spec + "': " + why + " (want TASK=K, K an integer from 1 to 1000)");
  };
  if (eq == std::string::npos || eq == 0) throw bad("no task name");
  const std::string number = spec.substr(eq + 1);
  if (number.empty() || number.size() > 4 || number.find_first_not_of("0123456789") != std::string::npos)
    throw bad("'" + number + "' is not a whole number");
  const std::int64_t k = std::stoll(number);
  if (k < 1 || k > 1000) throw bad("the factor " + number + " is out of range");
  return {spec.substr(0, eq), k};
}

EpochPlan plan_epoch(const Dataset& data, const BatchingOptions& options, std::uint64_t seed, std::uint64_t epoch) {
  const auto b = options.batch_size;
  if (b < 1) throw UsageError("--batch-size must be at least 1");
  if (!(options.homogeneous_ratio >= 0.0 && options.homogeneous_ratio <= 1.0))
    throw UsageError("--homogeneous-ratio must lie in [0, 1], got " + std::to_string(options.homogeneous_ratio));
  const std::size_t bs = static_cast<std::size_t>(b);
  if (data.examples.size() < bs)
    throw UsageError("--batch-size " + std::to_string(b) + " exceeds the " + std::to_string(data.examples.size()) +
                     " training groups");
  std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32), 0x706c616eu,
                    static_cast<std::uint32_t>(epoch), static_cast<std::uint32_t>(epoch >> 32)};
  std::mt19937_64 rng(seq);

  EpochPlan plan;
  auto cut = [&](std::vector<std::size_t>& pool, std::vector<std::size_t>* leftover) {
    std::size_t full = pool.size() / bs * bs;
    for (std::size_t i = 0; i < full; i += bs)
      plan.batches.emplace_back(pool.begin() + static_cast<std::ptrdiff_t>(i),
                                pool.begin() + static_cast<std::ptrdiff_t>(i + bs));
    if (leftover)
      leftover->insert(leftover->end(), pool.begin() + static_cast<std::ptrdiff_t>(full), pool.end());
    else
      plan.dropped += pool.size() - full;
  };

  if (!options.task_homogeneous) {
    std::vector<std::size_t> all(data.examples.size());
    std::iota(all.begin(), all.end(), std::size_t{0});
    fisher_yates(all, rng);
    cut(all, nullptr);
    return plan;
  }

  std::vector<std::vector<std::size_t>> by_task(data.tasks.size());
  for (std::size_t i = 0; i < data.examples.size(); ++i)
    by_task[static_cast<std::size_t>(data.examples[i].task)].push_back(i);
  std::vector<std::size_t> leftovers;
  for (auto& indices : by_task) {
    fisher_yates(indices, rng);
    cut(indices, &leftovers);
  }
  fisher_yates(leftovers, rng);
  cut(leftovers, nullptr);
  fisher_yates(plan.batches, rng);

  const auto mixed = static_cast<std::size_t>(std::floor(static_cast<double>(b) * (1.0 - options.homogeneous_ratio)));
  if (mixed > 0) {
    std::vector<std::size_t> pool;
    for (auto& batch : plan.batches) pool.insert(pool.end(), batch.end() - static_cast<std::ptrdiff_t>(mixed), batch.end());
    fisher_yates(pool, rng);
    std::size_t k = 0;
    for (auto& batch : plan.batches)
      for (std::size_t s = bs - mixed; s < bs; ++s) batch[s] = pool[k++];
  }
  return plan;
}

SampledGroup sample_group(const Dataset& data, std::size_t index, std::int64_t num_negatives, bool with_scores,
                          std::mt19937_64& rng) {
  const Example& ex = data.examples.at(index);
  if (with_scores && (ex.pos_scores.empty() || (num_negatives > 0 && ex.neg_scores.empty())))
    throw FormatError(ex.source + ": distillation needs teacher scores: the record has no " +
                      std::string(ex.pos_scores.empty() ? "pos_scores" : "neg_scores"));
  SampledGroup g;
  g.query = ex.query;
  const std::size_t p = uniform_index(rng, ex.pos.size());
  g.passages.push_back(ex.pos[p]);
  if (with_scores) g.teacher_scores.push_back(ex.pos_scores[p]);
  if (num_negatives <= 0) return g;
  if (ex.neg.empty())
    throw FormatError(ex.source + ": the group has no negatives but " + std::to_string(num_negatives) +
                      " per query are asked for (--num-negatives; pre-training uses 0)");
  const std::size_t m = static_cast<std::size_t>(num_negatives);
  const std::size_t copies = (m + ex.neg.size() - 1) / ex.neg.size();
  std::vector<std::size_t> pool(ex.neg.size() * copies);
  for (std::size_t i = 0; i < pool.size(); ++i) pool[i] = i % ex.neg.size();
  // Partial Fisher-Yates: the first m slots are a uniform sample without replacement.
  for (std::size_t i = 0; i < m; ++i) std::swap(pool[i], pool[i + uniform_index(rng, pool.size() - i)]);
  for (std::size_t i = 0; i < m; ++i) {
    g.passages.push_back(ex.neg[pool[i]]);
    if (with_scores) g.teacher_scores.push_back(ex.neg_scores[pool[i]]);
  }
  return g;
}

}  // namespace kalm::train
