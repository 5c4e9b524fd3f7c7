#include "kalm/cli/tool.h"

#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <sstream>
#include <thread>

#include "kalm/error.h"
#include "kalm/version.h"

namespace kalm::cli {

int available_cores() {
  // The CPUs this process may run on (what nproc prints): a container or
  // taskset limits them below the machine's total.
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int CommonOptions::resolved_threads() const {
  if (threads && *threads > 0) return *threads;
  return available_cores();
}

const CLI::Validator& positive_number() {
  static const CLI::Validator v(
      [](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return "must be a number, not '" + text + "'";
        if (!(value > 0)) return "must be positive, not " + text;
        return {};
      },
      "POSITIVE");
  return v;
}

const CLI::Validator& non_negative_number() {
  static const CLI::Validator v(
      [](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return "must be a number, not '" + text + "'";
        if (!(value >= 0)) return "must be 0 or more, not " + text;
        return {};
      },
      "NONNEGATIVE");
  return v;
}

void apply_thread_count(int threads) { omp_set_num_threads(threads); }

std::string quote_command_line(int argc, char** argv) {
  std::string out;
  for (int i = 0; i < argc; ++i) {
    if (i) out += ' ';
    std::string arg = argv[i];
    bool plain = !arg.empty() &&
                 arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                       "0123456789-_./=:,+@%") == std::string::npos;
    if (plain) {
      out += arg;
    } else {
      out += '\'';
      for (char c : arg) {
        if (c == '\'') out += "'\\''";
        else out += c;
      }
      out += '\'';
    }
  }
  return out;
}

namespace {

bool is_bare_toml_value(const std::string& v) {
  if (v == "true" || v == "false") return true;
  if (v.empty()) return false;
  char* end = nullptr;
  std::strtod(v.c_str(), &end);
  return end && *end == '\0';
}

// One `key=value` line, or a comment when CLI11's reader could not read it back.
void dump_value(std::ostringstream& os, const std::string& key, const std::vector<std::string>& values,
                bool multi) {
  for (const auto& v : values) {
    if (v.find_first_of("\"\n\r") != std::string::npos) {
      os << "# " << key << ": a value with quotes or line breaks; give it on the command line\n";
      return;
    }
  }
  auto quoted = [](const std::string& v) { return is_bare_toml_value(v) ? v : "\"" + v + "\""; };
  os << key << '=';
  if (multi) {
    os << '[';
    for (std::size_t i = 0; i < values.size(); ++i) os << (i ? "," : "") << quoted(values[i]);
    os << ']';
  } else {
    os << quoted(values.empty() ? std::string() : values.front());
  }
  os << '\n';
}

}  // namespace

std::string dump_config(const CLI::App& app) {
  // CLI11's own config_to_str writes `false` for unset negatable flags and ""
  // for unset optional numbers, neither of which reads back as the default.
  // Here an option appears only with a value it was given or a known default;
  // anything left out keeps its default when the file is read back.
  std::ostringstream os;
  for (const CLI::Option* opt : app.get_options()) {
    if (!opt->get_configurable()) continue;
    std::string key = !opt->get_lnames().empty() ? opt->get_lnames().front() : opt->get_name(false, true);
    if (key.empty() || key == "help" || key == "config") continue;
    const bool flag = opt->get_expected_min() == 0;
    const bool multi = opt->get_expected_max() > 1;
    if (opt->count() > 0) {
      if (flag) dump_value(os, key, {opt->as<std::string>()}, false);
      else dump_value(os, key, opt->results(), multi);
    } else if (!flag && !opt->get_default_str().empty()) {
      dump_value(os, key, {opt->get_default_str()}, false);
    }
  }
  return os.str();
}

std::string Tool::version_text(const std::string& tool_name) {
  std::ostringstream os;
  os << tool_name << " (kalm) " << kVersion << " (git " << kGitRevision << ")\n"
     << "built with LibTorch " << kTorchVersion << "\n";
  return os.str();
}

Tool::Tool(std::string name, std::string description)
    : name_(std::move(name)), app_(std::move(description), name_) {
  app_.option_defaults()->always_capture_default(true);
  app_.get_formatter()->column_width(34);
  app_.set_help_flag("-h,--help", "Print this help and exit");

  app_.add_flag("--version", show_version_, "Print version (kalm, git revision, LibTorch) and exit")
      ->configurable(false)
      ->group(kGroupCommon);
  app_.add_option("--threads", common_.threads,
                  "Worker threads for LibTorch and OpenMP (default: all cores)")
      ->check(positive_number())
      ->group(kGroupCommon);
  app_.add_option("--seed", common_.seed, "Seed for every random choice")->group(kGroupCommon);
  app_.add_flag("-q,--quiet", common_.quiet, "No progress bar and no summary line")
      ->group(kGroupCommon);
  app_.set_config("--config", "", "Read options from a TOML/INI file (keys = long flag names)")
      ->group(kGroupCommon);
  app_.add_flag("--dump-config", dump_config_,
                "Print the resolved configuration (usable with --config) and exit")
      ->configurable(false)
      ->group(kGroupCommon);
}

int Tool::run(int argc, char** argv, const std::function<void()>& body) {
  command_line_ = quote_command_line(argc, argv);
  try {
    try {
      app_.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      // CLI11's own exit codes start at 100; map them onto 0 (help) and 2 (usage).
      if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
        app_.exit(e);  // prints --help
        return 0;
      }
      std::cerr << name_ << ": error: " << e.what() << "\n"
                << "Run '" << name_ << " --help' for usage.\n";
      return 2;
    }
    if (show_version_) {
      std::cout << version_text(name_);
      return 0;
    }
    if (dump_config_) {
      std::cout << dump_config(app_);
      return 0;
    }
    // More threads than CPUs makes LibTorch's and OpenMP's pools fight over
    // them: many times slower, never faster.
    if (common_.threads && *common_.threads > available_cores())
      throw UsageError("--threads " + std::to_string(*common_.threads) + " is more than the " +
                       std::to_string(available_cores()) +
                       " CPUs this process may use (nproc); more threads than CPUs only slow kalm down");
    apply_thread_count(common_.resolved_threads());
    body();
    std::cout.flush();
    if (!std::cout) throw IoError("<stdout>: write failed");
    return 0;
  } catch (const UsageError& e) {
    std::cerr << name_ << ": error: " << e.what() << "\n";
    return 2;
  } catch (const CLI::ParseError& e) {  // raised by a body's late validation
    std::cerr << name_ << ": error: " << e.what() << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    std::cerr << name_ << ": error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << name_ << ": error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace kalm::cli
