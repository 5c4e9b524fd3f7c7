#include "kalm/train/train_command.h"

#include <cmath>
#include <cstdlib>
#include <sstream>

#include "kalm/error.h"

namespace kalm::train {
namespace {

template <typename T>
std::vector<T> parse_list(const std::string& text, const std::string& flag) {
  std::vector<T> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      std::size_t used = 0;
      T v;
      if constexpr (std::is_integral_v<T>)
        v = static_cast<T>(std::stoll(item, &used));
      else
        v = static_cast<T>(std::stod(item, &used));
      if (used != item.size()) throw std::invalid_argument("trailing");
      out.push_back(v);
    } catch (const std::exception&) {
      throw UsageError(flag + ": '" + item + "' is not a number (want a comma-separated list)");
    }
  }
  if (out.empty()) throw UsageError(flag + ": empty list");
  return out;
}

loss::MixMode parse_mix(const std::string& name) {
  if (name == "none") return loss::MixMode::kNone;
  if (name == "pairwise") return loss::MixMode::kPairwise;
  if (name == "listwise") return loss::MixMode::kListwise;
  throw UsageError("--mix must be none, pairwise or listwise, got '" + name + "'");
}

}  // namespace

void add_train_flags(cli::Tool& tool, TrainFlags& f, bool distill) {
  auto& app = tool.app();
  auto& o = f.options;
  const char* kLoss = "Loss";
  const char* kOptim = "Optimisation";
  app.add_option("inputs", o.data.inputs,
                 "Training groups: JSONL(.zst) files or directories (one task per file or sub-directory)")
      ->group(cli::kGroupInput);
  app.add_option("--instructions", o.data.instructions_file,
                 "JSON object task -> instruction, applied to queries (a record's \"instruction\" wins)")
      ->group(cli::kGroupInput);
  app.add_option("--instruction-template", o.data.instruction_template, "How an instruction prefixes a query")
      ->group(cli::kGroupInput);
  app.add_option("--oversample", f.oversample,
                 "TASK=K: the task's groups enter every epoch K times (repeatable; weights a small task up)")
      ->group(cli::kGroupInput);
  app.add_option("--batch-size", o.batching.batch_size, "Groups (queries) per contrastive batch")
      ->check(cli::positive_number())
      ->group(cli::kGroupInput);
  app.add_option("--num-negatives", o.num_negatives,
                 "Hard negatives per query (M; sampled with replacement when a group has fewer); default 0 for "
                 "pretrain, 7 otherwise")
      ->check(cli::non_negative_number())
      ->group(cli::kGroupInput);
  app.add_flag("--task-homogeneous,!--no-task-homogeneous", o.batching.task_homogeneous,
               "Fill batches from one task at a time (KaLM's in-task sampler)")
      ->group(cli::kGroupInput);
  app.add_option("--homogeneous-ratio", o.batching.homogeneous_ratio,
                 "Share of same-task slots in a homogeneous batch; the rest are random (recipe 4.4)")
      ->check(CLI::Range(0.0, 1.0))
      ->group(cli::kGroupInput);
  app.add_option("--query-max-length", o.query_max_length, "Tokens per query, special tokens included")
      ->check(cli::positive_number())
      ->group(cli::kGroupInput);
  app.add_option("--passage-max-length", o.passage_max_length, "Tokens per passage, special tokens included")
      ->check(cli::positive_number())
      ->group(cli::kGroupInput);

  app.add_option("--init", o.init, "Start from this Hugging Face model directory (Qwen2 or Gemma3)")
      ->group(cli::kGroupModel);
  app.add_option("--init-config", o.init_config, "Or: a config.json for a new randomly initialised model")
      ->group(cli::kGroupModel);
  app.add_option("--init-embeddings", o.init_embeddings,
                 "With --init-config: copy the token embeddings and final norm of this trained model (same width; its "
                 "vocabulary size and tokenizer are used)")
      ->group(cli::kGroupModel);
  app.add_option("--tokenizer", o.tokenizer, "Tokenizer directory (default: --init, or --init-embeddings)")
      ->group(cli::kGroupModel);
  app.add_option("--train-tokenizer", o.train_tokenizer,
                 "Or: train a tokenizer of this vocabulary size on the training texts")
      ->check(cli::positive_number())
      ->group(cli::kGroupModel);
  app.add_option("--tokenizer-model", o.tokenizer_model,
                 "What --train-tokenizer trains: bpe (byte-level, Qwen2's pipeline; at least 258) or unigram "
                 "(SentencePiece); without --train-tokenizer it has no effect")
      ->check(CLI::IsMember({"bpe", "unigram"}))
      ->group(cli::kGroupModel);
  app.add_option("--bpe-dropout", o.bpe_dropout,
                 "BPE dropout on the training texts: each merge skipped with this probability, so that words also "
                 "reach the model as the pieces they are made of (instruction prompts kept whole; the saved "
                 "tokenizer has none); 0 = off. Needs a BPE tokenizer")
      ->check(CLI::Range(0.0, 0.99))
      ->group(cli::kGroupModel);
  app.add_option("--include-prompt", o.include_prompt,
                 "false: queries pool without their instruction prefix, as sentence-transformers' include_prompt "
                 "(written to 1_Pooling/config.json, so kalm-embed and sentence-transformers embed the same way); "
                 "default: the --init model's setting, true for a new model")
      ->group(cli::kGroupModel);
  app.add_option("--pooling", o.pooling, "mean, last or cls")
      ->check(CLI::IsMember({"mean", "last", "cls"}))
      ->group(cli::kGroupModel);
  app.add_option("--attention", o.attention, "causal or bidirectional (default: the model's)")
      ->check(CLI::IsMember({"causal", "bidirectional"}))
      ->group(cli::kGroupModel);

  app.add_option("--dtype", o.dtype,
                 "Compute dtype: f32, tf32 (f32 with TF32 matmuls, GPUs only), or bf16 (autocast: matmuls in "
                 "bfloat16; weights, optimiser and loss in f32)")
      ->check(CLI::IsMember({"f32", "tf32", "bf16"}))
      ->group(cli::kGroupCompute);
  app.add_option("--device", o.device,
                 "cpu, cuda or cuda:N (cuda under a data-parallel launch: cuda:LOCAL_RANK); the teacher runs there too")
      ->group(cli::kGroupCompute);
  app.add_flag("--keep-denormals", o.keep_denormals,
               "Keep subnormal floats on the CPU (default: flush them to zero, as Intel cores slow down on them)")
      ->group(cli::kGroupCompute);
  if (!distill)
    app.add_option("--stage", f.stage, "pretrain (in-batch negatives only) or finetune (hard negatives, focal, mixing)")
        ->check(CLI::IsMember({"pretrain", "finetune"}))
        ->group(kOptim);
  app.add_option("--lr", o.learning_rate, "Peak learning rate (AdamW)")->group(kOptim);
  app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->group(kOptim);
  app.add_option("--adam-beta1", o.adam_beta1, "AdamW beta1")->group(kOptim);
  app.add_option("--adam-beta2", o.adam_beta2, "AdamW beta2")->group(kOptim);
  app.add_option("--adam-eps", o.adam_eps, "AdamW epsilon")->group(kOptim);
  app.add_option("--schedule", o.schedule, "Decay after warm-up: linear, cosine or constant")
      ->check(CLI::IsMember({"linear", "cosine", "constant"}))
      ->group(kOptim);
  app.add_option("--warmup-ratio", o.warmup_ratio, "Share of the steps spent warming up")
      ->check(CLI::Range(0.0, 1.0))
      ->group(kOptim);
  app.add_option("--warmup-steps", o.warmup_steps, "Warm-up steps (overrides --warmup-ratio)")
      ->check(cli::non_negative_number())
      ->group(kOptim);
  app.add_option("--max-grad-norm", o.max_grad_norm, "Clip the gradients' global L2 norm (default 1; see --no-grad-clip)")
      ->check(cli::positive_number())
      ->group(kOptim);
  app.add_flag("--no-grad-clip", f.no_grad_clip, "Do not clip gradients")->group(kOptim);
  app.add_option("--grad-accumulation", o.grad_accumulation, "Micro-batches per optimiser step")
      ->check(cli::positive_number())
      ->group(kOptim);
  app.add_option("--call-tokens", o.call_tokens,
                 "Most padded tokens in one model call: a step's texts are sorted by length and packed into calls "
                 "of this size (default " + std::to_string(kDefaultCallTokensCpu) + " on CPU, " +
                     std::to_string(kDefaultCallTokensGpu) + " on a GPU); with GradCache, the chunk size")
      ->check(cli::positive_number())
      ->group(kOptim);
  app.add_flag("--grad-cache", o.grad_cache,
               "GradCache: each model call is a chunk embedded without a graph, so memory is one call's whatever "
               "the batch (chunks sized by --call-tokens)")
      ->group(kOptim);
  app.add_option("--prefetch", o.prefetch,
                 "Sample and tokenise the next batch on a background thread while the model runs: auto (on a GPU), "
                 "on, off; the batches are the same either way")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->group(kOptim);
  app.add_flag("--deterministic,!--no-deterministic", o.deterministic,
               "On a GPU, deterministic kernels so that a run and its resumed twin give the same bytes (default on; "
               "--no-deterministic for the fastest kernels)")
      ->group(kOptim);
  app.add_option("--grad-cache-chunk", o.grad_cache_chunk,
                 "GradCache with at most N texts per chunk (and at most --call-tokens tokens); implies --grad-cache")
      ->check(cli::positive_number())
      ->group(kOptim);
  app.add_option("--world-size", f.dist.world_size,
                 "Data-parallel processes (c10d); --batch-size is per process (default: WORLD_SIZE, "
                 "SLURM_NTASKS, 1)")
      ->check(cli::positive_number())
      ->group(cli::kGroupCompute);
  app.add_option("--rank", f.dist.rank, "This process's rank in [0, --world-size) (default: RANK, SLURM_PROCID, 0)")
      ->check(cli::non_negative_number())
      ->group(cli::kGroupCompute);
  app.add_option("--dist-store", f.dist.store_path,
                 "Rendezvous file shared by every rank (c10d FileStore; remove it before a new run); default: a "
                 "TCP store at MASTER_ADDR:MASTER_PORT served by rank 0")
      ->group(cli::kGroupCompute);
  app.add_option("--dist-backend", f.dist.backend,
                 "Collectives over nccl (GPU ranks, on the GPU) or gloo (CPU ranks; GPU ranks staged through host "
                 "memory); auto = nccl for --device cuda when built with NCCL, else gloo. Naming one makes a "
                 "process group even for one process")
      ->check(CLI::IsMember({"auto", "nccl", "gloo"}))
      ->group(cli::kGroupCompute);
  app.add_option("--grad-bucket-mb", f.dist.bucket_mb,
                 "Data parallel: gradients are summed over ranks in buckets of this many MiB, each launched as "
                 "soon as backward has produced it (overlapping communication with backward, as PyTorch's DDP "
                 "bucket_cap_mb); 0 = one all-reduce of all gradients after backward")
      ->check(cli::non_negative_number())
      ->group(cli::kGroupCompute);
  app.add_option("--dist-timeout", f.dist.timeout_s,
                 "Seconds the rendezvous and each collective wait for the other ranks before failing")
      ->check(cli::positive_number())
      ->group(cli::kGroupCompute);
  app.add_option("--epochs", o.epochs, "Passes over the data")->check(cli::positive_number())->group(kOptim);
  app.add_option("--max-steps", o.max_steps, "Optimiser steps (overrides --epochs)")
      ->check(cli::positive_number())
      ->group(kOptim);

  app.add_option("--temperature", o.loss.temperature, "InfoNCE temperature")->group(kLoss);
  app.add_option("--focal-gamma", o.focal_gamma, "Focal reweighting gamma (0 = plain InfoNCE); default 0 for "
                                                 "pretrain, 0.5 otherwise")
      ->check(cli::non_negative_number())
      ->group(kLoss);
  app.add_option("--mix", f.mix, "Hard-negative mixing: none, pairwise or listwise; default none for pretrain, "
                                 "pairwise otherwise")
      ->check(CLI::IsMember({"none", "pairwise", "listwise"}))
      ->group(kLoss);
  app.add_option("--mix-count", o.loss.mix_count, "Synthetic negatives per query (pairwise)")
      ->check(cli::positive_number())
      ->group(kLoss);
  app.add_flag("--mix-gradient", f.mix_gradient,
               "Let gradient flow through the synthetic negatives into the negatives they mix (default: constants)")
      ->group(kLoss);
  app.add_flag("--symmetric-loss", o.loss.symmetric,
               "Average the InfoNCE loss with its passage-to-query twin (each positive against every query of the "
               "batch), as sentence-transformers' MultipleNegativesSymmetricRankingLoss")
      ->group(kLoss);
  app.add_flag("--keep-duplicate-negatives", f.keep_duplicate_negatives,
               "Score a passage identical to a query's positive as its negative (default: such copies, e.g. "
               "one definition that is the positive of two queries in a batch, are left out of that row)")
      ->group(kLoss);
  app.add_flag("--focal-detach", o.loss.focal_detach,
               "Stop gradient through the focal weight (1-p)^gamma (a constant per row); default: it flows")
      ->group(kLoss);
  app.add_option("--matryoshka-dims", f.matryoshka_dims,
                 "Comma-separated Matryoshka dims, largest = hidden size (default: the recipe's for the size)")
      ->group(kLoss);
  app.add_option("--matryoshka-weights", f.matryoshka_weights, "Comma-separated weight per Matryoshka dim")
      ->group(kLoss);
  if (distill) {
    app.add_option("--teacher", o.teacher,
                   "Teacher model directory: score each batch's groups on the fly (cosine) instead of reading "
                   "pos_scores/neg_scores, which are then ignored")
        ->group(cli::kGroupModel);
    app.add_option("--distill-weight", o.loss.distill_weight, "Weight of the KL term (alpha)")->group(kLoss);
    app.add_option("--teacher-temperature", o.loss.teacher_temperature, "Teacher softmax temperature")
        ->group(kLoss);
    app.add_option("--student-temperature", o.loss.student_temperature, "Student softmax temperature (KL)")
        ->group(kLoss);
    app.add_option("--distill-scope", f.distill_scope,
                   "group (softmax over the query's own passages) or in-batch (whole masked row)")
        ->check(CLI::IsMember({"group", "in-batch"}))
        ->group(kLoss);
    app.add_flag("--distill-only", o.loss.distill_only, "Train on the KL term alone (no contrastive term)")
        ->group(kLoss);
  }

  app.add_option("-o,--output", o.output, "Output directory: checkpoints and the final model")
      ->group(cli::kGroupOutput);
  app.add_option("--metrics", o.metrics, "Append one JSON line per step (loss, components, lr, grad norm, tokens/s)")
      ->group(cli::kGroupOutput);
  app.add_option("--save-steps", o.save_steps, "Write OUTPUT/checkpoint-STEP every N steps (0 = never)")
      ->check(cli::non_negative_number())
      ->group(cli::kGroupOutput);
  app.add_option("--keep-checkpoints", o.keep_checkpoints, "Keep only the newest N checkpoints (0 = all)")
      ->check(cli::non_negative_number())
      ->group(cli::kGroupOutput);
  app.add_flag("--resume", o.resume, "Continue from the newest checkpoint in OUTPUT (exactly)")
      ->group(cli::kGroupOutput);
  app.add_option("--stop-at-step", o.stop_at_step, "Checkpoint and stop after this step (resume later with --resume)")
      ->check(cli::positive_number())
      ->group(cli::kGroupOutput);
  app.add_option("--profile", o.profile,
                 "Write a Chrome trace (LibTorch's profiler: operators, and CUDA kernels on a GPU) of the "
                 "--profile-steps window to this file (each rank of a data-parallel run its own, .rankN before .json)")
      ->group(cli::kGroupOutput);
  app.add_option("--profile-steps", f.profile_steps,
                 "Optimiser steps to profile, FIRST:LAST or FIRST (1-based; earlier steps warm up) [3:5, "
                 "counted from where the run starts]")
      ->group(cli::kGroupOutput);

  if (!distill) {
    f.soup = app.add_subcommand("soup", "Average checkpoints (model soup): kalm-train soup -o DIR CKPT...");
    f.soup->add_option("checkpoints", f.soup_options.inputs, "Model or checkpoint directories")->required();
    f.soup->add_option("-o,--output", f.soup_options.output, "Output model directory")->required();
    f.soup->add_option("--weights", f.soup_options.weights, "One weight per checkpoint (normalised); default uniform")
        ->delimiter(',');
  }
}

int run_train_command(TrainFlags& f, const cli::Tool& tool, bool distill) {
  if (f.soup && f.soup->parsed()) {
    make_soup(f.soup_options);
    return 0;
  }
  auto& o = f.options;
  o.stage = distill ? Stage::kDistill : parse_stage(f.stage);
  if (!f.mix.empty()) o.mix = parse_mix(f.mix);
  if (f.no_grad_clip) o.max_grad_norm.reset();
  o.loss.mix_detach = !f.mix_gradient;
  o.loss.mask_duplicates = !f.keep_duplicate_negatives;
  for (const auto& spec : f.oversample) {
    auto [task, factor] = parse_oversample(spec);
    if (!o.data.oversample.emplace(task, factor).second)
      throw UsageError("--oversample names task '" + task + "' twice");
  }
  o.loss.distill_scope = f.distill_scope == "in-batch" ? loss::DistillScope::kInBatch : loss::DistillScope::kGroup;
  if (!f.matryoshka_dims.empty()) {
    o.loss.matryoshka_dims = parse_list<std::int64_t>(f.matryoshka_dims, "--matryoshka-dims");
    o.loss.matryoshka_weights = f.matryoshka_weights.empty()
                                    ? std::vector<double>(o.loss.matryoshka_dims.size(), 1.0)
                                    : parse_list<double>(f.matryoshka_weights, "--matryoshka-weights");
    o.matryoshka_from_recipe = false;
  } else if (!f.matryoshka_weights.empty()) {
    throw UsageError("--matryoshka-weights needs --matryoshka-dims");
  }
  o.profile_steps_given = f.profile_steps.has_value();
  if (o.profile_steps_given) o.profile_steps = core::parse_profile_range(*f.profile_steps, "--profile-steps");
  if (o.profile.empty() && o.profile_steps_given)
    throw UsageError("--profile-steps needs --profile FILE");
  o.dist = resolve_dist(f.dist, [](const char* name) -> const char* { return std::getenv(name); });
  o.seed = tool.common().seed;
  o.quiet = tool.common().quiet;
  o.command_line = tool.command_line();
  auto result = run_training(o);
  return result.signal ? 128 + result.signal : 0;
}

}  // namespace kalm::train
