// kalm-distill: kalm-train's loop with contrastive distillation from the
// teacher scores in the records (pos_scores / neg_scores) or from --teacher. See kalm::train.
#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/train/train_command.h"

int main(int argc, char** argv) {
  kalm::train::block_stop_signals();  // before any thread: see kalm-train.cpp
  kalm::cli::Tool tool("kalm-distill",
                       "Fine-tune a text-embedding model with contrastive distillation (KaLM V2.5): InfoNCE with focal "
                       "reweighting plus a KL term towards the teacher's soft labels from the records' pos_scores / neg_scores, or computed on the fly with --teacher DIR.");
  kalm::train::TrainFlags flags;
  kalm::train::add_train_flags(tool, flags, /*distill=*/true);
  int status = 0;
  const int rc = tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    status = kalm::train::run_train_command(flags, tool, /*distill=*/true);
  });
  return rc != 0 ? rc : status;
}
