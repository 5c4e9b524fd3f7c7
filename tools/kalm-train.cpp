// kalm-train: contrastive pre-training and fine-tuning with the KaLM recipe,
// and `kalm-train soup` (checkpoint averaging). The work is in kalm::train.
#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/train/train_command.h"

int main(int argc, char** argv) {
  // Before any thread exists, so every thread inherits the mask: the loop polls
  // SIGINT/SIGTERM at step boundaries and checkpoints (see trainer.h).
  kalm::train::block_stop_signals();
  kalm::cli::Tool tool("kalm-train",
                       "Train a text-embedding model with the KaLM recipe: contrastive pre-training (--stage pretrain) "
                       "and fine-tuning (hard negatives, focal reweighting, hard-negative mixing, Matryoshka), with "
                       "GradCache, checkpoints and exact resume. 'kalm-train soup' averages checkpoints.");
  kalm::train::TrainFlags flags;
  kalm::train::add_train_flags(tool, flags, /*distill=*/false);
  int status = 0;
  const int rc = tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    status = kalm::train::run_train_command(flags, tool, /*distill=*/false);
  });
  return rc != 0 ? rc : status;
}
