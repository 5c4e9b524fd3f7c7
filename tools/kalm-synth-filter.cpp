// kalm-synth-filter: Clean synthetic or noisy training pairs: validity, deduplication and ranking-consistency filtering; every dropped record goes to a rejects stream with its reason.
// Until this tool's own work lands it offers only the shared flags
// (--help, --version, --threads, --seed, --quiet, --config, --dump-config).
#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/error.h"

int main(int argc, char** argv) {
  kalm::cli::Tool tool("kalm-synth-filter", "Clean synthetic or noisy training pairs: validity, deduplication and ranking-consistency filtering; every dropped record goes to a rejects stream with its reason.");
  return tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    throw kalm::Error("synthetic-pair filtering is not implemented in this version of kalm yet (see README, Status)");
  });
}
