#include "kalm/core/launcher.h"

#include <cstdlib>
#include <exception>

#include "kalm/error.h"

namespace kalm::core {
namespace {

std::optional<int> env_int(const EnvLookup& env, const char* name) {
  const char* value = env(name);
  if (!value) return std::nullopt;
  const std::string text(value);
  long long v = 0;
  bool ok = false;
  try {
    std::size_t used = 0;
    v = std::stoll(text, &used);
    ok = used == text.size();
  } catch (const std::exception&) {
  }
  if (!ok) throw UsageError(std::string("environment variable ") + name + "='" + text + "' is not an integer");
  if (v < 0 || v > 1000000) throw UsageError(std::string(name) + " out of range: " + std::to_string(v));
  return static_cast<int>(v);
}

}  // namespace

LaunchEnvironment read_launch_environment(const EnvLookup& env) {
  LaunchEnvironment l;
  // A pair is taken whole so that a stray half of one never mixes with the other.
  if (env("RANK") || env("WORLD_SIZE")) {
    l.rank = env_int(env, "RANK");
    l.world_size = env_int(env, "WORLD_SIZE");
    if (!l.rank || !l.world_size)
      throw UsageError(std::string("the environment sets ") + (l.rank ? "RANK" : "WORLD_SIZE") + " but not " +
                       (l.rank ? "WORLD_SIZE" : "RANK") + " (a launcher sets both)");
    l.source = "RANK/WORLD_SIZE";
    l.rank_name = "RANK";
    l.world_name = "WORLD_SIZE";
  } else if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
    l.rank = env_int(env, "SLURM_PROCID");
    l.world_size = env_int(env, "SLURM_NTASKS");
    l.source = "SLURM_PROCID/SLURM_NTASKS";
    l.rank_name = "SLURM_PROCID";
    l.world_name = "SLURM_NTASKS";
  }
  if (auto lr = env_int(env, "LOCAL_RANK")) {
    l.local_rank = lr;
  } else if (auto sl = env_int(env, "SLURM_LOCALID")) {
    l.local_rank = sl;
  }
  return l;
}

const char* process_env(const char* name) { return std::getenv(name); }

}  // namespace kalm::core
