#pragma once
// kalm-train's and kalm-distill's command lines: flags bound to TrainOptions
// (trainer.h) and the `soup` subcommand (soup.h), and the entry points that
// tools/kalm-train.cpp and tools/kalm-distill.cpp call.
//
// Exit status (conventions.md): 0 done, 1 runtime failure, 2 usage error,
// 128 + N after a clean checkpoint on signal N (SIGINT 130, SIGTERM 143).
// Not thread-safe; one per process.

#include <optional>
#include <string>
#include <vector>

#include "kalm/cli/tool.h"
#include "kalm/train/dist.h"
#include "kalm/train/soup.h"
#include "kalm/train/trainer.h"

namespace kalm::train {

// String-valued flags that the options struct holds as enums/optionals.
struct TrainFlags {
  TrainOptions options;
  std::string stage = "finetune";  // pretrain | finetune (kalm-distill: distill, fixed)
  std::string mix;                 // none | pairwise | listwise; "" = the stage's default
  std::string distill_scope = "group";
  std::string matryoshka_dims;     // "896,512,..."; "" = the recipe's for the hidden size
  std::string matryoshka_weights;  // "1,0.3,..."
  bool no_grad_clip = false;
  bool keep_duplicate_negatives = false;
  bool mix_gradient = false;       // --mix-gradient: options.loss.mix_detach = false
  std::vector<std::string> oversample;  // --oversample TASK=K, repeatable
  DistFlags dist;                  // --world-size/--rank/--dist-store/--dist-timeout, resolved with the environment
  // --profile-steps, parsed into options.profile_steps; unset: the default
  // window (kept out of --dump-config, so that a dumped config without
  // --profile loads again).
  std::optional<std::string> profile_steps;
  CLI::App* soup = nullptr;        // the soup subcommand (kalm-train only)
  SoupOptions soup_options;
};

// Adds the flags. distill: kalm-distill's set (no --stage, no soup; the
// distillation flags).
void add_train_flags(cli::Tool& tool, TrainFlags& flags, bool distill);

// Resolves the string flags (and the launcher's environment: dist.h
// resolve_dist) into options and runs training (or the soup).
// Returns the process exit code for a clean finish (0) or a signal stop
// (128 + N). Throws kalm::Error subclasses otherwise.
int run_train_command(TrainFlags& flags, const cli::Tool& tool, bool distill);

}  // namespace kalm::train
