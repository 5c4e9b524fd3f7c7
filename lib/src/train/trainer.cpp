#include "kalm/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <simdjson.h>
#include <signal.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <sstream>

#include "kalm/cli/progress.h"
#include "kalm/core/runtime.h"
#include "kalm/error.h"
#include "kalm/io/json_writer.h"
#include "kalm/io/output_dir.h"
#include "kalm/io/remove_tree.h"
#include "kalm/io/safetensors.h"
#include "kalm/model/checkpoint.h"
#include "kalm/model/device.h"
#include "kalm/model/tensor_io.h"
#include "kalm/encode/model_embedder.h"
#include "kalm/text/tokenizer.h"
#include "kalm/train/dist.h"
#include "kalm/train/export.h"
#include "kalm/train/optimizer.h"
#include "kalm/train/step.h"
#include "kalm/train/teacher.h"
#include "kalm/version.h"

namespace kalm::train {
namespace fs = std::filesystem;

Stage parse_stage(const std::string& name) {
  if (name == "pretrain") return Stage::kPretrain;
  if (name == "finetune") return Stage::kFinetune;
  if (name == "distill") return Stage::kDistill;
  throw UsageError("--stage must be pretrain or finetune, got '" + name + "'");
}

void block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

namespace {

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kRngFile = "rng_state.safetensors";

// A pending SIGINT/SIGTERM, consumed; 0 when none.
int take_stop_signal() {
  sigset_t pending;
  sigemptyset(&pending);
  if (sigpending(&pending) != 0) return 0;
  for (int sig : {SIGINT, SIGTERM}) {
    if (sigismember(&pending, sig)) {
      sigset_t one;
      sigemptyset(&one);
      sigaddset(&one, sig);
      timespec zero{0, 0};
      sigtimedwait(&one, nullptr, &zero);
      return sig;
    }
  }
  return 0;
}

// Blocks the stop signals for the loop's lifetime and restores the caller's
// mask afterwards (a still-pending signal is consumed first, so restoring the
// mask does not kill the process after a clean checkpoint).
class StopSignalScope {
 public:
  StopSignalScope() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &previous_);
  }
  ~StopSignalScope() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }

 private:
  sigset_t previous_;
};

// What must not change between a run and its resumption.
struct Fingerprint {
  std::uint64_t seed = 0;
  std::int64_t batch_size = 0, grad_accumulation = 0, total_steps = 0, num_examples = 0, num_negatives = 0;
  std::string stage;
  std::string teacher;  // "" = none
  double bpe_dropout = 0;
  // CPU arithmetic: "flushed" (subnormals to zero) or "kept"; "" = not
  // recorded (checkpoints older than --keep-denormals), accepted either way.
  std::string cpu_denormals;
};

std::string stage_name(Stage s) {
  return s == Stage::kPretrain ? "pretrain" : s == Stage::kFinetune ? "finetune" : "distill";
}

struct SavedState {
  std::int64_t step = 0;
  std::int64_t micro_batches = 0;
  Fingerprint fingerprint;
};

std::string state_json(const SavedState& s, const std::string& command_line) {
  std::string out = "{\n";
  auto num = [&](const char* key, std::int64_t v, bool comma = true) {
    out += "  \"" + std::string(key) + "\": " + std::to_string(v) + (comma ? ",\n" : "\n");
  };
  num("step", s.step);
  num("micro_batches", s.micro_batches);
  out += "  \"seed\": " + std::to_string(s.fingerprint.seed) + ",\n";
  num("batch_size", s.fingerprint.batch_size);
  num("grad_accumulation", s.fingerprint.grad_accumulation);
  num("total_steps", s.fingerprint.total_steps);
  num("num_examples", s.fingerprint.num_examples);
  num("num_negatives", s.fingerprint.num_negatives);
  out += "  \"stage\": \"" + s.fingerprint.stage + "\",\n";
  if (s.fingerprint.bpe_dropout != 0) {
    // %.17g: the value read back compares equal.
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", s.fingerprint.bpe_dropout);
    out += "  \"bpe_dropout\": " + std::string(buf) + ",\n";
  }
  if (!s.fingerprint.teacher.empty()) {
    out += "  \"teacher\": ";
    io::append_json_string(out, s.fingerprint.teacher);
    out += ",\n";
  }
  out += "  \"cpu_denormals\": \"" + s.fingerprint.cpu_denormals + "\",\n";
  out += "  \"tool_version\": ";
  io::append_json_string(out, std::string(kVersion) + " (" + kGitRevision + ")");
  out += ",\n  \"command_line\": ";
  io::append_json_string(out, command_line);
  out += "\n}\n";
  return out;
}

SavedState read_state(const std::string& path) {
  simdjson::dom::parser parser;
  simdjson::padded_string text;
  if (simdjson::padded_string::load(path).get(text) != simdjson::SUCCESS) throw IoError(path + ": cannot read");
  simdjson::dom::element doc;
  if (auto err = parser.parse(text).get(doc))
    throw FormatError(path + ": invalid JSON (" + simdjson::error_message(err) + ")");
  auto get_int = [&](const char* key) -> std::int64_t {
    std::int64_t v;
    if (doc[key].get_int64().get(v) != simdjson::SUCCESS)
      throw FormatError(path + ": field '" + key + "' is missing or not an integer");
    return v;
  };
  SavedState s;
  s.step = get_int("step");
  s.micro_batches = get_int("micro_batches");
  std::uint64_t seed;
  if (doc["seed"].get_uint64().get(seed) != simdjson::SUCCESS)
    throw FormatError(path + ": field 'seed' is missing or not an integer");
  s.fingerprint.seed = seed;
  s.fingerprint.batch_size = get_int("batch_size");
  s.fingerprint.grad_accumulation = get_int("grad_accumulation");
  s.fingerprint.total_steps = get_int("total_steps");
  s.fingerprint.num_examples = get_int("num_examples");
  s.fingerprint.num_negatives = get_int("num_negatives");
  std::string_view stage;
  if (doc["stage"].get_string().get(stage) != simdjson::SUCCESS)
    throw FormatError(path + ": field 'stage' is missing or not a string");
  s.fingerprint.stage = std::string(stage);
  // Absent in runs without a teacher (and in checkpoints older than the flag).
  std::string_view teacher;
  if (doc["teacher"].get_string().get(teacher) == simdjson::SUCCESS) s.fingerprint.teacher = std::string(teacher);
  // Absent without dropout (and in checkpoints older than the flag).
  if (doc["bpe_dropout"].error() != simdjson::NO_SUCH_FIELD &&
      doc["bpe_dropout"].get_double().get(s.fingerprint.bpe_dropout) != simdjson::SUCCESS)
    throw FormatError(path + ": field 'bpe_dropout' is not a number");
  // Absent in checkpoints older than --keep-denormals.
  std::string_view denormals;
  if (doc["cpu_denormals"].error() != simdjson::NO_SUCH_FIELD) {
    if (doc["cpu_denormals"].get_string().get(denormals) != simdjson::SUCCESS ||
        (denormals != "flushed" && denormals != "kept"))
      throw FormatError(path + ": field 'cpu_denormals' must be \"flushed\" or \"kept\"");
    s.fingerprint.cpu_denormals = std::string(denormals);
  }
  return s;
}

void check_fingerprint(const Fingerprint& saved, const Fingerprint& now, const std::string& dir) {
  auto mismatch = [&](const std::string& what, const std::string& a, const std::string& b) {
    throw UsageError("--resume: " + dir + " was made with " + what + " " + a + ", this run has " + b +
                     " (a resumed run must repeat the original settings)");
  };
  if (saved.seed != now.seed) mismatch("--seed", std::to_string(saved.seed), std::to_string(now.seed));
  if (saved.batch_size != now.batch_size)
    mismatch("--batch-size", std::to_string(saved.batch_size), std::to_string(now.batch_size));
  if (saved.grad_accumulation != now.grad_accumulation)
    mismatch("--grad-accumulation", std::to_string(saved.grad_accumulation), std::to_string(now.grad_accumulation));
  if (saved.total_steps != now.total_steps)
    mismatch("a total of steps", std::to_string(saved.total_steps), std::to_string(now.total_steps));
  if (saved.num_examples != now.num_examples)
    mismatch("training groups", std::to_string(saved.num_examples), std::to_string(now.num_examples));
  if (saved.num_negatives != now.num_negatives)
    mismatch("--num-negatives", std::to_string(saved.num_negatives), std::to_string(now.num_negatives));
  if (saved.stage != now.stage) mismatch("--stage", saved.stage, now.stage);
  if (saved.bpe_dropout != now.bpe_dropout)
    mismatch("--bpe-dropout", std::to_string(saved.bpe_dropout), std::to_string(now.bpe_dropout));
  if (!saved.cpu_denormals.empty() && saved.cpu_denormals != now.cpu_denormals)
    mismatch("subnormal floats (--keep-denormals)", saved.cpu_denormals, now.cpu_denormals);
  if (saved.teacher != now.teacher)
    mismatch("--teacher", saved.teacher.empty() ? "(none)" : saved.teacher, now.teacher.empty() ? "(none)" : now.teacher);
}

// The newest complete checkpoint-N directory in `output`, or "".
std::string latest_checkpoint(const std::string& output) {
  std::string best;
  std::int64_t best_step = -1;
  std::error_code ec;
  for (fs::directory_iterator it(output, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0 || !it->is_directory()) continue;
    const std::string digits = name.substr(11);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    if (!fs::exists(it->path() / kStateFile)) continue;
    const std::int64_t step = std::stoll(digits);
    if (step > best_step) {
      best_step = step;
      best = it->path().string();
    }
  }
  return best;
}

// Drops the metrics lines of steps after `step` (a resumed run rewrites them).
void truncate_metrics(const std::string& path, std::int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line)) {
    long long s = 0;
    if (std::sscanf(line.c_str(), "{\"step\": %lld", &s) == 1 && s > step) break;
    kept += line + "\n";
  }
  write_text_file(path, kept);
}

// Keeps the texts of groups [begin, end) (queries and their G passages each).
void slice_texts(TrainBatch& batch, std::int64_t begin, std::int64_t end, std::int64_t g) {
  auto cut = [](std::vector<std::string>& v, std::int64_t from, std::int64_t to) {
    v = std::vector<std::string>(v.begin() + from, v.begin() + to);
  };
  cut(batch.query_texts, begin, end);
  cut(batch.query_prompts, begin, end);
  cut(batch.query_sources, begin, end);
  cut(batch.passage_texts, begin * g, end * g);
  cut(batch.passage_sources, begin * g, end * g);
}

// Where --train-tokenizer writes the tokenizer while a run trains (one per rank).
std::string temporary_tokenizer_dir(const TrainOptions& o) {
  return (fs::path(o.output) / (".kalm-tokenizer" + (o.dist.rank > 0 ? "-" + std::to_string(o.dist.rank) : "")))
      .string();
}

// include_prompt=false needs each instruction to be a prefix of its query.
void require_prefix_prompts(const Dataset& data, const std::string& instruction_template) {
  for (const auto& [task, instruction] : data.instructions)
    if (!instruction.empty() && query_prompt(instruction_template, instruction).empty())
      throw UsageError("--include-prompt false: the instruction template '" + instruction_template +
                       "' does not end with {query}, so the instruction is no prefix the pooling could leave out");
}

class Trainer {
 public:
  explicit Trainer(const TrainOptions& o) : o_(o) {}
  TrainResult run();

 private:
  void resolve_options();
  void prepare_model(const std::string& resume_dir);
  void save_checkpoint();
  void write_checkpoint();  // rank 0's part of save_checkpoint
  void prune_checkpoints();
  void export_final();
  void seed_embeddings(const model::EncoderImpl& donor, const std::string& source);
  void write_model_files(const std::string& dir);
  void write_metrics(const std::string& line);

  const TrainOptions& o_;
  Dataset data_;
  loss::LossOptions loss_;
  std::int64_t num_negatives_ = 0;
  bool with_scores_ = false;
  bool bf16_ = false;
  torch::Device device_{torch::kCPU};
  model::Pooling pooling_ = model::Pooling::Mean;
  // include_prompt=false: queries pool without their instruction prefix,
  // whose token count per prompt text is measured once (read-only after set-up,
  // so the prefetch thread may read it).
  bool include_prompt_ = true;
  bool model_include_prompt_ = true;  // the --init / resumed model's (a new one pools everything)
  std::map<std::string, std::int64_t> prompt_token_counts_;
  // --bpe-dropout: each instruction prompt's ids without special tokens.
  std::map<std::string, std::int64_t> prompt_model_ids_;
  void set_up_prompt_pooling();
  void set_up_bpe_dropout();
  Schedule schedule_ = Schedule::kLinear;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  std::string tokenizer_dir_;
  // Resumed: the tokenizer files are read from a checkpoint, which pruning may
  // delete; each new checkpoint (holding the same files) takes over.
  bool tokenizer_in_checkpoint_ = false;
  model::Encoder encoder_{nullptr};
  std::unique_ptr<FusedAdamW> optimizer_;
  torch::Generator generator_;
  CallOptions calls_;  // how a step's texts are cut into model calls (step.h)
  bool prefetch_ = false;  // build the next micro-batch on a background thread
  SavedState state_;
  std::int64_t batches_per_epoch_ = 0;
  std::FILE* metrics_ = nullptr;
  std::unique_ptr<DataParallel> parallel_;
  std::unique_ptr<GradientBuckets> buckets_;  // after parallel_: its hooks use the group
  std::unique_ptr<Teacher> teacher_;  // kalm-distill --teacher: scores each batch
  bool leader_ = true;  // rank 0: writes checkpoints, metrics, the export
  BatchingOptions global_batching_;
  io::OutputLock output_lock_;  // the leader's claim on --output for the whole run
  // The tokenizer this run trained lives in the output directory until the
  // export copies it; it goes when the run ends, finished, stopped or failed
  // (a checkpoint carries its own copy for --resume). Declared after the lock,
  // so it is removed while this run still holds the directory.
  struct OwnedDirectory {
    std::string path;
    ~OwnedDirectory() {
      if (!path.empty()) io::remove_tree_nothrow(path);
    }
  } temporary_tokenizer_;
};

void Trainer::resolve_options() {
  if (o_.output.empty()) throw UsageError("--output DIR is required");
  const int sources = !o_.init.empty() + !o_.init_config.empty();
  if (sources != 1) throw UsageError("give exactly one of --init DIR and --init-config FILE");
  if (!o_.init_embeddings.empty() && o_.init_config.empty())
    throw UsageError("--init-embeddings seeds a new model: it needs --init-config FILE (not --init)");
  if (!o_.init_embeddings.empty() && o_.train_tokenizer)
    throw UsageError("--init-embeddings and --train-tokenizer are exclusive (the embeddings belong to the model's tokenizer)");
  if (!o_.init_config.empty() && o_.tokenizer.empty() && !o_.train_tokenizer && o_.init_embeddings.empty())
    throw UsageError("--init-config needs --tokenizer DIR, --train-tokenizer VOCAB or --init-embeddings DIR");
  if (!o_.tokenizer.empty() && o_.train_tokenizer)
    throw UsageError("--tokenizer and --train-tokenizer are exclusive");
  if (o_.grad_accumulation < 1) throw UsageError("--grad-accumulation must be at least 1");
  if (o_.epochs < 1) throw UsageError("--epochs must be at least 1");
  if (o_.max_steps && *o_.max_steps < 1) throw UsageError("--max-steps must be at least 1");
  if (o_.save_steps < 0) throw UsageError("--save-steps must be >= 0");
  if (o_.keep_checkpoints < 0) throw UsageError("--keep-checkpoints must be >= 0");
  if (o_.learning_rate < 0 || !std::isfinite(o_.learning_rate)) throw UsageError("--lr must be a finite number >= 0");
  if (o_.warmup_ratio < 0 || o_.warmup_ratio > 1) throw UsageError("--warmup-ratio must lie in [0, 1]");
  if (o_.max_grad_norm && !(*o_.max_grad_norm > 0)) throw UsageError("--max-grad-norm must be > 0");
  if (o_.grad_cache_chunk && *o_.grad_cache_chunk < 1) throw UsageError("--grad-cache-chunk must be at least 1");
  schedule_ = parse_schedule(o_.schedule);
  if (o_.dtype != "f32" && o_.dtype != "tf32" && o_.dtype != "bf16")
    throw UsageError("--dtype must be f32, tf32 or bf16, got '" + o_.dtype + "'");
  bf16_ = o_.dtype == "bf16";
  device_ = model::device_for_local_rank(model::parse_device(o_.device), o_.dist.local_rank);
  if (o_.dtype == "tf32") model::enable_tf32(device_);
  if (o_.prefetch != "auto" && o_.prefetch != "on" && o_.prefetch != "off")
    throw UsageError("--prefetch must be auto, on or off, got '" + o_.prefetch + "'");
  prefetch_ = o_.prefetch == "on" || (o_.prefetch == "auto" && !device_.is_cpu());
  if (o_.deterministic) model::use_deterministic_kernels(device_);
  if (o_.call_tokens && *o_.call_tokens < 1) throw UsageError("--call-tokens must be at least 1");
  calls_.max_tokens = o_.call_tokens.value_or(default_call_tokens(device_));
  calls_.grad_cache = o_.grad_cache || o_.grad_cache_chunk.has_value();
  calls_.max_rows = o_.grad_cache_chunk;
  pooling_ = model::parse_pooling(o_.pooling);

  loss_ = o_.loss;
  const bool pretrain = o_.stage == Stage::kPretrain;
  num_negatives_ = o_.num_negatives.value_or(pretrain ? 0 : 7);
  if (num_negatives_ < 0) throw UsageError("--num-negatives must be >= 0");
  loss_.focal_gamma = o_.focal_gamma.value_or(pretrain ? 0.0 : o_.loss.focal_gamma);
  loss_.mix = o_.mix.value_or(pretrain ? loss::MixMode::kNone : o_.loss.mix);
  if (!o_.teacher.empty() && o_.stage != Stage::kDistill)
    throw UsageError("--teacher needs the distill stage (kalm-distill)");
  with_scores_ = o_.stage == Stage::kDistill && o_.teacher.empty();
  if (o_.stage != Stage::kDistill && loss_.distill_only)
    throw UsageError("--distill-only needs the distill stage (kalm-distill)");
}

void Trainer::prepare_model(const std::string& resume_dir) {
  model::LoadOptions lo;
  lo.device = device_;
  if (!o_.attention.empty()) lo.attention = model::parse_attention_mode(o_.attention);
  if (!resume_dir.empty()) {
    tokenizer_dir_ = resume_dir;
    tokenizer_in_checkpoint_ = true;
    tokenizer_ = text::load_tokenizer(resume_dir);
    auto loaded = model::load_model(resume_dir, lo);
    encoder_ = loaded.encoder;
    model_include_prompt_ = loaded.sentence_transformers.include_prompt;
  } else {
    if (o_.train_tokenizer) {
      tokenizer_dir_ = temporary_tokenizer_dir(o_);
      temporary_tokenizer_.path = tokenizer_dir_;
      fs::create_directories(tokenizer_dir_);
      std::vector<std::string> texts;
      for (const auto& ex : data_.examples) {
        texts.push_back(ex.query);
        texts.insert(texts.end(), ex.pos.begin(), ex.pos.end());
        texts.insert(texts.end(), ex.neg.begin(), ex.neg.end());
      }
      // The instructions reach the model as query prefixes: their pieces
      // (and characters such as the template's newline) belong in the vocabulary.
      for (const auto& [task, instruction] : data_.instructions) {
        auto prompt = query_prompt(o_.data.instruction_template, instruction);
        if (!prompt.empty()) texts.push_back(std::move(prompt));
      }
      const std::string max_length = std::to_string(std::max(o_.query_max_length, o_.passage_max_length));
      if (o_.tokenizer_model == "bpe") {
        // Byte-level BPE in Qwen2's pipeline: transformers 5 applies that
        // pipeline to every qwen2 checkpoint, so only this kind of tokenizer
        // gives users of any transformers the ids kalm trained with.
        text::ByteLevelBpeTrainOptions bo;
        bo.vocab_size = static_cast<std::size_t>(*o_.train_tokenizer);
        write_text_file(tokenizer_dir_ + "/tokenizer.json", text::train_byte_level_bpe(texts, bo));
        write_text_file(tokenizer_dir_ + "/tokenizer_config.json",
                        "{\n  \"tokenizer_class\": \"Qwen2Tokenizer\",\n  \"add_prefix_space\": false,\n"
                        "  \"bos_token\": null,\n  \"eos_token\": \"<|endoftext|>\",\n  \"unk_token\": null,\n"
                        "  \"pad_token\": \"<|endoftext|>\",\n  \"model_max_length\": " + max_length + "\n}\n");
      } else {
        text::SentencePieceTrainOptions so;
        so.vocab_size = static_cast<std::size_t>(*o_.train_tokenizer);
        so.seed = static_cast<unsigned>(o_.seed);
        // No normalisation, as in Llama's models: then sentencepiece, the slow
        // LlamaTokenizer and the tokenizer.json below all give the same ids.
        so.normalization_rule_name = "identity";
        so.remove_extra_whitespaces = false;
        text::train_sentencepiece(texts, so, tokenizer_dir_ + "/tokenizer.model");
        // The tokenizer.json of LlamaTokenizerFast, read as it is by kalm and by
        // transformers (4; 5 except for model_type qwen2, whose pipeline it
        // imposes); tokenizer.model stays for sentencepiece users. The config keeps the ids equal to kalm's (no added
        // bos/eos) and gives sentence-transformers a pad token.
        write_text_file(tokenizer_dir_ + "/tokenizer.json",
                        text::sentencepiece_to_tokenizer_json(tokenizer_dir_ + "/tokenizer.model"));
        write_text_file(tokenizer_dir_ + "/tokenizer_config.json",
                        "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n"
                        "  \"add_bos_token\": false,\n  \"add_eos_token\": false,\n"
                        "  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n"
                        "  \"unk_token\": \"<unk>\",\n  \"pad_token\": \"<unk>\",\n  \"model_max_length\": " +
                            max_length + "\n}\n");
      }
    } else {
      tokenizer_dir_ = !o_.tokenizer.empty() ? o_.tokenizer : !o_.init.empty() ? o_.init : o_.init_embeddings;
    }
    tokenizer_ = text::load_tokenizer(tokenizer_dir_);
    if (!o_.init.empty()) {
      auto loaded = model::load_model(o_.init, lo);
      encoder_ = loaded.encoder;
      model_include_prompt_ = loaded.sentence_transformers.include_prompt;
      // A model may have more rows than its tokenizer has ids (padding), never fewer.
      const auto vocab = static_cast<std::int64_t>(tokenizer_->vocab_size());
      if (vocab > encoder_->config().vocab_size)
        throw ModelError(tokenizer_dir_ + ": the tokenizer has " + std::to_string(vocab) + " ids but " + o_.init +
                         "/config.json says vocab_size " + std::to_string(encoder_->config().vocab_size) +
                         ": they do not belong together");
    } else {
      auto config = model::parse_config_file(o_.init_config);
      const auto vocab = static_cast<std::int64_t>(tokenizer_->vocab_size());
      std::optional<model::Encoder> donor;
      if (!o_.init_embeddings.empty()) donor = model::load_model(o_.init_embeddings).encoder;
      if (o_.train_tokenizer) {
        config.vocab_size = vocab;
        // The init config's special ids belong to another vocabulary: take the
        // trained tokenizer's (transformers checks them against vocab_size).
        config.pad_token_id = tokenizer_->pad_id();
        config.bos_token_id = tokenizer_->bos_id();
        config.eos_token_id = tokenizer_->eos_id();
        model::validate_config(config);
      } else if (donor) {
        // The table comes with the donor, so its vocabulary wins (as a trained tokenizer's does).
        config.vocab_size = (*donor)->config().vocab_size;
        model::validate_config(config);
      } else if (vocab > config.vocab_size) {
        throw ModelError(o_.init_config + ": vocab_size " + std::to_string(config.vocab_size) +
                         " is smaller than the tokenizer's " + std::to_string(vocab) + " ids (" + tokenizer_dir_ + ")");
      }
      // Initialised on the CPU and then moved, so a seed gives the same model on every device.
      encoder_ = model::Encoder(config, lo.attention.value_or(config.default_attention()));
      encoder_->init_parameters(o_.seed);
      if (donor) seed_embeddings(**donor, o_.init_embeddings);
      encoder_->to(device_);
    }
  }
  encoder_->train();
  for (auto& p : encoder_->parameters()) p.requires_grad_(true);
}

// Token embeddings and the final norm of a trained model, copied into the new
// randomly initialised one (same vocabulary and width; the layers stay random).
void Trainer::seed_embeddings(const model::EncoderImpl& donor, const std::string& source) {
  const auto& from = donor.config();
  const auto& to = encoder_->config();
  if (from.vocab_size != to.vocab_size || from.hidden_size != to.hidden_size)
    throw ModelError(source + ": --init-embeddings needs the same width as " + o_.init_config + " (hidden_size " +
                     std::to_string(from.hidden_size) + " vs " + std::to_string(to.hidden_size) + ")");
  if (from.architecture != to.architecture)
    throw ModelError(source + ": --init-embeddings needs the same architecture as " + o_.init_config);
  torch::NoGradGuard no_grad;
  encoder_->embed_tokens->weight.copy_(donor.embed_tokens->weight);
  encoder_->norm->weight.copy_(donor.norm->weight);
}

void Trainer::set_up_prompt_pooling() {
  for (const auto& ex : data_.examples) {
    if (ex.prompt.empty() || prompt_token_counts_.count(ex.prompt)) continue;
    // Measured as kalm-embed and sentence-transformers measure it at inference.
    prompt_token_counts_.emplace(ex.prompt, encode::prompt_token_count(*tokenizer_, ex.prompt));
  }
  require_prefix_prompts(data_, o_.data.instruction_template);  // a model that pools that way, from --init
}

void Trainer::set_up_bpe_dropout() {
  // Refuse a tokenizer without merges before the first batch, naming the flag.
  text::EncodeOptions probe;
  probe.bpe_dropout = o_.bpe_dropout;
  try {
    tokenizer_->encode("a", probe);
  } catch (const UsageError& e) {
    throw UsageError(std::string("--bpe-dropout: ") + e.what());
  }
  // A query's prompt keeps its own ids (counted without special tokens, as
  // the tokenizer's model stage yields them), so the pooling's count holds.
  text::EncodeOptions plain;
  plain.add_special_tokens = false;
  for (const auto& ex : data_.examples) {
    if (ex.prompt.empty() || prompt_model_ids_.count(ex.prompt)) continue;
    prompt_model_ids_.emplace(ex.prompt, static_cast<std::int64_t>(tokenizer_->encode(ex.prompt, plain).ids.size()));
  }
}

void Trainer::write_model_files(const std::string& dir) {
  model::save_model(dir, *encoder_);
  copy_tokenizer_files(tokenizer_dir_, dir);
  SentenceTransformersExport st;
  st.pooling = pooling_;
  st.include_prompt = include_prompt_;
  st.dimension = encoder_->hidden_size();
  st.max_seq_length = std::max(o_.query_max_length, o_.passage_max_length);
  for (const auto& [task, instruction] : data_.instructions) {
    auto prompt = query_prompt(o_.data.instruction_template, instruction);
    if (!prompt.empty()) st.prompts[task] = prompt;
  }
  write_sentence_transformers_files(dir, st);
}

// Rank 0 writes; the other ranks wait for it in the store (leader_work), not in
// a collective that NCCL's watchdog would abort behind a long write, and stop
// with rank 0's error when writing failed.
void Trainer::save_checkpoint() {
  if (parallel_)
    parallel_->leader_work("wait for rank 0's checkpoint", [&] { write_checkpoint(); });
  else
    write_checkpoint();
}

void Trainer::write_checkpoint() {
  const std::string name = "checkpoint-" + std::to_string(state_.step);
  const fs::path final_dir = fs::path(o_.output) / name;
  const fs::path tmp = fs::path(o_.output) / ("." + name + ".kalm-tmp");
  io::StagingDirectory staging(tmp.string());  // removed again if anything below fails (a full disk)
  write_model_files(tmp.string());
  optimizer_->save(tmp.string());
  model::save_safetensors((tmp / kRngFile).string(), {{"loss_generator", generator_.get_state()}});
  write_text_file((tmp / kStateFile).string(), state_json(state_, o_.command_line));
  io::remove_tree(final_dir.string());
  std::error_code ec;
  fs::rename(tmp, final_dir, ec);
  if (ec) throw IoError(final_dir.string() + ": cannot publish the checkpoint: " + ec.message());
  staging.published();
  if (tokenizer_in_checkpoint_) tokenizer_dir_ = final_dir.string();
  if (o_.keep_checkpoints > 0) prune_checkpoints();
}

// Removes the oldest checkpoints beyond keep_checkpoints (only after the new one
// is in place, so a complete checkpoint always exists).
void Trainer::prune_checkpoints() {
  std::vector<std::pair<std::int64_t, fs::path>> found;
  std::error_code ec;
  for (fs::directory_iterator it(o_.output, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0 || !it->is_directory()) continue;
    const std::string digits = name.substr(11);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    found.emplace_back(std::stoll(digits), it->path());
  }
  std::sort(found.begin(), found.end());
  const auto keep = static_cast<std::size_t>(o_.keep_checkpoints);
  for (std::size_t i = 0; i + keep < found.size(); ++i) io::remove_tree(found[i].second.string());
}

// Staged like a checkpoint, then moved into --output beside the checkpoints:
// config.json and kalm_training.json last, so that a failed export (a full
// disk) never leaves a directory that looks like a finished model.
void Trainer::export_final() {
  if (!leader_) return;
  const fs::path tmp = fs::path(o_.output) / ".export.kalm-tmp";
  io::StagingDirectory staging(tmp.string());
  write_model_files(tmp.string());
  write_text_file((tmp / "kalm_training.json").string(), state_json(state_, o_.command_line));
  io::publish_staged(tmp.string(), o_.output, {"config.json", "kalm_training.json"}, {"model"});
  staging.published();
}

void Trainer::write_metrics(const std::string& line) {
  if (!metrics_) return;
  if (std::fputs(line.c_str(), metrics_) < 0 || std::fputc('\n', metrics_) < 0 || std::fflush(metrics_) != 0)
    throw IoError(o_.metrics + ": write failed: " + std::strerror(errno));
}

TrainResult Trainer::run() {
  // Before any of the run's threads start (they inherit the mode). Where the
  // CPU has no such mode nothing changes; the state records what was asked.
  if (!o_.keep_denormals) core::set_flush_denormals(true);
  resolve_options();
  std::error_code ec;
  fs::create_directories(o_.output, ec);
  if (ec) throw IoError(o_.output + ": cannot create directory: " + ec.message());
  data_ = load_dataset(o_.data);
  // Refused before anything is trained (the tokenizer included).
  if (o_.include_prompt == false) require_prefix_prompts(data_, o_.data.instruction_template);
  // A named backend makes a group even for one process (a one-GPU NCCL run
  // is how the NCCL path is checked against a plain run).
  if (o_.dist.world_size > 1 || o_.dist.backend != "auto") {
    parallel_ = std::make_unique<DataParallel>(o_.dist, device_);
    leader_ = o_.dist.rank == 0;
  } else if (o_.dist.rank != 0) {
    throw UsageError("--rank needs --world-size > 1");
  }
  global_batching_ = o_.batching;
  global_batching_.batch_size = o_.batching.batch_size * o_.dist.world_size;
  if (leader_) {
    // Two runs in one directory would interleave checkpoints and exports.
    output_lock_ = io::OutputLock::directory(o_.output, std::string("kalm-train (") + stage_name(o_.stage) + " stage)");
    io::remove_staging_leftovers(o_.output);
  }

  std::string resume_dir;
  if (o_.resume) {
    resume_dir = latest_checkpoint(o_.output);
    if (resume_dir.empty() && !o_.quiet)
      std::cerr << "kalm-train: --resume: no checkpoint in " << o_.output << ", starting from the beginning\n";
  }
  prepare_model(resume_dir);
  if (!o_.teacher.empty())
    teacher_ = std::make_unique<Teacher>(o_.teacher, o_.query_max_length, o_.passage_max_length, device_.str());
  if (o_.matryoshka_from_recipe) loss::set_recipe_matryoshka(loss_, encoder_->hidden_size());
  loss::validate_options(loss_);
  include_prompt_ = o_.include_prompt.value_or(model_include_prompt_);
  if (!include_prompt_) set_up_prompt_pooling();
  if (o_.bpe_dropout > 0) set_up_bpe_dropout();

  batches_per_epoch_ = static_cast<std::int64_t>(plan_epoch(data_, global_batching_, o_.seed, 0).batches.size());
  const std::int64_t total =
      o_.max_steps ? *o_.max_steps : o_.epochs * batches_per_epoch_ / o_.grad_accumulation;
  if (total < 1)
    throw UsageError("the data makes no full optimiser step (" + std::to_string(batches_per_epoch_) +
                     " batches per epoch, --grad-accumulation " + std::to_string(o_.grad_accumulation) + ")");
  const std::int64_t warmup =
      o_.warmup_steps ? *o_.warmup_steps
                      : static_cast<std::int64_t>(std::ceil(o_.warmup_ratio * static_cast<double>(total)));

  Fingerprint fp{o_.seed,       global_batching_.batch_size, o_.grad_accumulation, total,
                 static_cast<std::int64_t>(data_.examples.size()), num_negatives_, stage_name(o_.stage), o_.teacher,
                 o_.bpe_dropout, o_.keep_denormals ? "kept" : "flushed"};
  state_.fingerprint = fp;

  AdamWOptions adamw;
  adamw.lr = o_.learning_rate;
  adamw.beta1 = o_.adam_beta1;
  adamw.beta2 = o_.adam_beta2;
  adamw.eps = o_.adam_eps;
  adamw.weight_decay = o_.weight_decay;
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : encoder_->named_parameters()) named.emplace_back(item.key(), item.value());
  optimizer_ = std::make_unique<FusedAdamW>(std::move(named), adamw);
  generator_ = at::make_generator<at::CPUGeneratorImpl>(o_.seed ^ 0x6d697869ULL);
  if (!resume_dir.empty()) {
    auto saved = read_state((fs::path(resume_dir) / kStateFile).string());
    check_fingerprint(saved.fingerprint, fp, resume_dir);
    state_ = saved;
    // Onto this run's device, whichever device wrote the checkpoint.
    optimizer_->load(resume_dir);  // onto each parameter's device; a version-1 optimizer.pt too
    auto rng = io::SafetensorsFile::open((fs::path(resume_dir) / kRngFile).string());
    generator_.set_state(model::tensor_copy(rng, "loss_generator"));
  }

  std::unique_ptr<core::ProfileWindow> profile;
  if (!o_.profile.empty()) {
    core::ProfileRange window = o_.profile_steps;
    if (!o_.profile_steps_given) {
      // The default window counts the steps this run makes (a resumed run's
      // too), cut to a shorter run's last.
      window.first += state_.step;
      window.last = std::min(window.last + state_.step, total);
      window.first = std::min(window.first, window.last);
    }
    const std::string flag = "--profile-steps " + std::to_string(window.first) + ":" + std::to_string(window.last);
    if (window.first > total)
      throw UsageError(flag + ": the run has " + std::to_string(total) + " optimiser steps");
    if (o_.profile_steps_given && window.first <= state_.step)
      throw UsageError(flag + ": the run resumes after step " + std::to_string(state_.step));
    if (window.first > state_.step)  // (a default window of a run with no step left records nothing)
      profile = std::make_unique<core::ProfileWindow>(
          parallel_ ? core::profile_path_for_rank(o_.profile, o_.dist.rank) : o_.profile, window, device_);
  }

  if (!o_.metrics.empty() && leader_) {
    if (!resume_dir.empty()) truncate_metrics(o_.metrics, state_.step);
    metrics_ = std::fopen(o_.metrics.c_str(), resume_dir.empty() ? "w" : "a");
    if (!metrics_) throw IoError(o_.metrics + ": cannot open: " + std::strerror(errno));
  }
  struct CloseFile {
    std::FILE*& f;
    ~CloseFile() {
      if (f) std::fclose(f);
      f = nullptr;
    }
  } close_metrics{metrics_};

  StopSignalScope signals;
  TrainResult result;
  cli::Progress progress("kalm-train", "steps", static_cast<std::uint64_t>(total - state_.step), o_.quiet || !leader_);
  // The batch of each micro-batch is a pure function of the seed, the epoch
  // and its index (plan_epoch, batch_rng), so building it ahead on another
  // thread gives the same batches in the same order.
  std::shared_ptr<const EpochPlan> plan;
  std::int64_t plan_epoch_index = -1;
  auto plan_for = [&](std::int64_t epoch) {
    if (epoch != plan_epoch_index) {
      plan = std::make_shared<const EpochPlan>(
          plan_epoch(data_, global_batching_, o_.seed, static_cast<std::uint64_t>(epoch)));
      plan_epoch_index = epoch;
    }
    return plan;
  };
  PromptTokenCount prompt_tokens;
  if (!include_prompt_)
    prompt_tokens = [this](const std::string& prompt) { return prompt_token_counts_.at(prompt); };
  PromptTokenCount prompt_model_ids;
  if (o_.bpe_dropout > 0)
    prompt_model_ids = [this](const std::string& prompt) { return prompt_model_ids_.at(prompt); };
  auto build_micro_batch = [this, prompt_tokens, prompt_model_ids](std::shared_ptr<const EpochPlan> epoch_plan,
                                                                   std::int64_t micro) {
    const std::int64_t epoch = micro / batches_per_epoch_, b = micro % batches_per_epoch_;
    auto rng = batch_rng(o_.seed, static_cast<std::uint64_t>(epoch), static_cast<std::uint64_t>(b));
    return build_batch(data_, epoch_plan->batches[static_cast<std::size_t>(b)], num_negatives_, with_scores_, rng,
                       *tokenizer_, o_.query_max_length, o_.passage_max_length, prompt_tokens, o_.bpe_dropout,
                       prompt_model_ids);
  };
  // The next micro-batch, sampled and tokenised on a background thread while
  // the device runs this one (prefetch_); its errors surface when it is taken.
  std::future<TrainBatch> prefetched;
  std::int64_t prefetched_micro = -1;
  const std::int64_t last_micro = total * o_.grad_accumulation - 1;
  std::int64_t tokens_total = 0;
  const auto params = encoder_->parameters();
  // Gradients summed in buckets while the step's last backward runs
  // (--grad-bucket-mb; 0 = one flat all-reduce after it).
  if (parallel_ && o_.dist.bucket_mb > 0) buckets_ = std::make_unique<GradientBuckets>(*parallel_, params, o_.dist.bucket_mb);

  while (state_.step < total) {
    if (profile) profile->begin(state_.step + 1);
    const auto t0 = std::chrono::steady_clock::now();
    optimizer_->zero_grad();
    // Losses and metrics stay on the device until one read-back per step (a
    // .item() per value was ~36 host synchronisations per micro-batch).
    std::map<std::string, torch::Tensor> sums;
    std::vector<torch::Tensor> micro_losses;
    std::vector<std::int64_t> micro_epoch, micro_batch;
    std::int64_t tokens = 0;
    for (std::int64_t a = 0; a < o_.grad_accumulation; ++a) {
      const std::int64_t epoch = state_.micro_batches / batches_per_epoch_;
      const std::int64_t b = state_.micro_batches % batches_per_epoch_;
      TrainBatch batch;
      if (prefetched_micro == state_.micro_batches) {
        prefetched_micro = -1;
        batch = prefetched.get();
      } else {
        batch = build_micro_batch(plan_for(epoch), state_.micro_batches);
      }
      if (prefetch_ && state_.micro_batches < last_micro) {
        prefetched_micro = state_.micro_batches + 1;
        prefetched = std::async(std::launch::async, build_micro_batch,
                                plan_for(prefetched_micro / batches_per_epoch_), prefetched_micro);
      }
      if (parallel_) {
        // Every rank sampled the same global batch; each embeds its own slice.
        const std::int64_t b_local = o_.batching.batch_size, g = batch.info.group_size, r = o_.dist.rank;
        batch.queries = slice_rows(batch.queries, r * b_local, (r + 1) * b_local);
        batch.passages = slice_rows(batch.passages, r * b_local * g, (r + 1) * b_local * g);
        slice_texts(batch, r * b_local, (r + 1) * b_local, g);
      }
      if (teacher_) {
        // Each rank scores its own groups; the loss needs the global rows.
        auto scores = teacher_->scores(batch.query_texts, batch.passage_texts, batch.info.group_size,
                                       batch.query_sources, batch.passage_sources, batch.query_prompts);
        batch.info.teacher_scores = parallel_ ? parallel_->all_gather_rows(scores) : scores;
      }
      auto out = forward_backward(*encoder_, batch, pooling_, loss_, calls_, generator_,
                                  1.0 / static_cast<double>(o_.grad_accumulation), bf16_, parallel_.get(),
                                  a + 1 == o_.grad_accumulation ? buckets_.get() : nullptr);
      micro_losses.push_back(out.total.detach().to(torch::kDouble));
      micro_epoch.push_back(epoch);
      micro_batch.push_back(b);
      for (const auto* values : {&out.components, &out.metrics})
        for (const auto& [k, v] : *values) {
          auto [it, fresh] = sums.try_emplace(k, v.detach().to(torch::kDouble));
          if (!fresh) it->second = it->second + v.detach().to(torch::kDouble);
        }
      tokens += batch.queries.tokens + batch.passages.tokens;
      ++state_.micro_batches;
    }
    if (buckets_) {
      buckets_->finish();
    } else if (parallel_) {
      parallel_->all_reduce_gradients(params);
    }
    const double lr = learning_rate_at(state_.step, total, warmup, o_.learning_rate, schedule_);
    optimizer_->set_lr(lr);
    const torch::Tensor grad_norm_t = clip_gradients(params, o_.max_grad_norm);

    // The step's one read-back: every micro-batch loss, the metrics, the norm.
    std::vector<torch::Tensor> readback = micro_losses;
    for (const auto& [k, v] : sums) readback.push_back(v);
    readback.push_back(grad_norm_t.to(torch::kDouble));
    const torch::Tensor host = torch::stack(readback).to(torch::kCPU);
    const double* values = host.data_ptr<double>();
    double loss_sum = 0;
    for (std::size_t i = 0; i < micro_losses.size(); ++i) {
      // Checked before the optimiser applies anything, so a NaN never reaches the weights.
      if (!std::isfinite(values[i]))
        throw Error("step " + std::to_string(state_.step + 1) + ": the loss is not finite (" +
                    std::to_string(values[i]) + "); lower --lr or check the data (epoch " +
                    std::to_string(micro_epoch[i]) + ", batch " + std::to_string(micro_batch[i]) + ")");
      loss_sum += values[i];
    }
    const double grad_norm = values[host.size(0) - 1];
    optimizer_->step();
    ++state_.step;
    if (profile) profile->end(state_.step);
    tokens_total += tokens;

    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double accum = static_cast<double>(o_.grad_accumulation);
    result.last_loss = loss_sum / accum;
    result.losses.push_back(result.last_loss);
    if (metrics_) {
      std::string line = "{\"step\": " + std::to_string(state_.step) + ", \"epoch\": ";
      io::append_json_number(line, static_cast<double>(state_.micro_batches) / static_cast<double>(batches_per_epoch_));
      line += ", \"loss\": ";
      io::append_json_number(line, result.last_loss);
      std::size_t at = micro_losses.size();
      for (const auto& entry : sums) {
        const double v = values[at++];
        line += ", ";
        io::append_json_string(line, entry.first);
        line += ": ";
        io::append_json_number(line, std::isfinite(v / accum) ? v / accum : 0.0);
      }
      if (buckets_) {
        // How much of the all-reduce overlapped backward (GradientBuckets).
        const auto counts = buckets_->last_counts();
        line += ", \"grad_buckets\": " + std::to_string(counts.buckets) +
                ", \"grad_buckets_in_backward\": " + std::to_string(counts.launched_in_backward);
      }
      line += ", \"lr\": ";
      io::append_json_number(line, lr);
      line += ", \"grad_norm\": ";
      io::append_json_number(line, std::isfinite(grad_norm) ? grad_norm : -1.0);
      line += ", \"tokens_per_s\": ";
      io::append_json_number(line, seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0);
      line += "}";
      write_metrics(line);
    }
    progress.advance();

    if (state_.step == total) break;
    int sig = take_stop_signal();
    if (parallel_) sig = static_cast<int>(parallel_->all_max(sig));  // every rank stops at the same step
    const bool stop_here = sig != 0 || (o_.stop_at_step && state_.step >= *o_.stop_at_step);
    if (stop_here || (o_.save_steps > 0 && state_.step % o_.save_steps == 0)) save_checkpoint();
    if (stop_here) {
      result.signal = sig;
      result.stopped = true;
      break;
    }
  }
  result.steps = state_.step;
  result.encoder = encoder_;
  if (!result.stopped) export_final();
  if (profile && !profile->finish())
    // Stopped (signal, --stop-at-step) before the window: said even under
    // --quiet, since an output the user named is missing.
    std::cerr << "kalm-train: no profile: the run stopped at step " << state_.step << ", before step "
              << profile->range().first << "; nothing written to " << profile->path() << "\n";
  std::ostringstream summary;
  summary << (result.stopped ? "stopped at step " : "trained ") << state_.step << "/" << total << " steps, "
          << data_.examples.size() << " groups, final loss " << result.last_loss << ", "
          << cli::format_rate(static_cast<double>(tokens_total) / std::max(1e-9, progress.elapsed_seconds()))
          << " tokens/s";
  if (profile && profile->written())
    summary << ", profile of " << profile->units_recorded() << " step(s) from step " << profile->range().first
            << " in " << profile->path();
  progress.finish(summary.str());
  return result;
}

}  // namespace

TrainResult run_training(const TrainOptions& options) { return Trainer(options).run(); }

}  // namespace kalm::train
