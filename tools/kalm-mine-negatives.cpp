// kalm-mine-negatives: hard-negative mining with ranking-consistency filtering.
#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/mine/mine_command.h"

int main(int argc, char** argv) {
  kalm::cli::Tool tool("kalm-mine-negatives",
                       "Mine hard negatives for training groups: embed queries (with their instruction) and a "
                       "candidate pool, exact top-k search, sample negatives from a rank window, positive-aware, "
                       "with KaLM's ranking-consistency filter; or build groups from labelled texts (--from-labels).");
  kalm::mine::MineOptions options;
  kalm::mine::add_mine_flags(tool, options);
  return tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    kalm::mine::run_mine(options, tool);
  });
}
