#include "kalm/io/records.h"

#include <array>

namespace kalm::io {
namespace {

struct TaskTypeName {
  TaskType type;
  std::string_view name;
};
constexpr std::array<TaskTypeName, 7> kTaskTypeNames = {{
    {TaskType::kRetrieval, "retrieval"},
    {TaskType::kSts, "sts"},
    {TaskType::kClassification, "classification"},
    {TaskType::kClustering, "clustering"},
    {TaskType::kReranking, "reranking"},
    {TaskType::kPair, "pair"},
    {TaskType::kBitext, "bitext"},
}};

}  // namespace

std::string_view task_type_name(TaskType type) {
  for (const auto& t : kTaskTypeNames)
    if (t.type == type) return t.name;
  return "unknown";
}

std::optional<TaskType> parse_task_type(std::string_view name) {
  for (const auto& t : kTaskTypeNames)
    if (t.name == name) return t.type;
  return std::nullopt;
}

const std::string* RawFields::find(std::string_view key) const {
  for (std::size_t i = 0; i < size_; ++i)
    if (fields_[i].key == key) return &fields_[i].value;
  return nullptr;
}

void RawFields::add(std::string_view key, std::string_view raw_json_value) {
  if (size_ == fields_.size()) fields_.emplace_back();
  Field& f = fields_[size_++];
  f.key.assign(key.data(), key.size());
  f.value.assign(raw_json_value.data(), raw_json_value.size());
}

void RawFields::set(std::string_view key, std::string_view raw_json_value) {
  for (std::size_t i = 0; i < size_; ++i) {
    if (fields_[i].key == key) {
      fields_[i].value.assign(raw_json_value.data(), raw_json_value.size());
      return;
    }
  }
  add(key, raw_json_value);
}

bool RawFields::erase(std::string_view key) {
  std::size_t kept = 0;
  for (std::size_t i = 0; i < size_; ++i) {
    if (fields_[i].key == key) continue;
    if (kept != i) std::swap(fields_[kept], fields_[i]);
    ++kept;
  }
  bool erased = kept != size_;
  size_ = kept;
  return erased;
}

}  // namespace kalm::io
