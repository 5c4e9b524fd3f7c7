#pragma once
// Process-wide compute settings for tools that use LibTorch: --threads sets
// LibTorch's intra-op pool and OpenMP; --seed seeds LibTorch's generators.
// Call once, at the start of a tool's body, before any tensor work.

#include "kalm/cli/tool.h"

namespace kalm::core {

void configure_runtime(const cli::CommonOptions& common);

// Turns on flush-to-zero and denormals-are-zero for float arithmetic on the
// CPU: on this thread, on LibTorch's intra-op threads and on kalm's OpenMP
// threads; threads started afterwards inherit it from this one. Training
// needs it: Adam's first moment of an embedding row whose token is absent
// decays by beta1 every step and becomes subnormal after ~750 steps, and an
// Intel core takes a microcode assist on every subnormal operand (the
// default experiment's pre-training ran 3x slower by its second epoch on an
// Intel Xeon; AMD cores barely notice). Values below 1.2e-38 become 0.
// Returns false where the CPU has no such mode (nothing changes then).
// on = false restores IEEE subnormals the same way.
bool set_flush_denormals(bool on);

}  // namespace kalm::core
