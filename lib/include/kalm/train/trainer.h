#pragma once
// The training loop of kalm-train and kalm-distill (recipe §4): data -> batches
// -> forward_backward (step.h) -> AdamW with warm-up and decay -> checkpoints,
// metrics and a final export that transformers and sentence-transformers load.
//
// Output directory layout:
//   OUTPUT/checkpoint-STEP/   a loadable model (config.json, model.safetensors,
//                             tokenizer, sentence-transformers files) plus
//                             optimizer.safetensors (AdamW state, version 2,
//                             optimizer.h; a version-1 optimizer.pt resumes too),
//                             rng_state.safetensors (the loss generator's state,
//                             uint8) and trainer_state.json (step, data cursor,
//                             run fingerprint). Written to a hidden temporary
//                             directory and renamed, so it is complete or absent.
//   OUTPUT/                   the final model (same files, no optimiser state).
//
// Resume (TrainOptions::resume): continues from the newest complete checkpoint
// in OUTPUT. The batch plan is a pure function of (seed, epoch) and each
// batch's sampling of (seed, epoch, batch), so the data cursor is just the
// number of micro-batches consumed; together with the weights, the AdamW
// state and the generator state, a resumed run performs exactly the same
// floating-point operations: on CPU with the same thread count its final
// weights are bit-identical to an uninterrupted run's.
//
// Signals: SIGINT and SIGTERM are blocked in the calling thread (and so in
// every thread it starts afterwards) and polled at each optimiser-step
// boundary; a pending one makes the loop write a checkpoint and return with
// TrainResult::signal set. Polling rather than a handler keeps
// AtomicOutputFile's cleanup handler from unlinking a checkpoint being
// written. A tool must block them before any thread starts (kalm-train's main
// does; see block_stop_signals).
//
// The teacher (TrainOptions::teacher) is part of the run's fingerprint: a
// resumed run must name the same directory.
//
// Errors: UsageError for bad options, IoError / FormatError / ModelError from
// data, models and checkpoints, each with its context. A non-finite loss is a
// kalm::Error naming the step (the run stops before the weights are damaged).
//
// Thread safety: run_training owns the process's training; one at a time.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kalm/core/profile.h"
#include "kalm/loss/loss.h"
#include "kalm/model/transformer.h"
#include "kalm/train/data.h"
#include "kalm/train/dist.h"
#include "kalm/train/step.h"

namespace kalm::train {

enum class Stage {
  kPretrain,  // in-batch negatives only: M = 0, focal and mixing off unless set
  kFinetune,  // hard negatives, focal, mixing, Matryoshka
  kDistill,   // kFinetune plus teacher soft labels (pos_scores / neg_scores, or TrainOptions::teacher)
};

// "pretrain" | "finetune" | "distill"; UsageError otherwise.
Stage parse_stage(const std::string& name);

struct TrainOptions {
  // Data
  DataOptions data;                          // inputs, instructions, template
  BatchingOptions batching;                  // B, task-homogeneous batches, ratio
  std::optional<std::int64_t> num_negatives; // M; unset: 0 (pretrain) or 7 (finetune, distill)
  std::int64_t query_max_length = 512;       // tokens per query, special tokens included
  std::int64_t passage_max_length = 512;     // tokens per passage
  // Model
  std::string init;                          // HF model directory to start from
  std::string init_config;                   // or: config.json of a new, randomly initialised model
  std::string tokenizer;                     // tokenizer directory (default: --init)
  std::optional<std::int64_t> train_tokenizer;  // or: train a tokenizer of this vocabulary size
  std::string tokenizer_model = "bpe";       // what --train-tokenizer trains: bpe (byte-level) or unigram
  // BPE dropout on the training texts (each merge skipped with this
  // probability; instruction prompts kept whole); 0 = none. Only what the
  // model sees while training changes: the exported tokenizer has no dropout.
  double bpe_dropout = 0;
  // With init_config: copy the token embeddings (and the final norm) of this
  // trained model into the new one, which must have the same width; the
  // vocabulary size and the tokenizer default to this model's. Seeds a deeper model from a
  // cheaper one (a size ladder).
  std::string init_embeddings;
  std::string pooling = "mean";              // mean | last | cls
  // sentence-transformers' include_prompt: false = queries pool without their
  // instruction prefix (exported in 1_Pooling/config.json); unset = the
  // --init / resumed model's setting (true for a new model)
  std::optional<bool> include_prompt;
  std::string attention;                     // causal | bidirectional; "" = the model's
  std::string dtype = "f32";                 // compute: f32, or bf16 (autocast; weights stay f32)
  // Where the model, its gradients and the optimiser state live: cpu, cuda or
  // cuda:N (model::parse_device). Plain "cuda" under a data-parallel launch
  // means cuda:LOCAL_RANK. The teacher (distill) runs there too.
  std::string device = "cpu";
  // Distill stage only: a frozen teacher model directory whose cosine scores of
  // each batch's groups are the soft labels (teacher.h); the records' own
  // pos_scores / neg_scores are then ignored. "" = the records' scores.
  std::string teacher;
  // Optimisation
  Stage stage = Stage::kFinetune;
  double learning_rate = 1e-5;               // peak lr
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  std::string schedule = "linear";           // linear | cosine | constant
  double warmup_ratio = 0.1;                 // share of steps warming up (unless warmup_steps)
  std::optional<std::int64_t> warmup_steps;  // overrides warmup_ratio
  std::optional<double> max_grad_norm = 1.0; // clip the global L2 norm; unset = no clipping
  std::int64_t grad_accumulation = 1;        // micro-batches per optimiser step
  std::int64_t epochs = 1;
  std::optional<std::int64_t> max_steps;     // optimiser steps; overrides epochs
  // Model calls (step.h): padded tokens per call (unset: the device's
  // default, default_call_tokens); GradCache when grad_cache or
  // grad_cache_chunk (which also caps the texts per chunk)
  std::optional<std::int64_t> call_tokens;
  bool grad_cache = false;
  std::optional<std::int64_t> grad_cache_chunk;
  // Sample and tokenise the next micro-batch on a background thread while the
  // device runs this one: "on", "off", or "auto" (on when training on a GPU;
  // on CPU the thread would compete with the model's threads). Same batches
  // either way.
  std::string prefetch = "auto";
  // On a GPU: deterministic kernels (model::use_deterministic_kernels), so
  // that a run and its resumed twin give the same bytes on the same GPU type
  // and LibTorch build. Off trades that for the fastest kernels.
  bool deterministic = true;
  // Data parallel (dist.h): batch_size is per rank, the global batch is world_size times it
  DistOptions dist;                          // world, rank, rendezvous, timeout (resolve_dist)
  // Loss; focal_gamma / mix unset = the stage's default
  loss::LossOptions loss;                    // temperature, mixing details, distillation, Matryoshka
  std::optional<double> focal_gamma;
  std::optional<loss::MixMode> mix;
  bool matryoshka_from_recipe = true;        // loss.matryoshka_* from set_recipe_matryoshka(H)
  // Output
  std::string output;                        // directory (required)
  std::string metrics;                       // JSONL metrics file; "" = none
  std::int64_t save_steps = 0;               // checkpoint every N steps; 0 = only at the end / on a signal
  std::int64_t keep_checkpoints = 0;         // keep only the newest N checkpoints; 0 = keep all
  bool resume = false;                       // continue from the newest checkpoint in output
  std::optional<std::int64_t> stop_at_step;  // checkpoint and stop after this step (as on a signal)
  // A Chrome trace of optimiser steps profile_steps (core/profile.h); every
  // rank of a data-parallel run writes its own (profile_path_for_rank).
  std::string profile;                       // "" = none
  core::ProfileRange profile_steps{3, 5};
  bool profile_steps_given = false;          // false: the default window, cut to a shorter run's steps
  std::uint64_t seed = 42;
  bool quiet = false;
  std::string command_line;                  // recorded in trainer_state.json
  // false: run_training turns on flush-to-zero for the process's CPU threads
  // (core::set_flush_denormals; it stays on after the run) and records
  // "cpu_denormals": "flushed" in the state; a resumed run must agree.
  bool keep_denormals = false;
};

struct TrainResult {
  std::int64_t steps = 0;         // optimiser steps completed (in total, resumed ones included)
  int signal = 0;                 // nonzero: stopped by this signal after a checkpoint
  bool stopped = false;           // stopped early (signal or stop_at_step) after a checkpoint
  double last_loss = 0.0;         // total loss of the last micro-batch
  std::vector<double> losses;     // total loss of every step run in this call (for tests)
  model::Encoder encoder{nullptr};  // the trained model, as exported or checkpointed
};

// Runs the whole training. Throws as described at the top.
TrainResult run_training(const TrainOptions& options);

// Blocks SIGINT and SIGTERM in the calling thread (threads created later
// inherit the mask). Call first thing in main.
void block_stop_signals();

}  // namespace kalm::train
