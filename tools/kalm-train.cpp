// kalm-train: Train a text-embedding model with the KaLM recipe: contrastive pre-training and fine-tuning (InfoNCE, hard negatives, focal reweighting, hard-negative mixing, Matryoshka).
// Until this tool's own work lands it offers only the shared flags
// (--help, --version, --threads, --seed, --quiet, --config, --dump-config).
#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/error.h"

int main(int argc, char** argv) {
  kalm::cli::Tool tool("kalm-train", "Train a text-embedding model with the KaLM recipe: contrastive pre-training and fine-tuning (InfoNCE, hard negatives, focal reweighting, hard-negative mixing, Matryoshka).");
  return tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    throw kalm::Error("training is not implemented in this version of kalm yet (see README, Status)");
  });
}
