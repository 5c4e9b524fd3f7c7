// kalm-synth-filter: quality filters for (synthetic) training data, and
// persona-based generation prompts (`kalm-synth-filter prompts`).
#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/mine/filter_command.h"

int main(int argc, char** argv) {
  kalm::cli::Tool tool("kalm-synth-filter",
                       "Filter training groups: validity, token bounds, query = positive, exact and near duplicates, "
                       "ranking consistency; every record ends in the output or in --rejects with its reason. "
                       "`kalm-synth-filter prompts` writes persona-based generation prompts.");
  kalm::mine::FilterOptions filter;
  kalm::mine::PromptOptions prompts;
  CLI::App* prompts_command = kalm::mine::add_filter_flags(tool, filter, prompts);
  return tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    if (prompts_command->parsed())
      kalm::mine::run_prompts(prompts, tool);
    else
      kalm::mine::run_filter(filter, tool);
  });
}
