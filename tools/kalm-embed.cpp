// kalm-embed: batch embedding of corpora with a Hugging Face checkpoint.
#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/encode/embed_command.h"

int main(int argc, char** argv) {
  kalm::cli::Tool tool("kalm-embed",
                       "Embed texts with a Hugging Face checkpoint (Qwen2 or Gemma3) and write the embeddings "
                       "(safetensors, npy or JSONL) in input order, or write token ids (--output-format tokens).");
  kalm::encode::EmbedOptions options;
  kalm::encode::add_embed_flags(tool, options);
  return tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    kalm::encode::run_embed(options, tool);
  });
}
