#include "kalm/eval/eval_command.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <set>

#include "kalm/cli/progress.h"
#include "kalm/encode/engine.h"
#include "kalm/encode/model_embedder.h"
#include "kalm/encode/embed_command.h"
#include "kalm/error.h"
#include "kalm/eval/trec_files.h"
#include "kalm/io/atomic_file.h"
#include "kalm/io/jsonl.h"
#include "kalm/io/safetensors.h"
#include "kalm/model/device.h"
#include "kalm/model/tensor_io.h"
#include "kalm/search/topk.h"
#include "kalm/version.h"

namespace kalm::eval {
namespace {

namespace fs = std::filesystem;

// Tokenises and embeds in chunks so memory holds one chunk's token ids at a time.
class ModelEncoder : public TextEncoder {
 public:
  ModelEncoder(encode::LoadedEmbedder model, const EvalOptions& o)
      : model_(std::move(model)), max_length_(encode::resolve_max_length(o.max_length, model_.max_seq_length)) {
    encode::EngineOptions eo;
    eo.batch_tokens = o.batch_tokens;
    engine_ = std::make_unique<encode::Engine>(*model_.embedder, eo);
  }

  torch::Tensor encode(const std::vector<std::string>& texts, const std::string& what,
                       const std::string& prompt) override {
    // Tokens of the prompt the pooling leaves out (0 unless include_prompt=false).
    const std::int64_t skip = encode::prompt_pool_skip(model_, *model_.tokenizer, prompt);
    constexpr std::size_t kChunk = 8192;
    text::EncodeOptions enc;
    enc.add_special_tokens = true;
    enc.max_length = static_cast<std::size_t>(max_length_);
    std::vector<torch::Tensor> parts;
    for (std::size_t begin = 0; begin < texts.size(); begin += kChunk) {
      const std::size_t end = std::min(texts.size(), begin + kChunk);
      std::vector<std::string> chunk(texts.begin() + static_cast<std::ptrdiff_t>(begin),
                                     texts.begin() + static_cast<std::ptrdiff_t>(end));
      std::vector<text::Encoding> encodings;
      try {
        encodings = model_.tokenizer->encode_batch(chunk, enc);
      } catch (const FormatError& e) {
        throw FormatError(what + ": " + e.what());
      }
      std::vector<std::vector<std::int32_t>> seqs;
      seqs.reserve(encodings.size());
      for (std::size_t i = 0; i < encodings.size(); ++i) {
        if (encodings[i].ids.empty())
          throw FormatError(what + ": text " + std::to_string(begin + i + 1) +
                            " has no tokens (empty text and the model adds no special tokens)");
        if (skip > 0 && static_cast<std::int64_t>(encodings[i].ids.size()) <= skip)
          throw FormatError(what + ": text " + std::to_string(begin + i + 1) + " has " +
                            std::to_string(encodings[i].ids.size()) + " tokens, all of them its instruction, which "
                            "the model's pooling leaves out (include_prompt=false): nothing is left to pool");
        seqs.push_back(std::move(encodings[i].ids));
      }
      parts.push_back(engine_->embed(seqs, {}, skip > 0 ? std::vector<std::int64_t>(seqs.size(), skip)
                                                        : std::vector<std::int64_t>()));
      if (progress_) progress_->advance(seqs.size());
    }
    if (parts.empty()) return torch::zeros({0, model_.dim});
    return parts.size() == 1 ? parts[0] : torch::cat(parts, 0);
  }
  std::int64_t dim() const override { return model_.dim; }
  std::int64_t max_length() const { return max_length_; }
  void set_progress(cli::Progress* p) { progress_ = p; }

 private:
  encode::LoadedEmbedder model_;
  std::int64_t max_length_;
  std::unique_ptr<encode::Engine> engine_;
  cli::Progress* progress_ = nullptr;
};

void write_text(const std::string& path, const std::string& text) {
  io::AtomicOutputFile out(path);
  out.write(text.data(), text.size());
  out.commit();
}

std::string version_string() { return std::string(kVersion) + " (git " + kGitRevision + ")"; }

}  // namespace

std::vector<std::int64_t> parse_dims(const std::string& spec) {
  std::vector<std::int64_t> dims;
  if (spec.empty()) return dims;
  std::size_t pos = 0;
  while (true) {
    const std::size_t comma = spec.find(',', pos);
    const std::string item = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < 1)
      throw UsageError("--dim wants positive integers separated by commas (e.g. 896,256,64), got '" + spec + "'");
    if (std::find(dims.begin(), dims.end(), v) != dims.end())
      throw UsageError("--dim names width " + item + " twice");
    dims.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return dims;
}

std::vector<std::string> read_suite(const std::string& path) {
  if (!fs::exists(path)) throw IoError(path + ": no such file (--suite)");
  io::LineReader reader(path);
  const fs::path base = fs::path(path).parent_path();
  std::vector<std::string> dirs;
  std::string_view line;
  while (reader.next(line)) {
    auto b = line.find_first_not_of(" \t");
    if (b == std::string_view::npos || line[b] == '#') continue;
    auto e = line.find_last_not_of(" \t");
    fs::path p(std::string(line.substr(b, e - b + 1)));
    if (p.is_relative()) p = base / p;
    if (!fs::is_directory(p))
      throw FormatError(where(reader.name(), reader.line_number()) + ": task directory " + p.string() +
                        " does not exist");
    dirs.push_back(p.lexically_normal().string());
  }
  if (dirs.empty()) throw FormatError(display_name(path) + ": the suite names no task directory");
  return dirs;
}

std::unique_ptr<TextEncoder> open_model_encoder(const EvalOptions& o, bool) {
  encode::EmbedderSettings settings{o.dtype, o.device, o.pooling, o.attention};
  auto model = encode::load_embedder(o.model, settings, /*require_tokenizer=*/true);
  if (!model.tokenizer) throw ModelError(o.model + ": has no tokenizer (tokenizer.json or tokenizer.model)");
  return std::make_unique<ModelEncoder>(std::move(model), o);
}

void add_eval_flags(cli::Tool& tool, EvalOptions& o) {
  auto& app = tool.app();
  app.add_option("tasks", o.tasks, "Task directories (each with a task.json)")->group(cli::kGroupInput);
  app.add_option("--suite", o.suite, "File listing task directories, one per line (relative to the file)")
      ->group(cli::kGroupInput);
  app.add_option("--split", o.splits, "Evaluate these splits instead of each task's (repeatable)")
      ->group(cli::kGroupInput);
  app.add_option("--query-embeddings", o.query_embeddings,
                 "Precomputed query embeddings (safetensors 'embeddings', queries.jsonl order); retrieval only")
      ->group(cli::kGroupInput);
  app.add_option("--corpus-embeddings", o.corpus_embeddings,
                 "Precomputed corpus embeddings (safetensors 'embeddings', corpus.jsonl order); retrieval only")
      ->group(cli::kGroupInput);
  app.add_option("--qrels", o.qrels, "TREC qrels file: score --run against it and print JSON")->group(cli::kGroupInput);
  app.add_option("--run", o.run, "TREC run file (with --qrels)")->group(cli::kGroupInput);
  app.add_flag("--per-query", o.per_query, "--qrels/--run: add every query's measures")->group(cli::kGroupOutput);
  app.add_option("--output-dir", o.output_dir, "Write one results JSON per task here (created if missing)")
      ->group(cli::kGroupOutput);
  app.add_option("--dim", o.dim, "Matryoshka widths to score, comma-separated, e.g. 896,256,64 (default: the model's)")
      ->group(cli::kGroupOutput);
  app.add_flag("--bm25,--baselines,!--no-bm25,!--no-baselines", o.bm25,
               "Score the lexical baselines: BM25 beside retrieval and reranking, TF-IDF vectors beside the other "
               "task types (default on)")
      ->group(cli::kGroupOutput);
  app.add_option("--top-k", o.top_k, "Retrieval: documents ranked per query")
      ->check(cli::positive_number())
      ->group(cli::kGroupOutput);
  encode::ModelFlagTargets model_flags;  // no --instruction: instructions come from the task files
  model_flags.model = &o.model;
  model_flags.instruction_template = &o.instruction_template;
  model_flags.instruction_template_help = "How a task instruction prefixes a text";
  model_flags.max_length = &o.max_length;
  model_flags.pooling = &o.pooling;
  model_flags.attention = &o.attention;
  encode::add_model_flags(app, model_flags);
  app.add_flag("--instructions,!--no-instructions", o.instructions, "Apply the tasks' instructions")
      ->group(cli::kGroupModel);
  encode::add_compute_flags(app, o.batch_tokens, o.dtype, o.device);
  encode::add_search_precision_flag(app, o.search_precision);
}

void run_eval(const EvalOptions& o, const cli::Tool& tool) {
  const bool quiet = tool.common().quiet;
  // ---- TREC files ----------------------------------------------------------
  if (!o.qrels.empty() || !o.run.empty()) {
    if (o.qrels.empty() || o.run.empty()) throw UsageError("--qrels and --run go together");
    if (!o.tasks.empty() || !o.suite.empty() || !o.model.empty())
      throw UsageError("--qrels/--run score a run file; they take no task directories and no --model");
    std::string json = evaluate_trec_files(o.qrels, o.run, o.per_query);
    write_text("-", json);
    return;
  }
  if (o.per_query) throw UsageError("--per-query goes with --qrels/--run");
  if (!o.pooling.empty() && o.pooling != "mean" && o.pooling != "last" && o.pooling != "cls")
    throw UsageError("--pooling must be mean, last or cls, not '" + o.pooling + "'");
  if (!o.attention.empty() && o.attention != "causal" && o.attention != "bidirectional")
    throw UsageError("--attention must be causal or bidirectional, not '" + o.attention + "'");

  std::vector<std::string> dirs = o.tasks;
  if (!o.suite.empty())
    for (auto& d : read_suite(o.suite)) dirs.push_back(d);
  if (dirs.empty()) throw UsageError("no task: give task directories, --suite FILE, or --qrels with --run");

  // Read every task.json first: a typo in the last task should not cost a model run.
  std::vector<TaskSpec> specs;
  std::set<std::string> names;
  for (const auto& d : dirs) {
    specs.push_back(load_task_spec(d));
    if (!names.insert(specs.back().name).second)
      throw UsageError("two tasks are named '" + specs.back().name + "' (" + d +
                       "); their results files would collide");
  }

  RunnerOptions ro;
  ro.dims = parse_dims(o.dim);
  ro.instruction_template = o.instruction_template;
  ro.use_instructions = o.instructions;
  ro.bm25 = o.bm25;
  ro.top_k = o.top_k;
  // Retrieval searches where the model runs (the rank's own GPU under
  // torchrun), so auto is decided for that device.
  ro.search_device = encode::device_for_this_process(o.device);
  ro.search_precision = search::resolve_search_precision(o.search_precision, ro.search_device);
  search::resolve_f32_products(search::F32Products::Auto);  // a bad KALM_SEARCH_BLAS fails before any work
  ro.seed = tool.common().seed;
  ro.splits = o.splits;
  if (o.instructions && ro.instruction_template.find("{instruction}") == std::string::npos)
    throw UsageError("--instruction-template must contain {instruction}: '" + ro.instruction_template + "'");

  const bool precomputed = !o.query_embeddings.empty() || !o.corpus_embeddings.empty();
  std::unique_ptr<TextEncoder> encoder;
  ResultMeta meta;
  meta.kalm_version = version_string();
  meta.command = tool.command_line();
  torch::Tensor query_emb, corpus_emb;
  if (precomputed) {
    if (o.query_embeddings.empty() || o.corpus_embeddings.empty())
      throw UsageError("--query-embeddings and --corpus-embeddings go together");
    if (!o.model.empty()) throw UsageError("give --model or precomputed embeddings, not both");
    if (specs.size() != 1) throw UsageError("precomputed embeddings belong to one retrieval task; give exactly one");
    query_emb = model::load_embedding_matrix(o.query_embeddings);
    corpus_emb = model::load_embedding_matrix(o.corpus_embeddings);
    meta.model = o.query_embeddings + " + " + o.corpus_embeddings;
  } else {
    if (o.model.empty()) throw UsageError("--model is required (or --query-embeddings/--corpus-embeddings)");
    encoder = open_model_encoder(o, quiet);
    meta.model = o.model;
    if (auto* m = dynamic_cast<ModelEncoder*>(encoder.get())) meta.max_length = m->max_length();
  }

  if (!o.output_dir.empty()) {
    std::error_code ec;
    fs::create_directories(o.output_dir, ec);
    if (ec || !fs::is_directory(o.output_dir))
      throw IoError(o.output_dir + ": cannot create the output directory: " + ec.message());
  }

  std::vector<TaskResult> results;
  for (const auto& spec : specs) {
    cli::Progress progress(tool.name(), "texts", std::nullopt, quiet);
    if (auto* m = dynamic_cast<ModelEncoder*>(encoder.get())) m->set_progress(&progress);
    TaskResult r = precomputed ? run_retrieval_with_embeddings(spec, query_emb, corpus_emb, ro)
                               : run_task(spec, *encoder, ro);
    if (auto* m = dynamic_cast<ModelEncoder*>(encoder.get())) m->set_progress(nullptr);
    if (!o.output_dir.empty())
      write_text((fs::path(o.output_dir) / (spec.name + ".json")).string(), task_result_json(r, meta));
    char summary[256];
    std::snprintf(summary, sizeof summary,
                  "%s: %llu texts embedded; %s (encode %s, search %s, metrics %s, bm25 %s, tfidf %s)",
                  spec.name.c_str(), static_cast<unsigned long long>(progress.count()),
                  cli::format_seconds(r.seconds).c_str(), cli::format_seconds(r.timing.encode).c_str(),
                  cli::format_seconds(r.timing.search).c_str(), cli::format_seconds(r.timing.metrics).c_str(),
                  cli::format_seconds(r.timing.bm25).c_str(), cli::format_seconds(r.timing.tfidf).c_str());
    progress.finish(summary);
    results.push_back(std::move(r));
  }
  write_text("-", results_table(results));
}

}  // namespace kalm::eval
