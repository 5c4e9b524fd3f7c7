#pragma once
// simdjson DOM accessors that throw ModelError with the JSON path in the message
// (internal to kalm::text). `ctx` is "<file>: <json path>".

#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kalm/error.h"

namespace kalm::text::detail {

using JsonElement = simdjson::dom::element;

[[noreturn]] inline void json_fail(const std::string& ctx, const std::string& what) {
  throw ModelError(ctx + ": " + what);
}

inline std::string json_path(const std::string& ctx, std::string_view key) {
  return ctx + "." + std::string(key);
}

inline bool json_is_null(JsonElement e) { return e.type() == simdjson::dom::element_type::NULL_VALUE; }

// The field, or nullopt when it is absent or null.
inline std::optional<JsonElement> json_field(JsonElement obj, std::string_view key) {
  if (obj.type() != simdjson::dom::element_type::OBJECT) return std::nullopt;
  JsonElement v;
  if (obj.at_key(key).get(v) != simdjson::SUCCESS || json_is_null(v)) return std::nullopt;
  return v;
}

inline JsonElement json_require(JsonElement obj, std::string_view key, const std::string& ctx) {
  auto v = json_field(obj, key);
  if (!v) json_fail(ctx, "missing field \"" + std::string(key) + "\"");
  return *v;
}

inline std::string_view json_as_string(JsonElement e, const std::string& ctx) {
  std::string_view s;
  if (e.get_string().get(s) != simdjson::SUCCESS) json_fail(ctx, "expected a string");
  return s;
}

inline int64_t json_as_int(JsonElement e, const std::string& ctx) {
  int64_t v;
  if (e.get_int64().get(v) == simdjson::SUCCESS) return v;
  uint64_t u;
  if (e.get_uint64().get(u) == simdjson::SUCCESS && u <= static_cast<uint64_t>(INT64_MAX))
    return static_cast<int64_t>(u);
  json_fail(ctx, "expected an integer");
}

inline bool json_as_bool(JsonElement e, const std::string& ctx) {
  bool b;
  if (e.get_bool().get(b) != simdjson::SUCCESS) json_fail(ctx, "expected true or false");
  return b;
}

inline std::string_view json_string(JsonElement obj, std::string_view key, const std::string& ctx) {
  return json_as_string(json_require(obj, key, ctx), json_path(ctx, key));
}

inline std::optional<std::string_view> json_opt_string(JsonElement obj, std::string_view key,
                                                       const std::string& ctx) {
  auto v = json_field(obj, key);
  if (!v) return std::nullopt;
  return json_as_string(*v, json_path(ctx, key));
}

inline bool json_bool(JsonElement obj, std::string_view key, bool fallback, const std::string& ctx) {
  auto v = json_field(obj, key);
  return v ? json_as_bool(*v, json_path(ctx, key)) : fallback;
}

inline int32_t json_id(JsonElement e, const std::string& ctx) {
  const int64_t v = json_as_int(e, ctx);
  if (v < 0 || v > INT32_MAX) json_fail(ctx, "token id " + std::to_string(v) + " out of range");
  return static_cast<int32_t>(v);
}

inline simdjson::dom::array json_array(JsonElement e, const std::string& ctx) {
  simdjson::dom::array a;
  if (e.get_array().get(a) != simdjson::SUCCESS) json_fail(ctx, "expected an array");
  return a;
}

inline simdjson::dom::object json_object(JsonElement e, const std::string& ctx) {
  simdjson::dom::object o;
  if (e.get_object().get(o) != simdjson::SUCCESS) json_fail(ctx, "expected an object");
  return o;
}

// The "type" tag of a component object.
inline std::string_view json_type(JsonElement e, const std::string& ctx) {
  json_object(e, ctx);
  return json_string(e, "type", ctx);
}

}  // namespace kalm::text::detail
