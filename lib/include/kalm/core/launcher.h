#pragma once
// The process's place in a multi-process launch, as launchers announce it in
// the environment: torchrun's RANK/WORLD_SIZE (taken first, and only as a
// pair), else Slurm's SLURM_PROCID/SLURM_NTASKS; LOCAL_RANK or SLURM_LOCALID
// for the rank on its node. Used by kalm-train's data parallelism and
// kalm-embed's multi-process embedding.
// Thread safety: a pure function of `env`.

#include <functional>
#include <optional>
#include <string>

namespace kalm::core {

using EnvLookup = std::function<const char*(const char*)>;

struct LaunchEnvironment {
  std::optional<int> rank;         // unset when no launcher pair is set
  std::optional<int> world_size;
  std::optional<int> local_rank;
  std::string source;              // "RANK/WORLD_SIZE", "SLURM_PROCID/SLURM_NTASKS" or ""
  std::string rank_name, world_name;  // the variables read, for messages
};

// Throws UsageError naming the variable when one is not an integer, out of
// 0..1,000,000, or when only half of torchrun's pair is set.
LaunchEnvironment read_launch_environment(const EnvLookup& env);

// std::getenv as an EnvLookup.
const char* process_env(const char* name);

}  // namespace kalm::core
