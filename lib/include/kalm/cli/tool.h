#pragma once
// The shared command-line layer of every kalm tool (conventions.md "Command line").
//
// A tool declares its flags on `app()` (bound to its library options struct, so
// --help shows the struct's defaults), then calls run(): it parses argv, answers
// --help / --version / --dump-config, configures threads, runs the body and maps
// every failure onto the one error funnel:
//
//   kalm::UsageError, CLI11 parse errors    -> "kalm-<tool>: error: ..."  exit 2
//   any other kalm::Error / std::exception  -> "kalm-<tool>: error: ..."  exit 1
//   success                                 -> exit 0
//
// Shared flags, same name and default everywhere: --threads, --seed, --quiet/-q,
// --config FILE (TOML/INI mirroring the long flags), --dump-config, --version.
// Not thread-safe; one Tool per process.

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace kalm::cli {

struct CommonOptions {
  std::optional<int> threads;  // worker threads; unset = all cores
  std::uint64_t seed = 42;     // fixes every random choice of the run
  bool quiet = false;          // no progress bar, no summary line
  int resolved_threads() const;  // threads, or the number of cores
};

// The CPUs this process may run on (its affinity mask; what nproc prints).
int available_cores();

// CLI11's PositiveNumber / NonNegativeNumber with messages that read "must be
// positive, not -3" rather than printing the range up to DBL_MAX in 309 digits.
const CLI::Validator& positive_number();
const CLI::Validator& non_negative_number();

// Flag-group names, so every tool's --help reads the same.
inline constexpr const char* kGroupInput = "Input";
inline constexpr const char* kGroupOutput = "Output";
inline constexpr const char* kGroupModel = "Model";
inline constexpr const char* kGroupCompute = "Compute";
inline constexpr const char* kGroupCommon = "Common";

class Tool {
 public:
  // name: the executable name, e.g. "kalm-embed"; description: one paragraph.
  Tool(std::string name, std::string description);

  CLI::App& app() { return app_; }
  const CommonOptions& common() const { return common_; }
  const std::string& name() const { return name_; }
  // The command line as given, shell-quoted: recorded in outputs' provenance.
  const std::string& command_line() const { return command_line_; }

  // Parse, configure, run `body`, and return the process exit code.
  int run(int argc, char** argv, const std::function<void()>& body);

  // The version text printed by --version.
  static std::string version_text(const std::string& tool_name);

 private:
  std::string name_;
  CLI::App app_;
  CommonOptions common_;
  std::string command_line_;
  bool dump_config_ = false;
  bool show_version_ = false;
};

// The options of `app` as a config file that --config reads back: options given
// on the command line, and options with a known non-empty default. Unset ones
// are left out (they keep their default when read back).
std::string dump_config(const CLI::App& app);

// Shell-quote argv for logs and metadata.
std::string quote_command_line(int argc, char** argv);

// Applies --threads to OpenMP (the torch side also sets LibTorch's pool; see
// kalm/core/runtime.h). Exposed for tests.
void apply_thread_count(int threads);

}  // namespace kalm::cli
