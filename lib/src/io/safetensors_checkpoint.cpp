// Hugging Face model directories: model.safetensors or an index over shards.
#include <simdjson.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <unordered_set>

#include "kalm/error.h"
#include "kalm/io/safetensors.h"

namespace kalm::io {
namespace {

namespace fs = std::filesystem;

std::string quote_name(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

bool is_regular_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Shard names come from a file that may not be ours: keep them inside the
// model directory.
bool is_safe_shard_name(std::string_view name) {
  if (name.empty() || name.front() == '/') return false;
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t slash = name.find('/', start);
    if (slash == std::string_view::npos) slash = name.size();
    std::string_view part = name.substr(start, slash - start);
    if (part.empty() || part == "..") return false;
    start = slash + 1;
  }
  return true;
}

std::string shard_file_name(std::size_t index, std::size_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buf;
}

// model-<digits>-of-<digits>.safetensors, the names transformers gives shards.
bool looks_like_shard_name(std::string_view name) {
  constexpr std::string_view kPrefix = "model-", kMid = "-of-", kSuffix = ".safetensors";
  if (name.substr(0, kPrefix.size()) != kPrefix || !ends_with(name, kSuffix)) return false;
  std::string_view rest =
      name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
  std::size_t mid = rest.find(kMid);
  if (mid == std::string_view::npos) return false;
  auto all_digits = [](std::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  return all_digits(rest.substr(0, mid)) && all_digits(rest.substr(mid + kMid.size()));
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (u < 0x20) {
      out += "\\u00";
      out += kHex[u >> 4];
      out += kHex[u & 0xF];
    } else {
      out += c;
    }
  }
  out += '"';
}

void remove_quietly(const std::string& path) {
  std::error_code ec;
  fs::remove(path, ec);  // best effort: the new checkpoint is already complete
}

}  // namespace

// ---- CheckpointReader ----------------------------------------------------------

CheckpointReader CheckpointReader::open(const std::string& path) {
  CheckpointReader reader;
  reader.path_ = path;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st))
    throw ModelError(display_name(path) + ": no such model directory or weights file");

  std::string single, index_path;
  std::string dir = path;
  if (fs::is_directory(st)) {
    if (is_regular_file(join_path(path, kSingleWeightsName)))
      single = join_path(path, kSingleWeightsName);
    else if (is_regular_file(join_path(path, kWeightsIndexName)))
      index_path = join_path(path, kWeightsIndexName);
    else
      throw ModelError(display_name(path) + ": no " + kSingleWeightsName + " or " +
                       kWeightsIndexName + " in the model directory");
  } else if (ends_with(path, ".json")) {
    index_path = path;
    dir = fs::path(path).parent_path().string();
  } else {
    single = path;
  }

  if (!single.empty()) {
    reader.files_.push_back(SafetensorsFile::open(single));
    const auto& tensors = reader.files_[0].tensors();
    for (std::size_t i = 0; i < tensors.size(); ++i)
      reader.index_.emplace(tensors[i].name, Location{0, i});
    return reader;
  }

  reader.sharded_ = true;
  const std::string index_name = display_name(index_path);
  auto bytes = MappedFile::open(index_path);
  if (bytes->size() == 0) throw FormatError(index_name + ": empty file, expected a JSON object");
  simdjson::dom::parser parser;
  simdjson::padded_string json(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  simdjson::dom::element root;
  if (auto err = parser.parse(json).get(root))
    throw FormatError(index_name + ": not valid JSON: " + simdjson::error_message(err));
  simdjson::dom::object root_object;
  if (root.get(root_object) != simdjson::SUCCESS)
    throw FormatError(index_name + ": must be a JSON object");
  std::unordered_set<std::string_view> root_keys;
  std::optional<simdjson::dom::object> weight_map;
  for (auto field : root_object) {
    if (!root_keys.insert(field.key).second)
      throw FormatError(index_name + ": key " + quote_name(field.key) + " appears twice");
    if (field.key == "weight_map") {
      simdjson::dom::object obj;
      if (field.value.get(obj) != simdjson::SUCCESS)
        throw FormatError(index_name + ": 'weight_map' must be an object");
      weight_map = obj;
    }
  }
  if (!weight_map) throw FormatError(index_name + ": missing 'weight_map'");

  std::map<std::string, std::string, std::less<>> listed;  // tensor -> shard
  std::vector<std::string> shards;
  for (auto field : *weight_map) {
    std::string_view shard;
    if (field.value.get(shard) != simdjson::SUCCESS)
      throw FormatError(index_name + ": weight_map entry for tensor " + quote_name(field.key) +
                        " must be a file name string");
    if (!is_safe_shard_name(shard))
      throw FormatError(index_name + ": weight_map entry for tensor " + quote_name(field.key) +
                        ": shard name " + quote_name(shard) +
                        " must be a relative path inside the model directory");
    if (!listed.emplace(std::string(field.key), std::string(shard)).second)
      throw FormatError(index_name + ": tensor " + quote_name(field.key) +
                        " appears twice in weight_map");
    shards.emplace_back(shard);
  }
  std::sort(shards.begin(), shards.end());
  shards.erase(std::unique(shards.begin(), shards.end()), shards.end());

  std::vector<std::string> shard_of_file;
  for (const std::string& shard : shards) {
    const std::string shard_path = join_path(dir, shard);
    if (!is_regular_file(shard_path)) {
      auto it = std::find_if(listed.begin(), listed.end(),
                             [&](const auto& kv) { return kv.second == shard; });
      throw ModelError(index_name + ": shard " + quote_name(shard) + " (listed for tensor " +
                       quote_name(it->first) + ") is missing");
    }
    const std::size_t file_index = reader.files_.size();
    reader.files_.push_back(SafetensorsFile::open(shard_path));
    shard_of_file.push_back(shard);
    const auto& tensors = reader.files_.back().tensors();
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      auto [it, inserted] = reader.index_.emplace(tensors[i].name, Location{file_index, i});
      if (!inserted)
        throw ModelError(display_name(dir.empty() ? "." : dir) + ": tensor " +
                         quote_name(tensors[i].name) + " is in two shards: " +
                         quote_name(shard_of_file[it->second.file]) + " and " + quote_name(shard));
    }
  }
  for (const auto& [name, shard] : listed) {
    auto it = reader.index_.find(name);
    if (it == reader.index_.end())
      throw ModelError(index_name + ": tensor " + quote_name(name) + " is listed for shard " +
                       quote_name(shard) + " but is not in it");
    if (shard_of_file[it->second.file] != shard)
      throw ModelError(index_name + ": tensor " + quote_name(name) + " is listed for shard " +
                       quote_name(shard) + " but is in shard " +
                       quote_name(shard_of_file[it->second.file]));
  }
  return reader;
}

bool CheckpointReader::contains(std::string_view name) const {
  return index_.find(name) != index_.end();
}

const TensorInfo& CheckpointReader::info(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end())
    throw ModelError(display_name(path_) + ": no tensor named " + quote_name(name) +
                     " in the checkpoint");
  return files_[it->second.file].tensors()[it->second.tensor];
}

const SafetensorsFile& CheckpointReader::file_of(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end())
    throw ModelError(display_name(path_) + ": no tensor named " + quote_name(name) +
                     " in the checkpoint");
  return files_[it->second.file];
}

const std::uint8_t* CheckpointReader::data(std::string_view name) const {
  return file_of(name).data(info(name));
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& kv : index_) out.push_back(kv.first);
  return out;
}

std::uint64_t CheckpointReader::total_size() const {
  std::uint64_t total = 0;
  for (const auto& kv : index_)
    total += files_[kv.second.file].tensors()[kv.second.tensor].nbytes();
  return total;
}

// ---- write_checkpoint ------------------------------------------------------------

std::vector<std::string> write_checkpoint(const std::string& dir, const SafetensorsWriter& tensors,
                                          std::uint64_t max_shard_bytes) {
  if (max_shard_bytes == 0) throw UsageError("max shard size must be positive");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw IoError(display_name(dir) + ": cannot create model directory" +
                  (ec ? ": " + ec.message() : std::string()));

  // transformers' rule: fill shards in order; a tensor that would overflow the
  // current shard starts a new one; an oversized tensor sits alone.
  std::vector<std::vector<const SafetensorsWriter::Entry*>> plan(1);
  std::uint64_t current = 0;
  for (const auto& e : tensors.entries()) {
    if (!plan.back().empty() && current + e.size > max_shard_bytes) {
      plan.emplace_back();
      current = 0;
    }
    plan.back().push_back(&e);
    current += e.size;
  }

  // transformers refuses a file whose metadata lacks "format".
  std::map<std::string, std::string> metadata = tensors.metadata();
  metadata.emplace("format", "pt");

  std::vector<std::string> written;
  std::vector<std::unique_ptr<AtomicOutputFile>> outputs;
  if (plan.size() == 1) {
    SafetensorsWriter single;
    for (const auto* e : plan[0]) single.add(e->name, e->dtype, e->shape, e->data, e->size);
    single.set_metadata(metadata);
    outputs.push_back(std::make_unique<AtomicOutputFile>(join_path(dir, kSingleWeightsName)));
    single.write_to(*outputs.back());
    written.push_back(kSingleWeightsName);
  } else {
    std::map<std::string, std::string> weight_map;
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < plan.size(); ++i) {
      const std::string name = shard_file_name(i, plan.size());
      SafetensorsWriter shard;
      for (const auto* e : plan[i]) {
        shard.add(e->name, e->dtype, e->shape, e->data, e->size);
        weight_map[e->name] = name;
        total += e->size;
      }
      shard.set_metadata(metadata);
      outputs.push_back(std::make_unique<AtomicOutputFile>(join_path(dir, name)));
      shard.write_to(*outputs.back());
      written.push_back(name);
    }
    // The layout of transformers' json.dumps(indent=2, sort_keys=True).
    std::string index = "{\n  \"metadata\": {\n    \"total_size\": " + std::to_string(total) +
                        "\n  },\n  \"weight_map\": {\n";
    std::size_t k = 0;
    for (const auto& [tensor, shard] : weight_map) {
      index += "    ";
      append_json_string(index, tensor);
      index += ": ";
      append_json_string(index, shard);
      index += ++k < weight_map.size() ? ",\n" : "\n";
    }
    index += "  }\n}\n";
    outputs.push_back(std::make_unique<AtomicOutputFile>(join_path(dir, kWeightsIndexName)));
    outputs.back()->write(index.data(), index.size());
    written.push_back(kWeightsIndexName);
  }
  // Everything is on disk in temporaries; only now does anything get renamed,
  // shards first and the index last, so a reader never sees an index pointing
  // at shards that are not complete.
  for (auto& out : outputs) out->commit();

  const std::unordered_set<std::string> keep(written.begin(), written.end());
  if (!keep.count(kSingleWeightsName)) remove_quietly(join_path(dir, kSingleWeightsName));
  if (!keep.count(kWeightsIndexName)) remove_quietly(join_path(dir, kWeightsIndexName));
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (looks_like_shard_name(name) && !keep.count(name)) remove_quietly(entry.path().string());
  }
  return written;
}

}  // namespace kalm::io
