#include "json_util.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace kalm::model::detail {

JsonElement parse_json_text(std::string_view text, const std::string& source,
                            simdjson::dom::parser& parser, simdjson::padded_string& buffer) {
  buffer = simdjson::padded_string(text);
  JsonElement doc;
  const auto error = parser.parse(buffer).get(doc);
  if (error != simdjson::SUCCESS)
    throw FormatError(display_name(source) + ": invalid JSON (" +
                      simdjson::error_message(error) + ")");
  return doc;
}

JsonElement load_json_file(const std::string& path, simdjson::dom::parser& parser,
                           simdjson::padded_string& buffer) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(display_name(path) + ": cannot open (" + std::strerror(errno) + ")");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw IoError(display_name(path) + ": read error");
  return parse_json_text(text.str(), path, parser, buffer);
}

void json_fail(const std::string& ctx, const std::string& what) {
  throw ModelError(ctx + ": " + what);
}

std::optional<JsonElement> json_field(JsonElement obj, std::string_view key) {
  if (!json_is_object(obj)) return std::nullopt;
  JsonElement v;
  if (obj.at_key(key).get(v) != simdjson::SUCCESS || json_is_null(v)) return std::nullopt;
  return v;
}

std::string json_as_string(JsonElement e, const std::string& ctx) {
  std::string_view s;
  if (e.get_string().get(s) != simdjson::SUCCESS) json_fail(ctx, "expected a string");
  return std::string(s);
}

std::int64_t json_as_int(JsonElement e, const std::string& ctx) {
  std::int64_t v;
  if (e.get_int64().get(v) == simdjson::SUCCESS) return v;
  double d;
  // Some writers store integral sizes as 64.0. The range is checked before the
  // cast: a double outside int64's range (2^64 - 1 reads as 1.8e19) makes the
  // cast undefined.
  if (e.get_double().get(d) == simdjson::SUCCESS && d > -9.0e15 && d < 9.0e15 &&
      d == static_cast<double>(static_cast<std::int64_t>(d)))
    return static_cast<std::int64_t>(d);
  json_fail(ctx, "expected an integer");
}

double json_as_double(JsonElement e, const std::string& ctx) {
  double d;
  if (e.get_double().get(d) == simdjson::SUCCESS) return d;
  std::int64_t i;
  if (e.get_int64().get(i) == simdjson::SUCCESS) return static_cast<double>(i);
  std::uint64_t u;
  if (e.get_uint64().get(u) == simdjson::SUCCESS) return static_cast<double>(u);
  json_fail(ctx, "expected a number");
}

bool json_as_bool(JsonElement e, const std::string& ctx) {
  bool b;
  if (e.get_bool().get(b) != simdjson::SUCCESS) json_fail(ctx, "expected true or false");
  return b;
}

namespace {
std::string field_ctx(const std::string& ctx, std::string_view key) {
  // "<file>:" + key -> "<file>: key"; "<file>: a" + key -> "<file>: a.key".
  return ctx + (!ctx.empty() && ctx.back() == ':' ? " " : ".") + std::string(key);
}
}  // namespace

std::optional<std::string> json_opt_string(JsonElement obj, std::string_view key,
                                           const std::string& ctx) {
  auto v = json_field(obj, key);
  if (!v) return std::nullopt;
  return json_as_string(*v, field_ctx(ctx, key));
}

std::optional<std::int64_t> json_opt_int(JsonElement obj, std::string_view key,
                                         const std::string& ctx) {
  auto v = json_field(obj, key);
  if (!v) return std::nullopt;
  return json_as_int(*v, field_ctx(ctx, key));
}

std::optional<double> json_opt_double(JsonElement obj, std::string_view key,
                                      const std::string& ctx) {
  auto v = json_field(obj, key);
  if (!v) return std::nullopt;
  return json_as_double(*v, field_ctx(ctx, key));
}

std::optional<bool> json_opt_bool(JsonElement obj, std::string_view key, const std::string& ctx) {
  auto v = json_field(obj, key);
  if (!v) return std::nullopt;
  return json_as_bool(*v, field_ctx(ctx, key));
}

}  // namespace kalm::model::detail
