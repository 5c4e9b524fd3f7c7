// kalm-mine-negatives: Mine hard negatives: embed queries and a candidate pool, exact top-k search, sample negatives from a rank window, positive-aware.
// Until this tool's own work lands it offers only the shared flags
// (--help, --version, --threads, --seed, --quiet, --config, --dump-config).
#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/error.h"

int main(int argc, char** argv) {
  kalm::cli::Tool tool("kalm-mine-negatives", "Mine hard negatives: embed queries and a candidate pool, exact top-k search, sample negatives from a rank window, positive-aware.");
  return tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    throw kalm::Error("hard-negative mining is not implemented in this version of kalm yet (see README, Status)");
  });
}
