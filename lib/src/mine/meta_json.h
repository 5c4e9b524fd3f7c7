#pragma once
// Private to lib/src/mine: the provenance sidecar (OUTPUT.meta.json) that the
// data tools write beside a file output (conventions.md "Determinism and
// reproducibility"): a flat, pretty-printed JSON object.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kalm/cli/tool.h"
#include "kalm/io/atomic_file.h"
#include "kalm/io/json_writer.h"
#include "kalm/io/output_dir.h"
#include "kalm/version.h"

namespace kalm::mine {

class MetaJson {
 public:
  // Starts with what every sidecar records: tool, version, command line, seed.
  explicit MetaJson(const cli::Tool& tool) {
    add("tool", tool.name());
    add("kalm_version", std::string(kVersion) + " (git " + kGitRevision + ")");
    add("command", tool.command_line());
    add_raw("seed", std::to_string(tool.common().seed));
  }
  void add(const char* key, const std::string& value) {
    key_(key);
    io::append_json_string(text_, value);
  }
  void add_raw(const char* key, const std::string& raw_json) {
    key_(key);
    text_ += raw_json;
  }
  void add(const char* key, std::int64_t value) { add_raw(key, std::to_string(value)); }
  void add(const char* key, bool value) { add_raw(key, value ? "true" : "false"); }
  void add(const char* key, const std::optional<double>& value) {
    std::string s = "null";
    if (value) {
      s.clear();
      io::append_json_number(s, *value);
    }
    add_raw(key, s);
  }
  void add(const char* key, const std::optional<std::int64_t>& value) {
    add_raw(key, value ? std::to_string(*value) : "null");
  }
  void add(const char* key, const std::map<std::string, std::int64_t>& counts) {
    std::string s = "{";
    for (const auto& [name, n] : counts) {
      if (s.size() > 1) s += ", ";
      io::append_json_string(s, name);
      s += ": " + std::to_string(n);
    }
    add_raw(key, s + "}");
  }
  // The files a run with this output and rejects writes, OUTPUT.meta.json
  // included: what the run claims (io::OutputLock::files) for its whole length,
  // so that two runs to the same paths never mix one's output with the other's
  // rejects or .meta.json.
  static io::OutputLock claim_outputs(const std::string& output, const std::string& rejects, const cli::Tool& tool) {
    std::vector<std::string> paths{output, rejects};
    if (!io::writes_in_place(output)) paths.push_back(output + ".meta.json");
    return io::OutputLock::files(paths, tool.name());
  }

  // Writes OUTPUT.meta.json atomically; nothing for stdout, a device or a FIFO.
  void write_beside(const std::string& output) const {
    if (io::writes_in_place(output)) return;
    const std::string s = text_ + "\n}\n";
    io::AtomicOutputFile file(output + ".meta.json");
    file.write(s.data(), s.size());
    file.commit();
  }

 private:
  void key_(const char* key) {
    text_ += text_.size() > 1 ? ",\n  " : "\n  ";
    io::append_json_string(text_, key);
    text_ += ": ";
  }
  std::string text_ = "{";
};

}  // namespace kalm::mine
