#pragma once
// Typed views of the JSON Lines records in conventions.md ("Record schemas").
//
// TrainingGroup  {"query": str, "pos": [str], "neg": [str]?, "pos_scores": [num]?,
//                 "neg_scores": [num]?, "task": str?, "instruction": str?, "type": str?}
// CorpusRecord   {"id": str|int?, "text": str} or {"id": ..., "input_ids": [int]}
// Rejects        the input record unchanged plus "_reject": {"stage", "reason", ...}
//
// Fields the schema does not know are kept as raw JSON text in `extra`, in input
// order, so a record read, modified and written again keeps them byte for byte.
// Known fields are written back in canonical form and canonical order (the order
// above), followed by `extra`.
//
// Reading is JsonlReader's job (jsonl.h), writing JsonlWriter's (json_writer.h).
// These are plain values: copy, move and reuse them freely. A reader overwrites
// every field of the record it fills and keeps the string capacity for reuse.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kalm::io {

// Fields of a JSON object as raw text: key unescaped, value as it appeared in the
// input (valid JSON, validated by the reader). clear() keeps the strings' capacity.
class RawFields {
 public:
  struct Field {
    std::string key;    // unescaped UTF-8
    std::string value;  // raw JSON text of the value, e.g. `[1, 2]`, `"a\"b"`, `null`
  };

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const Field& operator[](std::size_t i) const { return fields_[i]; }
  const Field* begin() const { return fields_.data(); }
  const Field* end() const { return fields_.data() + size_; }

  // Raw value of the first field named `key`, or nullptr.
  const std::string* find(std::string_view key) const;
  // Appends a field. `raw_json_value` must be valid JSON text; it is not checked
  // here (the writer copies it verbatim).
  void add(std::string_view key, std::string_view raw_json_value);
  // Replaces the first field named `key`, or appends it.
  void set(std::string_view key, std::string_view raw_json_value);
  // Removes every field named `key`; returns whether one was there.
  bool erase(std::string_view key);
  void clear() { size_ = 0; }

 private:
  std::vector<Field> fields_;  // [0, size_) are live; the rest keep capacity
  std::size_t size_ = 0;
};

// The `type` of a training group: decides the in-batch-negative policy.
enum class TaskType { kRetrieval, kSts, kClassification, kClustering, kReranking, kPair, kBitext };

// "retrieval", "sts", ... as written in the data.
std::string_view task_type_name(TaskType type);
// The inverse; nullopt for an unknown name (names are lower case, exact).
std::optional<TaskType> parse_task_type(std::string_view name);

struct TrainingGroup {
  std::string query;                  // required
  std::vector<std::string> pos;       // required, at least one
  std::vector<std::string> neg;       // optional in the input; empty when absent
  std::vector<double> pos_scores;     // empty when absent, else one per pos
  std::vector<double> neg_scores;     // empty when absent, else one per neg
  std::optional<std::string> task;         // dataset name for task-homogeneous batches
  std::optional<std::string> instruction;  // overrides the task instruction
  std::optional<TaskType> type;
  RawFields extra;                    // unknown fields, raw, in input order
};

struct CorpusRecord {
  std::string id;                     // a JSON integer id is kept as its digits
  bool has_id = false;
  std::string text;                   // when has_text
  std::vector<std::int64_t> input_ids;  // when !has_text (pre-tokenised input)
  bool has_text = true;
  RawFields extra;                    // unknown fields, raw, in input order
};

}  // namespace kalm::io
