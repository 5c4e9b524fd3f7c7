#pragma once
// Process-wide compute settings for tools that use LibTorch: --threads sets
// LibTorch's intra-op pool and OpenMP; --seed seeds LibTorch's generators.
// Call once, at the start of a tool's body, before any tensor work.

#include "kalm/cli/tool.h"

namespace kalm::core {

void configure_runtime(const cli::CommonOptions& common);

}  // namespace kalm::core
