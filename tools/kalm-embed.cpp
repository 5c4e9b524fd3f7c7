// kalm-embed: Embed texts with a Hugging Face checkpoint (Qwen2 or Gemma3) and write the embeddings.
// Until this tool's own work lands it offers only the shared flags
// (--help, --version, --threads, --seed, --quiet, --config, --dump-config).
#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/error.h"

int main(int argc, char** argv) {
  kalm::cli::Tool tool("kalm-embed", "Embed texts with a Hugging Face checkpoint (Qwen2 or Gemma3) and write the embeddings.");
  return tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    throw kalm::Error("embedding is not implemented in this version of kalm yet (see README, Status)");
  });
}
