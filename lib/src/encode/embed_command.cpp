#include "kalm/encode/embed_command.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <optional>
#include <thread>

#include "kalm/cli/progress.h"
#include "kalm/core/launcher.h"
#include "kalm/io/atomic_file.h"
#include "kalm/core/profile.h"
#include "kalm/encode/engine.h"
#include "kalm/encode/model_embedder.h"
#include "kalm/error.h"
#include "kalm/io/json_writer.h"
#include "kalm/io/jsonl.h"
#include "kalm/io/npy.h"
#include "kalm/io/quantize.h"
#include "kalm/io/safetensors.h"
#include "kalm/io/zstd_stream.h"
#include "kalm/model/sentence_transformers.h"
#include "kalm/version.h"

namespace kalm::encode {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string resolve_output_format(const EmbedOptions& o) {
  if (o.output_format != "auto") return o.output_format;
  if (ends_with(o.output, ".npy")) return "npy";
  if (ends_with(o.output, ".jsonl") || ends_with(o.output, ".jsonl.zst") || ends_with(o.output, ".json") ||
      o.output == "-")
    return "jsonl";
  return "safetensors";
}

// Where the records come from: every input file in turn, as one stream of records
// with file:line positions kept for messages.
class RecordSource {
 public:
  RecordSource(std::vector<std::string> inputs, io::InputFormat format)
      : inputs_(inputs.empty() ? std::vector<std::string>{"-"} : std::move(inputs)), format_(format) {}

  bool next(io::CorpusRecord& record) {
    while (true) {
      if (!reader_) {
        if (file_ >= inputs_.size()) return false;
        io::ReaderOptions ro;
        ro.format = format_;
        reader_ = std::make_unique<io::JsonlReader>(inputs_[file_++], ro);
      }
      if (reader_->next(record)) return true;
      reader_.reset();
    }
  }
  std::string position() const {
    return reader_ ? where(reader_->name(), reader_->line_number()) : std::string("<input>");
  }

 private:
  std::vector<std::string> inputs_;
  io::InputFormat format_;
  std::size_t file_ = 0;
  std::unique_ptr<io::JsonlReader> reader_;
};

// Counts the records of the inputs (a first pass, for --shard).
std::int64_t count_records(const std::vector<std::string>& inputs, io::InputFormat format) {
  RecordSource source(inputs, format);
  io::CorpusRecord record;
  std::int64_t n = 0;
  while (source.next(record)) ++n;
  return n;
}

// ---- multi-process launches ------------------------------------------------

struct MultiProcess {
  int rank = 0, world = 1;
  std::string output;   // the final output; parts live beside it
  std::string run_key;  // what makes a part this run's: launcher run id, command, inputs
  double timeout_s = 0;
  std::string part_path(int r) const {
    return output + ".part-" + std::to_string(r) + "-of-" + std::to_string(world);
  }
  std::string failed_path(int r) const { return part_path(r) + ".failed"; }
};

// The launch this process belongs to; world 1 without a launcher.
MultiProcess multi_process(const EmbedOptions& o, const std::string& format, const std::string& command_line) {
  const core::LaunchEnvironment launch = core::read_launch_environment(core::process_env);
  MultiProcess mp;
  if (!launch.world_size || *launch.world_size <= 1) return mp;
  mp.world = *launch.world_size;
  mp.rank = *launch.rank;
  const std::string where = "a launch of " + std::to_string(mp.world) + " processes (" + launch.source + ")";
  if (mp.rank >= mp.world)
    throw UsageError(launch.rank_name + " " + std::to_string(mp.rank) + " is not below " + launch.world_name + " " +
                     std::to_string(mp.world));
  if (!o.shard.empty())
    throw UsageError("--shard and " + where + " are exclusive: the launch already splits the corpus");
  if (format != "safetensors" && format != "npy")
    throw UsageError(where + " writes a safetensors or npy output (rank 0 joins the ranks' parts), not " + format);
  if (io::is_stdio(o.output)) throw UsageError(where + " needs -o FILE: the ranks write their parts beside it");
  if (!(o.dist_timeout > 0)) throw UsageError("--dist-timeout must be a positive number of seconds");
  mp.output = o.output;
  mp.timeout_s = o.dist_timeout;
  // Parts of an earlier run (a killed one) must not pass for this run's.
  std::string key = command_line;
  for (const char* id : {"TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "SLURM_STEP_ID"})
    if (const char* v = core::process_env(id)) key += std::string("|") + id + "=" + v;
  for (const auto& in : o.inputs) {
    struct stat st {};
    if (::stat(in.c_str(), &st) == 0)
      key += "|" + in + ":" + std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
             std::to_string(st.st_mtim.tv_nsec);
  }
  mp.run_key = key;
  return mp;
}

void write_part(const MultiProcess& mp, const std::vector<float>& matrix, std::int64_t dim) {
  const std::int64_t rows = dim > 0 ? static_cast<std::int64_t>(matrix.size()) / dim : 0;
  io::SafetensorsWriter st;
  st.add("embeddings", io::DType::F32, {rows, dim}, matrix.data(), matrix.size() * sizeof(float));
  st.set_metadata("run_key", mp.run_key);
  st.set_metadata("rank", std::to_string(mp.rank));
  st.write(mp.part_path(mp.rank));
}

// Tells rank 0 at once that this rank failed (instead of letting it time out).
void write_failure(const MultiProcess& mp, const std::string& message) {
  try {
    io::AtomicOutputFile out(mp.failed_path(mp.rank));
    const std::string text = mp.run_key + "\n" + message + "\n";
    out.write(text.data(), text.size());
    out.commit();
  } catch (const Error&) {
    // Best effort: rank 0 then reports the missing part when it times out.
  }
}

std::optional<std::string> read_failure(const MultiProcess& mp, int r) {
  std::ifstream in(mp.failed_path(r));
  std::string key, message;
  if (!in || !std::getline(in, key) || key != mp.run_key) return std::nullopt;
  std::getline(in, message);
  return message;
}

// Rank 0: waits for every rank's part of this run, then interleaves their
// chunks back into input order.
std::vector<float> join_parts(const MultiProcess& mp, const std::vector<std::int64_t>& chunk_rows, std::int64_t dim) {
  std::vector<std::optional<io::SafetensorsFile>> parts(static_cast<std::size_t>(mp.world));
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < mp.world; ++r) {
    for (;;) {
      if (auto failure = read_failure(mp, r))
        throw IoError("rank " + std::to_string(r) + " of " + std::to_string(mp.world) + " failed: " + *failure);
      if (::access(mp.part_path(r).c_str(), F_OK) == 0) {
        io::SafetensorsFile file = io::SafetensorsFile::open(mp.part_path(r));
        if (file.metadata_value("run_key") == mp.run_key) {
          parts[static_cast<std::size_t>(r)] = std::move(file);
          break;
        }
      }
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > mp.timeout_s)
        throw IoError(display_name(mp.part_path(r)) + ": rank " + std::to_string(r) + "'s part of this run did not "
                      "appear within --dist-timeout " + std::to_string(static_cast<long long>(mp.timeout_s)) + " s");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  std::int64_t total = 0;
  for (auto n : chunk_rows) total += n;
  std::vector<float> joined;
  joined.reserve(static_cast<std::size_t>(total * dim));
  std::vector<std::int64_t> taken(static_cast<std::size_t>(mp.world), 0);  // rows used from each part
  for (std::size_t c = 0; c < chunk_rows.size(); ++c) {
    const int r = static_cast<int>(c % static_cast<std::size_t>(mp.world));
    const io::SafetensorsFile& file = *parts[static_cast<std::size_t>(r)];
    const io::TensorInfo& info = file.at("embeddings");
    const std::int64_t have = info.shape.size() == 2 ? info.shape[0] : -1;
    const std::int64_t width = info.shape.size() == 2 ? info.shape[1] : -1;
    auto& from = taken[static_cast<std::size_t>(r)];
    if (info.dtype != io::DType::F32 || width != dim || from + chunk_rows[c] > have)
      throw FormatError(display_name(file.path()) + ": rank " + std::to_string(r) + "'s part does not hold its chunks "
                        "of the input (a different input or model?)");
    const float* data = reinterpret_cast<const float*>(file.data(info));
    joined.insert(joined.end(), data + from * dim, data + (from + chunk_rows[c]) * dim);
    from += chunk_rows[c];
  }
  for (int r = 0; r < mp.world; ++r) {
    const io::TensorInfo& info = parts[static_cast<std::size_t>(r)]->at("embeddings");
    if (taken[static_cast<std::size_t>(r)] != info.shape[0])
      throw FormatError(display_name(parts[static_cast<std::size_t>(r)]->path()) + ": rank " + std::to_string(r) +
                        "'s part has " + std::to_string(info.shape[0]) + " rows, its chunks of the input " +
                        std::to_string(taken[static_cast<std::size_t>(r)]));
  }
  return joined;
}

void remove_parts(const MultiProcess& mp) {
  for (int r = 0; r < mp.world; ++r) {
    ::unlink(mp.part_path(r).c_str());
    ::unlink(mp.failed_path(r).c_str());
  }
}

struct Chunk {
  std::vector<std::string> ids;
  std::vector<bool> has_id;
  std::vector<std::string> texts;                    // prompt + text, for text records
  std::vector<std::vector<std::int32_t>> sequences;  // token ids, after truncation
  std::vector<std::string> positions;                // file:line per record, for errors
  std::vector<bool> pretokenized;
  std::int64_t truncated = 0;                        // records cut at the token limit
};

}  // namespace

std::pair<std::int64_t, std::int64_t> parse_shard(const std::string& spec) {
  auto slash = spec.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument("no slash");
    std::size_t used1 = 0, used2 = 0;
    long long k = std::stoll(spec.substr(0, slash), &used1);
    long long n = std::stoll(spec.substr(slash + 1), &used2);
    if (used1 != slash || used2 != spec.size() - slash - 1 || n < 1 || k < 1 || k > n)
      throw std::invalid_argument("range");
    return {k, n};
  } catch (const std::exception&) {
    throw UsageError("--shard wants K/N with 1 <= K <= N, got '" + spec + "'");
  }
}

std::string apply_instruction(const std::string& instruction_template, const std::string& instruction) {
  const std::string key = "{instruction}";
  auto pos = instruction_template.find(key);
  if (pos == std::string::npos)
    throw UsageError("--instruction-template must contain {instruction}: '" + instruction_template + "'");
  std::string out = instruction_template;
  out.replace(pos, key.size(), instruction);
  return out;
}

void add_compute_flags(CLI::App& app, std::int64_t& batch_tokens, std::string& dtype, std::string& device) {
  app.add_option("--batch-tokens", batch_tokens, ("Padded tokens per forward pass (rows x longest row); 0 (default): " +
                  std::to_string(kDefaultBatchTokensCpu) + " on CPU, " + std::to_string(kDefaultBatchTokensGpu) +
                  " on a GPU"))
      ->check(cli::non_negative_number())
      ->group(cli::kGroupCompute);
  app.add_option("--dtype", dtype, "Compute dtype: f32, tf32 (f32 with TF32 matmuls, GPUs only) or bf16")
      ->check(CLI::IsMember({"f32", "tf32", "bf16"}))
      ->group(cli::kGroupCompute);
  app.add_option("--device", device, "cpu, cuda or cuda:N")->group(cli::kGroupCompute);
}

void add_search_precision_flag(CLI::App& app, std::string& precision) {
  app.add_option("--search-precision", precision,
                 "Top-k search products: f32, bf16 or int8 (a first pass in bf16, or in int8 on a CPU with VNNI, "
                 "candidates rescored in f32, certified to give f32's top k) or auto (bf16 on GPUs and on CPUs "
                 "where it is faster: AMX, or AMD with AVX512-BF16; int8 on other CPUs with AVX512-VNNI; else f32)")
      ->check(CLI::IsMember({"f32", "bf16", "int8", "auto"}))
      ->group(cli::kGroupCompute);
}

void add_model_flags(CLI::App& app, const ModelFlagTargets& t) {
  auto help = [](const std::string& given, const char* shared) { return given.empty() ? std::string(shared) : given; };
  if (t.model)
    app.add_option("-m,--model", *t.model, help(t.model_help, "Hugging Face model directory"))->group(cli::kGroupModel);
  if (t.instruction)
    app.add_option("--instruction", *t.instruction,
                   help(t.instruction_help, "Task instruction for queries, applied with --instruction-template"))
        ->group(cli::kGroupModel);
  if (t.instruction_template)
    app.add_option("--instruction-template", *t.instruction_template,
                   help(t.instruction_template_help, "How an instruction prefixes a text"))
        ->group(cli::kGroupModel);
  if (t.max_length)
    app.add_option("--max-length", *t.max_length,
                   help(t.max_length_help, "Tokens per text, special tokens included") +
                       " (default: sentence-transformers' limit for the model, else " +
                       std::to_string(kDefaultMaxLength) + ")")
        ->check(cli::positive_number())
        ->group(cli::kGroupModel);
  // "" is a member so that a --config file that spells out the empty default reads back.
  if (t.pooling)
    app.add_option("--pooling", *t.pooling, "Override the model's pooling: mean, last or cls (empty: the model's)")
        ->check(CLI::IsMember({"", "mean", "last", "cls"}))
        ->group(cli::kGroupModel);
  if (t.attention)
    app.add_option("--attention", *t.attention,
                   "Override the model's attention: causal or bidirectional (empty: the model's)")
        ->check(CLI::IsMember({"", "causal", "bidirectional"}))
        ->group(cli::kGroupModel);
}

void add_embed_flags(cli::Tool& tool, EmbedOptions& o) {
  auto& app = tool.app();
  app.add_option("inputs", o.inputs, "Input files (JSONL or text, plain or zstd); none or - = stdin")
      ->group(cli::kGroupInput);
  app.add_option("--input-format", o.input_format, "jsonl ({\"id\",\"text\"} or {\"id\",\"input_ids\"}) or text (one per line)")
      ->check(CLI::IsMember({"jsonl", "text"}))
      ->group(cli::kGroupInput);
  app.add_option("--shard", o.shard, "Embed only the K-th of N contiguous slices of the input (K/N, 1-based)")
      ->group(cli::kGroupInput);
  app.add_option("-o,--output", o.output, "Output file; - = stdout")->group(cli::kGroupOutput);
  app.add_option("--output-format", o.output_format,
                 "auto (from the output name), safetensors, npy, jsonl, or tokens (token ids, no model run)")
      ->check(CLI::IsMember({"auto", "safetensors", "npy", "jsonl", "tokens"}))
      ->group(cli::kGroupOutput);
  app.add_option("--quantize", o.quantize,
                 "Store embeddings as int8, uint8, binary or ubinary (sentence-transformers' quantize_embeddings); "
                 "safetensors and npy outputs")
      ->check(CLI::IsMember({"none", "int8", "uint8", "binary", "ubinary"}))
      ->group(cli::kGroupOutput);
  app.add_option("--chunk-records", o.chunk_records,
                 "Records tokenised and sorted by length together (under torchrun or Slurm, the unit handed to ranks)")
      ->check(cli::positive_number())
      ->group(cli::kGroupCompute);
  app.add_option("--overlap", o.overlap,
                 "Read and tokenise the next chunk, and write the last one's JSON Lines, on other threads while the "
                 "model embeds: auto (on a GPU), on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->group(cli::kGroupCompute);
  app.add_option("--dist-timeout", o.dist_timeout,
                 "Under torchrun or Slurm: seconds rank 0 waits for the other ranks' parts before it gives up")
      ->group(cli::kGroupCompute);
  app.add_option("--profile", o.profile,
                 "Write a Chrome trace (LibTorch's profiler: operators, and CUDA kernels on a GPU) of the "
                 "--profile-batches window to this file (under torchrun or Slurm each rank its own, .rankN "
                 "before .json)")
      ->group(cli::kGroupOutput);
  app.add_option("--profile-batches", o.profile_batches,
                 std::string("Model batches to profile, FIRST:LAST or FIRST (1-based, counted over the whole run; "
                             "earlier batches warm up) [") + kDefaultProfileBatches + "]")
      ->group(cli::kGroupOutput);
  app.add_option("--quantize-ranges", o.quantize_ranges,
                 "int8/uint8: per-dimension [min; max] from this file (.npy [2, dim], or a kalm-embed int8/uint8 "
                 "safetensors output) instead of the corpus's own")
      ->group(cli::kGroupOutput);
  app.add_option("--dim", o.dim, "Matryoshka dimension: keep the first DIM components (0 = all)")
      ->check(cli::non_negative_number())
      ->group(cli::kGroupOutput);
  app.add_flag("--normalize,!--no-normalize", o.normalize, "L2-normalise the embeddings")->group(cli::kGroupOutput);
  app.add_flag("--special-tokens,!--no-special-tokens", o.special_tokens,
               "Add the model's special tokens (e.g. Gemma's <bos>)")
      ->group(cli::kGroupOutput);
  ModelFlagTargets model_flags;
  model_flags.model = &o.model;
  model_flags.instruction = &o.instruction;
  model_flags.instruction_template = &o.instruction_template;
  model_flags.max_length = &o.max_length;
  model_flags.pooling = &o.pooling;
  model_flags.attention = &o.attention;
  add_model_flags(app, model_flags);
  app.add_option("--prompt", o.prompt, "Prompt name from config_sentence_transformers.json (e.g. query)")
      ->group(cli::kGroupModel);
  app.add_flag("--truncate,!--no-truncate", o.truncate, "Truncate over-long texts (else: error)")
      ->group(cli::kGroupModel);
  add_compute_flags(app, o.batch_tokens, o.dtype, o.device);
}

namespace {
void embed_corpus(const EmbedOptions& o, const cli::Tool& tool, MultiProcess& launch);
}  // namespace

void run_embed(const EmbedOptions& o, const cli::Tool& tool) {
  MultiProcess launch;  // filled in once known, for the failure notice
  try {
    embed_corpus(o, tool, launch);
  } catch (const std::exception& e) {
    if (launch.world > 1 && launch.rank != 0) write_failure(launch, e.what());
    throw;
  }
}

namespace {
void embed_corpus(const EmbedOptions& o, const cli::Tool& tool, MultiProcess& launch) {
  const std::string format = resolve_output_format(o);
  const bool tokens_only = format == "tokens";
  if (o.model.empty()) throw UsageError("--model is required");
  if (!o.instruction.empty() && !o.prompt.empty())
    throw UsageError("--instruction and --prompt are exclusive: give one");
  if ((format == "safetensors" || format == "npy") && o.output == "-" && ::isatty(STDOUT_FILENO))
    throw UsageError("refusing to write binary " + format + " output to a terminal; use -o FILE");
  const auto input_format = o.input_format == "text" ? io::InputFormat::kText : io::InputFormat::kJsonl;
  const io::Quantization quantization = io::parse_quantization(o.quantize);
  if (quantization != io::Quantization::None && format != "safetensors" && format != "npy")
    throw UsageError("--quantize " + o.quantize + " needs a safetensors or npy output, not " + format);
  if (!o.quantize_ranges.empty() && !io::needs_ranges(quantization))
    throw UsageError("--quantize-ranges goes with --quantize int8 or uint8");
  if (o.profile.empty() && o.profile_batches) throw UsageError("--profile-batches needs --profile FILE");
  if (!o.profile.empty() && tokens_only)
    throw UsageError("--profile records the model's batches; --output-format tokens runs no model");
  const core::ProfileRange profile_range =
      o.profile.empty() ? core::ProfileRange{}
                        : core::parse_profile_range(o.profile_batches.value_or(kDefaultProfileBatches),
                                                    "--profile-batches");

  // A multi-process launch (torchrun, Slurm): rank r embeds chunks r, r + N,
  // r + 2N, ... of the input (the very batches one process would run, so the
  // bytes are the same), writes them to a part file beside the output, and
  // rank 0 joins the parts in input order into the one output.
  const MultiProcess mp = multi_process(o, format, tool.command_line());
  launch = mp;

  // The shard's record range [first, last).
  std::int64_t first = 0, last = -1;
  if (!o.shard.empty()) {
    auto [k, n] = parse_shard(o.shard);
    for (const auto& in : o.inputs)
      if (io::is_stdio(in)) throw UsageError("--shard needs input files (it counts records first), not stdin");
    if (o.inputs.empty()) throw UsageError("--shard needs input files (it counts records first), not stdin");
    const std::int64_t total = count_records(o.inputs, input_format);
    first = total * (k - 1) / n;
    last = total * k / n;
  }

  LoadedEmbedder model;
  std::unique_ptr<text::Tokenizer> tokenizer;
  if (tokens_only) {
    tokenizer = load_tokenizer_only(o.model);
    model.max_seq_length = sentence_transformers_max_length(o.model, tokenizer.get(), model.max_seq_length_source);
  } else {
    EmbedderSettings settings{o.dtype, o.device, o.pooling, o.attention};
    model = load_embedder(o.model, settings, /*require_tokenizer=*/false);
    tokenizer = std::move(model.tokenizer);
    if (o.dim > model.dim)
      throw UsageError("--dim " + std::to_string(o.dim) + " exceeds the model's dimension " + std::to_string(model.dim));
  }

  std::string prefix;
  if (!o.instruction.empty()) prefix = apply_instruction(o.instruction_template, o.instruction);
  if (!o.prompt.empty()) {
    auto it = model.prompts.find(o.prompt);
    if (it == model.prompts.end())
      throw UsageError("--prompt " + o.prompt + ": no such prompt in " + o.model +
                       "/config_sentence_transformers.json");
    prefix = it->second;
  }

  // Tokens of the prefix that the pooling leaves out (include_prompt=false).
  const std::int64_t prompt_skip = tokenizer && model.embedder ? prompt_pool_skip(model, *tokenizer, prefix) : 0;

  const std::int64_t max_length = resolve_max_length(o.max_length, model.max_seq_length);
  // The limit and where it came from, for --no-truncate errors.
  const std::string limit =
      "the token limit, " + (o.max_length        ? "--max-length " + std::to_string(max_length)
                             : model.max_seq_length ? model.max_seq_length_source
                                                    : "the default --max-length " + std::to_string(max_length));
  text::EncodeOptions enc;
  enc.add_special_tokens = o.special_tokens;
  enc.max_length = static_cast<std::size_t>(max_length);

  EngineOptions engine_options;
  engine_options.batch_tokens = o.batch_tokens;
  std::unique_ptr<Engine> engine;
  if (!tokens_only) engine = std::make_unique<Engine>(*model.embedder, engine_options);
  std::unique_ptr<core::ProfileWindow> profile;
  if (!o.profile.empty()) {
    profile = std::make_unique<core::ProfileWindow>(
        mp.world > 1 ? core::profile_path_for_rank(o.profile, mp.rank) : o.profile, profile_range,
        model.embedder->device());
    engine->set_profile(profile.get());
  }
  // The summary's note on the trace. A trace asked for and not written is
  // said on stderr even under --quiet: an output the user named is missing.
  auto profile_note = [&]() -> std::string {
    if (!profile) return "";
    if (profile->finish())
      return "; profile of " + std::to_string(profile->units_recorded()) + " batch(es) from batch " +
             std::to_string(profile_range.first) + " in " + profile->path();
    std::cerr << tool.name() << ": no profile: the run had " << engine->stats().batches
              << " batch(es), fewer than " << profile_range.first
              << " (--profile-batches 1 records from the first); nothing written to " << profile->path() << "\n";
    return "";
  };

  // Streamed outputs (jsonl, tokens) are written per chunk; matrix outputs at the end.
  const bool streamed = format == "jsonl" || format == "tokens";
  std::unique_ptr<io::JsonlWriter> writer;
  if (streamed) writer = std::make_unique<io::JsonlWriter>(o.output);
  std::vector<float> matrix;  // row-major [rows, out_dim]
  std::int64_t out_dim = 0;

  cli::Progress progress(tool.name(), "texts", std::nullopt, tool.common().quiet);
  std::int64_t texts = 0, tokens = 0, truncated = 0, index = 0;
  std::int64_t chunk_index = 0;
  std::vector<std::int64_t> chunk_rows;  // rows of every chunk, every rank's (for rank 0's join)

  RecordSource source(o.inputs, input_format);
  std::string line;
  // The next chunk of this rank's records, read and tokenised; nullopt at the
  // end of the input. Touches only the input side (source, index,
  // chunk_index, chunk_rows), so it can run on a thread of its own beside the
  // model.
  auto read_chunk = [&]() -> std::optional<Chunk> {
    io::CorpusRecord record;
    bool more = true;
    while (more) {
      Chunk chunk;
      std::vector<std::size_t> text_slots;  // chunk rows that need tokenising
      while (static_cast<std::int64_t>(chunk.ids.size()) < o.chunk_records) {
        if (!(more = source.next(record))) break;
        const std::int64_t i = index++;
        if (i < first || (last >= 0 && i >= last)) continue;
        chunk.ids.push_back(record.has_id ? record.id : std::to_string(i));
        chunk.has_id.push_back(record.has_id);
        chunk.positions.push_back(source.position());
        if (record.has_text) {
          text_slots.push_back(chunk.texts.size());
          chunk.texts.push_back(prefix + record.text);
          chunk.sequences.emplace_back();
          chunk.pretokenized.push_back(false);
        } else {
          if (!model.embedder && !tokens_only) throw InternalError("no model");
          std::vector<std::int32_t> ids;
          ids.reserve(record.input_ids.size());
          for (auto id : record.input_ids) {
            if (model.vocab_size > 0 && id >= model.vocab_size)
              throw FormatError(chunk.positions.back() + ": token id " + std::to_string(id) +
                                " is outside the model's vocabulary of " + std::to_string(model.vocab_size));
            ids.push_back(static_cast<std::int32_t>(id));
          }
          if (static_cast<std::int64_t>(ids.size()) > max_length) {
            if (!o.truncate)
              throw FormatError(chunk.positions.back() + ": " + std::to_string(ids.size()) + " tokens exceed " +
                                limit + " (--no-truncate)");
            ids.resize(static_cast<std::size_t>(max_length));
            ++chunk.truncated;
          }
          if (ids.empty()) throw FormatError(chunk.positions.back() + ": input_ids is empty");
          chunk.texts.emplace_back();
          chunk.sequences.push_back(std::move(ids));
          chunk.pretokenized.push_back(true);
        }
      }
      if (chunk.ids.empty()) continue;
      chunk_rows.push_back(static_cast<std::int64_t>(chunk.ids.size()));
      if (chunk_index++ % mp.world != mp.rank) continue;  // another rank's chunk

      // Tokenise the chunk's texts on all cores.
      std::vector<std::string> to_encode;
      std::vector<std::size_t> rows;
      for (std::size_t r = 0; r < chunk.ids.size(); ++r)
        if (!chunk.pretokenized[r]) {
          to_encode.push_back(std::move(chunk.texts[r]));
          rows.push_back(r);
        }
      if (!to_encode.empty()) {
        if (!tokenizer)
          throw ModelError(o.model + ": has no tokenizer (tokenizer.json or tokenizer.model); "
                           "give records with \"input_ids\" instead of \"text\"");
        std::vector<text::Encoding> encodings;
        try {
          encodings = tokenizer->encode_batch(to_encode, enc);
        } catch (const FormatError& e) {
          throw FormatError(std::string("in a record of ") + chunk.positions.front() + "..: " + e.what());
        }
        for (std::size_t j = 0; j < rows.size(); ++j) {
          auto& e = encodings[j];
          if (e.truncated) {
            if (!o.truncate)
              throw FormatError(chunk.positions[rows[j]] + ": text exceeds " + limit + " (--no-truncate)");
            ++chunk.truncated;
          }
          if (e.ids.empty() && !tokens_only)
            throw FormatError(chunk.positions[rows[j]] + ": text has no tokens (empty text and no special tokens)");
          chunk.sequences[rows[j]] = std::move(e.ids);
        }
      }
      return chunk;
    }
    return std::nullopt;
  };
  // On a GPU the next chunk is read and tokenised, and the last one's JSON
  // written, on other threads while the model embeds this one (--overlap
  // auto); on a CPU they would share the model's cores, so all take turns.
  // Chunks are used and written in input order, and an input error surfaces
  // where it would without overlap: after the chunks before it, never in a
  // complete-looking output.
  const bool overlap =
      o.overlap == "on" || (o.overlap == "auto" && model.embedder && model.embedder->device().is_cuda());
  std::future<std::optional<Chunk>> next;
  std::future<void> writing;
  if (overlap) next = std::async(std::launch::async, read_chunk);
  while (true) {
    std::optional<Chunk> ready = overlap ? next.get() : read_chunk();
    if (!ready) break;
    if (overlap) next = std::async(std::launch::async, read_chunk);
    Chunk& chunk = *ready;
    truncated += chunk.truncated;
    for (const auto& seq : chunk.sequences) tokens += static_cast<std::int64_t>(seq.size());
    texts += static_cast<std::int64_t>(chunk.ids.size());

    if (tokens_only) {
      for (std::size_t r = 0; r < chunk.ids.size(); ++r) {
        line.clear();
        line += "{\"id\":";
        io::append_json_string(line, chunk.ids[r]);
        line += ",\"ids\":[";
        for (std::size_t t = 0; t < chunk.sequences[r].size(); ++t) {
          if (t) line += ',';
          line += std::to_string(chunk.sequences[r][t]);
        }
        line += "]}";
        writer->write_line(line);
      }
      progress.advance(chunk.ids.size());
      continue;
    }

    std::vector<std::int64_t> pool_from;  // pre-tokenised records carry no prefix
    if (prompt_skip > 0)
      for (std::size_t r = 0; r < chunk.ids.size(); ++r) pool_from.push_back(chunk.pretokenized[r] ? 0 : prompt_skip);
    torch::Tensor pooled;
    try {
      pooled = engine->embed(chunk.sequences, {}, pool_from);
    } catch (const UsageError& e) {  // an all-prompt sequence: name the record, it is bad data
      throw FormatError("in the records from " + chunk.positions.front() + " on: " + e.what());
    } catch (const NonFiniteEmbedding& e) {
      throw ModelError(chunk.positions[e.index] + ": " + o.model + " computes a NaN or infinite embedding for this "
                       "record; nothing is written");
    }
    torch::Tensor emb = finalize_embeddings(pooled, o.dim, o.normalize);
    out_dim = emb.size(1);
    if (streamed) {
      // Formatting a chunk's numbers as JSON takes about as long as a GPU takes
      // to embed it: overlapped, it runs beside the next chunk's forward passes.
      // Chunks are written in order: the one before must be written first.
      auto write_chunk = [&writer, emb, ids = std::move(chunk.ids), out_dim] {
        const float* data = emb.data_ptr<float>();
        std::string row;
        for (std::int64_t r = 0; r < emb.size(0); ++r) {
          row.clear();
          row += "{\"id\":";
          io::append_json_string(row, ids[static_cast<std::size_t>(r)]);
          row += ",\"embedding\":[";
          for (std::int64_t c = 0; c < out_dim; ++c) {
            if (c) row += ',';
            io::append_json_number(row, static_cast<double>(data[r * out_dim + c]));
          }
          row += "]}";
          writer->write_line(row);
        }
      };
      const auto chunk_size = static_cast<std::size_t>(emb.size(0));
      if (writing.valid()) writing.get();
      if (overlap)
        writing = std::async(std::launch::async, std::move(write_chunk));
      else
        write_chunk();
      progress.advance(chunk_size);
      continue;
    }
    const float* data = emb.data_ptr<float>();
    matrix.insert(matrix.end(), data, data + emb.numel());
    progress.advance(chunk.ids.size());
  }
  if (writing.valid()) writing.get();  // the last chunk's rows, and any error writing them

  if (mp.world > 1) {
    if (out_dim == 0) out_dim = model.dim > 0 && o.dim > 0 ? o.dim : model.dim;  // a rank with no chunk
    write_part(mp, matrix, out_dim);
    if (mp.rank != 0) {
      progress.finish("rank " + std::to_string(mp.rank) + " of " + std::to_string(mp.world) + ": " +
                      std::to_string(texts) + " texts written to " + mp.part_path(mp.rank) + profile_note());
      return;
    }
    matrix = join_parts(mp, chunk_rows, out_dim);
  }
  const std::int64_t rows = out_dim > 0 ? static_cast<std::int64_t>(matrix.size()) / out_dim : 0;
  std::vector<float> ranges;
  io::QuantizedMatrix quantized;
  if (quantization != io::Quantization::None) {
    if (rows == 0) throw FormatError("no records to embed, so nothing to --quantize");
    if (io::needs_ranges(quantization))
      ranges = o.quantize_ranges.empty() ? io::ranges_of(matrix.data(), rows, out_dim)
                                         : io::read_quantization_ranges(o.quantize_ranges, out_dim);
    quantized = io::quantize(matrix.data(), rows, out_dim, quantization, ranges);
  }
  if (streamed) {
    writer->finish();
  } else if (format == "npy") {
    if (quantization == io::Quantization::None)
      io::write_npy(o.output, "<f4", {rows, out_dim}, matrix.data(), sizeof(float));
    else
      io::write_npy(o.output, quantized.is_signed ? "|i1" : "|u1", {rows, quantized.cols}, quantized.bytes.data(), 1);
  } else {
    io::SafetensorsWriter st;
    if (quantization == io::Quantization::None) {
      st.add("embeddings", io::DType::F32, {rows, out_dim}, matrix.data(), matrix.size() * sizeof(float));
    } else {
      st.add("embeddings", quantized.is_signed ? io::DType::I8 : io::DType::U8, {rows, quantized.cols},
             quantized.bytes.data(), quantized.bytes.size());
      st.set_metadata("quantization", io::quantization_name(quantization));
      if (!ranges.empty())
        st.add("quantization_ranges", io::DType::F32, {2, out_dim}, ranges.data(), ranges.size() * sizeof(float));
    }
    st.set_metadata("format", "pt");
    st.set_metadata("model", o.model);
    st.set_metadata("dim", std::to_string(out_dim));
    st.set_metadata("normalized", o.normalize ? "true" : "false");
    st.set_metadata("instruction", o.instruction);
    st.set_metadata("prompt", prefix);
    st.set_metadata("pooling", model.pooling);
    st.set_metadata("attention", model.attention);
    st.set_metadata("max_length", std::to_string(max_length));
    st.set_metadata("dtype", o.dtype);
    st.set_metadata("tool", tool.name());
    st.set_metadata("kalm_version", std::string(kVersion) + " (git " + kGitRevision + ")");
    st.set_metadata("command", tool.command_line());
    if (!o.shard.empty()) st.set_metadata("shard", o.shard);
    if (mp.world > 1) st.set_metadata("processes", std::to_string(mp.world));
    st.write(o.output);
  }
  if (mp.world > 1) remove_parts(mp);

  const double secs = progress.elapsed_seconds();
  char summary[256];
  std::snprintf(summary, sizeof summary, "%lld texts, %lld tokens (%lld truncated) in %s: %s texts/s, %s tokens/s",
                static_cast<long long>(texts), static_cast<long long>(tokens), static_cast<long long>(truncated),
                cli::format_seconds(secs).c_str(), cli::format_rate(secs > 0 ? texts / secs : 0).c_str(),
                cli::format_rate(secs > 0 ? tokens / secs : 0).c_str());
  progress.finish(summary + profile_note());
}

}  // namespace

}  // namespace kalm::encode
