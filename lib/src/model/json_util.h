#pragma once
// simdjson DOM helpers for kalm::model (internal). Accessors take `ctx`, the
// place of the object: "<file>:" at the top level, "<file>: text_config" inside;
// a field is then named "<file>: key" / "<file>: text_config.key". A value of the
// wrong type is a ModelError naming it; a syntax error is a FormatError naming
// the file.

#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kalm/error.h"

namespace kalm::model::detail {

using JsonElement = simdjson::dom::element;

// Reads `path` into `buffer` and parses it with `parser` (both must outlive
// the returned element). Throws IoError when the file cannot be read,
// FormatError "<file>: invalid JSON (...)" when it does not parse.
JsonElement load_json_file(const std::string& path, simdjson::dom::parser& parser,
                           simdjson::padded_string& buffer);
JsonElement parse_json_text(std::string_view text, const std::string& source,
                            simdjson::dom::parser& parser, simdjson::padded_string& buffer);

[[noreturn]] void json_fail(const std::string& ctx, const std::string& what);

inline bool json_is_null(JsonElement e) {
  return e.type() == simdjson::dom::element_type::NULL_VALUE;
}
inline bool json_is_object(JsonElement e) {
  return e.type() == simdjson::dom::element_type::OBJECT;
}

// The field, or nullopt when absent or null.
std::optional<JsonElement> json_field(JsonElement obj, std::string_view key);

std::string json_as_string(JsonElement e, const std::string& ctx);
std::int64_t json_as_int(JsonElement e, const std::string& ctx);
double json_as_double(JsonElement e, const std::string& ctx);
bool json_as_bool(JsonElement e, const std::string& ctx);

std::optional<std::string> json_opt_string(JsonElement obj, std::string_view key,
                                           const std::string& ctx);
std::optional<std::int64_t> json_opt_int(JsonElement obj, std::string_view key,
                                         const std::string& ctx);
std::optional<double> json_opt_double(JsonElement obj, std::string_view key,
                                      const std::string& ctx);
std::optional<bool> json_opt_bool(JsonElement obj, std::string_view key, const std::string& ctx);

}  // namespace kalm::model::detail
