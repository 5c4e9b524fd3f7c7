#include "kalm/io/json_writer.h"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

#include "kalm/error.h"

namespace kalm::io {
namespace {

constexpr char kHex[] = "0123456789abcdef";

// Escapes bytes already known to be valid UTF-8 (or meant as Latin-1 code points
// when `latin1`), without the quotes.
void append_escaped(std::string& out, std::string_view s, bool latin1) {
  std::size_t start = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    bool plain = c >= 0x20 && c != '"' && c != '\\' && (!latin1 || c < 0x80);
    if (plain) continue;
    out.append(s.data() + start, i - start);
    start = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: {
        char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
        out.append(esc, 6);
      }
    }
  }
  out.append(s.data() + start, s.size() - start);
}

void append_key(std::string& out, std::string_view key) {
  append_json_string(out, key);
  out.push_back(':');
}

void append_string_array(std::string& out, const std::vector<std::string>& v) {
  out.push_back('[');
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) out.push_back(',');
    append_json_string(out, v[i]);
  }
  out.push_back(']');
}

void append_number_array(std::string& out, const std::vector<double>& v) {
  out.push_back('[');
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) out.push_back(',');
    append_json_number(out, v[i]);
  }
  out.push_back(']');
}

void append_extra(std::string& out, const RawFields& extra, bool& first) {
  for (const auto& f : extra) {
    if (!first) out.push_back(',');
    first = false;
    append_key(out, f.key);
    out += f.value;
  }
}

// Whether `s` is exactly one JSON object (whitespace around it allowed).
bool is_json_object(std::string_view s) {
  // Rejects are rare; a private parser and a padded copy keep this reentrant.
  thread_local simdjson::dom::parser parser;
  simdjson::padded_string padded(s);
  simdjson::dom::element root;
  if (parser.parse(padded).get(root)) return false;
  return root.type() == simdjson::dom::element_type::OBJECT;
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  if (!simdjson::validate_utf8(s.data(), s.size())) {
    std::string shown;
    append_escaped(shown, s.substr(0, 40), /*latin1=*/true);
    throw FormatError("cannot write a JSON string that is not valid UTF-8: \"" + shown +
                      (s.size() > 40 ? "...\"" : "\""));
  }
  out.push_back('"');
  append_escaped(out, s, /*latin1=*/false);
  out.push_back('"');
}

void append_json_number(std::string& out, double v) {
  if (!std::isfinite(v))
    throw FormatError("cannot write " + std::to_string(v) + " as JSON (not a finite number)");
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  // The shortest form of a large double may be a long integer literal
  // (1.0888888888888888e20 -> "108888888888888800000"): valid JSON, but past
  // 64 bits simdjson, and so kalm's own readers, refuse integers. Those values
  // get the shortest exponent form instead, which every reader takes as a double.
  if (std::fabs(v) >= 1e18 && std::find_if(buf, res.ptr, [](char c) { return c == '.' || c == 'e'; }) == res.ptr)
    res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  out.append(buf, static_cast<std::size_t>(res.ptr - buf));
}

void append_json(std::string& out, const TrainingGroup& r) {
  if (!r.pos_scores.empty() && r.pos_scores.size() != r.pos.size())
    throw FormatError("cannot write a training group with " + std::to_string(r.pos_scores.size()) +
                      " pos_scores for " + std::to_string(r.pos.size()) + " pos");
  if (!r.neg_scores.empty() && r.neg_scores.size() != r.neg.size())
    throw FormatError("cannot write a training group with " + std::to_string(r.neg_scores.size()) +
                      " neg_scores for " + std::to_string(r.neg.size()) + " neg");
  out += "{\"query\":";
  append_json_string(out, r.query);
  out += ",\"pos\":";
  append_string_array(out, r.pos);
  out += ",\"neg\":";
  append_string_array(out, r.neg);
  if (!r.pos_scores.empty()) {
    out += ",\"pos_scores\":";
    append_number_array(out, r.pos_scores);
  }
  if (!r.neg_scores.empty()) {
    out += ",\"neg_scores\":";
    append_number_array(out, r.neg_scores);
  }
  if (r.task) {
    out += ",\"task\":";
    append_json_string(out, *r.task);
  }
  if (r.instruction) {
    out += ",\"instruction\":";
    append_json_string(out, *r.instruction);
  }
  if (r.type) {
    out += ",\"type\":";
    append_json_string(out, task_type_name(*r.type));
  }
  bool first = false;
  append_extra(out, r.extra, first);
  out.push_back('}');
}

void append_json(std::string& out, const CorpusRecord& r) {
  out.push_back('{');
  bool first = true;
  if (r.has_id) {
    out += "\"id\":";
    append_json_string(out, r.id);
    first = false;
  }
  if (!first) out.push_back(',');
  first = false;
  if (r.has_text) {
    out += "\"text\":";
    append_json_string(out, r.text);
  } else {
    out += "\"input_ids\":[";
    char buf[24];
    for (std::size_t i = 0; i < r.input_ids.size(); ++i) {
      if (i) out.push_back(',');
      auto res = std::to_chars(buf, buf + sizeof buf, r.input_ids[i]);
      out.append(buf, static_cast<std::size_t>(res.ptr - buf));
    }
    out.push_back(']');
  }
  append_extra(out, r.extra, first);
  out.push_back('}');
}

void append_json(std::string& out, const RawFields& record) {
  out.push_back('{');
  bool first = true;
  append_extra(out, record, first);
  out.push_back('}');
}

void append_reject(std::string& out, std::string_view raw_record, std::string_view stage,
                   std::string_view reason, const RawFields& extra) {
  std::string info = "\"_reject\":{\"stage\":";
  append_json_string(info, stage);
  info += ",\"reason\":";
  append_json_string(info, reason);
  bool first = false;
  append_extra(info, extra, first);
  info.push_back('}');

  std::string_view s = raw_record;
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  if (is_json_object(s)) {
    std::string_view body = s.substr(1, s.size() - 2);  // between the braces
    bool empty = true;
    for (char c : body) empty = empty && is_space(c);
    out.append(s.data(), s.size() - 1);  // everything but the closing brace
    if (!empty) out.push_back(',');
    out += info;
    out.push_back('}');
    return;
  }
  bool utf8 = simdjson::validate_utf8(raw_record.data(), raw_record.size());
  out += utf8 ? "{\"_raw\":\"" : "{\"_raw_latin1\":\"";
  append_escaped(out, raw_record, /*latin1=*/!utf8);
  out += "\",";
  out += info;
  out.push_back('}');
}

// ---------------------------------------------------------------------------
// JsonlWriter

JsonlWriter::JsonlWriter(std::string path, OutputOptions options)
    : out_(std::move(path), options) {}

JsonlWriter::~JsonlWriter() = default;

void JsonlWriter::emit() {
  line_.push_back('\n');
  out_.write(line_);
  ++records_;
}

void JsonlWriter::write(const TrainingGroup& record) {
  line_.clear();
  append_json(line_, record);
  emit();
}

void JsonlWriter::write(const CorpusRecord& record) {
  line_.clear();
  append_json(line_, record);
  emit();
}

void JsonlWriter::write(const RawFields& record) {
  line_.clear();
  append_json(line_, record);
  emit();
}

void JsonlWriter::write_line(std::string_view json_object) {
  KALM_ASSERT(std::memchr(json_object.data(), '\n', json_object.size()) == nullptr,
              "a JSON Lines record cannot contain a newline");
  line_.assign(json_object.data(), json_object.size());
  emit();
}

void JsonlWriter::write_reject(std::string_view raw_record, std::string_view stage,
                               std::string_view reason, const RawFields& extra) {
  line_.clear();
  append_reject(line_, raw_record, stage, reason, extra);
  emit();
}

void JsonlWriter::finish() { out_.finish(); }

}  // namespace kalm::io
