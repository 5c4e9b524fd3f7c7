// kalm-eval: Evaluate embeddings MTEB-style: retrieval, STS, classification, clustering, pair classification, reranking, bitext mining.
// Until this tool's own work lands it offers only the shared flags
// (--help, --version, --threads, --seed, --quiet, --config, --dump-config).
#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/error.h"

int main(int argc, char** argv) {
  kalm::cli::Tool tool("kalm-eval", "Evaluate embeddings MTEB-style: retrieval, STS, classification, clustering, pair classification, reranking, bitext mining.");
  return tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    throw kalm::Error("evaluation is not implemented in this version of kalm yet (see README, Status)");
  });
}
