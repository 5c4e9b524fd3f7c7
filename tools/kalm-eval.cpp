// kalm-eval: MTEB-style evaluation of an embedding model on task directories
// (retrieval, reranking, STS, pair classification, classification, clustering,
// bitext mining), of precomputed embeddings, or of a TREC run file.
#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/eval/eval_command.h"

int main(int argc, char** argv) {
  kalm::cli::Tool tool("kalm-eval",
                       "Evaluate embeddings MTEB-style: retrieval, reranking, STS, pair classification, "
                       "classification, clustering and bitext mining task directories, with a BM25 baseline and "
                       "Matryoshka widths; or score a TREC run file (--qrels, --run).");
  kalm::eval::EvalOptions options;
  kalm::eval::add_eval_flags(tool, options);
  return tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    kalm::eval::run_eval(options, tool);
  });
}
