#include "kalm/io/jsonl.h"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "kalm/error.h"

namespace kalm::io {

static_assert(kLinePadding >= simdjson::SIMDJSON_PADDING,
              "LineReader must leave simdjson's padding after every line");

namespace {

// Reads happen in pieces of at least this size, so a buffer holding a long
// partial line still makes progress in big steps.
constexpr std::size_t kInitialCapacity = std::size_t{1} << 20;
constexpr std::size_t kMinRead = std::size_t{1} << 16;

bool is_blank(std::string_view line) {
  for (char c : line)
    if (c != ' ' && c != '\t' && c != '\r') return false;
  return true;
}

std::string_view trim_right(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' ||
                        s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------
// LineReader

LineReader::LineReader(const std::string& path, std::size_t max_line_bytes)
    : LineReader(std::make_unique<InputStream>(path), max_line_bytes) {}

LineReader::LineReader(std::unique_ptr<InputStream> input, std::size_t max_line_bytes)
    : input_(std::move(input)), max_line_bytes_(max_line_bytes) {
  KALM_ASSERT(input_ != nullptr, "LineReader needs an input");
  if (max_line_bytes_ == 0) throw UsageError("the maximum line length must be positive");
  // Zero-filled, so the padding after a line is never uninitialised memory.
  capacity_ = kInitialCapacity;
  buf_ = std::make_unique<char[]>(capacity_ + kLinePadding);
}

LineReader::~LineReader() = default;

void LineReader::grow(std::size_t min_capacity) {
  std::size_t cap = std::max(min_capacity, capacity_ * 2);
  auto buf = std::make_unique<char[]>(cap + kLinePadding);
  std::memcpy(buf.get(), buf_.get() + begin_, end_ - begin_);
  scanned_ -= begin_;
  end_ -= begin_;
  begin_ = 0;
  buf_ = std::move(buf);
  capacity_ = cap;
}

bool LineReader::fill() {
  if (capacity_ - end_ < kMinRead) {
    if (begin_ > 0) {
      std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
      scanned_ -= begin_;
      end_ -= begin_;
      begin_ = 0;
    }
    if (capacity_ - end_ < kMinRead) grow(end_ + kMinRead);
  }
  std::size_t n = input_->read(buf_.get() + end_, capacity_ - end_);
  if (n == 0) {
    eof_ = true;
    return false;
  }
  end_ += n;
  return true;
}

void LineReader::too_long(std::size_t line_number) {
  failure_ = where(name(), line_number) + ": line is longer than " +
             std::to_string(max_line_bytes_) + " bytes (the maximum line length)";
  throw FormatError(failure_);
}

bool LineReader::next(std::string_view& line) {
  // Past an over-long line there is no telling where the next line starts.
  if (!failure_.empty()) throw FormatError(failure_);
  for (;;) {
    char* base = buf_.get();
    if (scanned_ < end_) {
      auto* nl = static_cast<char*>(std::memchr(base + scanned_, '\n', end_ - scanned_));
      if (nl) {
        std::size_t stop = static_cast<std::size_t>(nl - base);
        line = std::string_view(base + begin_, stop - begin_);
        begin_ = scanned_ = stop + 1;
        unterminated_ = false;
        break;
      }
      scanned_ = end_;
    }
    // No newline yet: the pending bytes are one partial line. A "\r" may still
    // come off its end, hence the + 1.
    if (end_ - begin_ > max_line_bytes_ + 1) too_long(line_number_ + 1);
    if (eof_ || !fill()) {
      if (begin_ == end_) return false;
      line = std::string_view(base + begin_, end_ - begin_);
      begin_ = scanned_ = end_;
      unterminated_ = true;
      break;
    }
  }
  ++line_number_;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (at_start_) {
    at_start_ = false;
    if (line.size() >= 3 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.remove_prefix(3);
  }
  if (line.size() > max_line_bytes_) too_long(line_number_);
  return true;
}

// ---------------------------------------------------------------------------
// JsonlReader::Parser: one line -> one record, with file:line in every error.

namespace ondemand = simdjson::ondemand;
using simdjson::error_code;

namespace {

// True for text that is a JSON number by the grammar (RFC 8259), whatever its
// magnitude: simdjson refuses numbers beyond 64-bit integers and doubles, and
// such a number is well-formed JSON that kalm cannot hold, not "invalid JSON".
bool is_json_number(std::string_view t) {
  std::size_t i = 0;
  auto digits = [&] {
    std::size_t start = i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
    return i > start;
  };
  if (i < t.size() && t[i] == '-') ++i;
  if (i < t.size() && t[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < t.size() && t[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == t.size();
}

bool is_json_integer(std::string_view t) {
  return is_json_number(t) && t.find_first_of(".eE") == std::string_view::npos;
}

// A number for a message: long ones shortened to their ends and length.
std::string shown_number(std::string_view t) {
  if (t.size() <= 24) return std::string(t);
  return std::string(t.substr(0, 8)) + "..." + std::string(t.substr(t.size() - 4)) + " (" +
         std::to_string(t.size()) + " characters)";
}

}  // namespace

class JsonlReader::Parser {
 public:
  void start(std::string_view line, const std::string& file, std::size_t line_number,
             bool unterminated) {
    line_ = line;
    file_ = &file;
    line_number_ = line_number;
    unterminated_ = unterminated;
  }

  void parse(TrainingGroup& r);
  void parse(CorpusRecord& r);
  void parse(RawFields& r);

 private:
  // Known fields of each schema, as bits for the duplicate check.
  enum : unsigned {
    kQuery = 1u << 0, kPos = 1u << 1, kNeg = 1u << 2, kPosScores = 1u << 3,
    kNegScores = 1u << 4, kTask = 1u << 5, kInstruction = 1u << 6, kType = 1u << 7,
    kId = 1u << 8, kText = 1u << 9, kInputIds = 1u << 10,
  };

  [[noreturn]] void fail(const std::string& msg) const {
    throw FormatError(where(*file_, line_number_) + ": " + msg);
  }
  // A syntax error; on an unterminated last line that means the line was cut off.
  [[noreturn]] void fail_json(error_code e) const {
    std::string detail = e == simdjson::UTF8_ERROR ? std::string("invalid UTF-8")
                                                   : std::string("invalid JSON: ") +
                                                         simdjson::error_message(e);
    if (unterminated_ && e != simdjson::UTF8_ERROR)
      fail("truncated last line (no newline at the end and not a complete JSON object; " +
           detail + ")");
    fail(detail);
  }
  void check(error_code e) const {
    if (e) fail_json(e);
  }

  static const char* type_name(ondemand::json_type t) {
    switch (t) {
      case ondemand::json_type::array: return "an array";
      case ondemand::json_type::object: return "an object";
      case ondemand::json_type::number: return "a number";
      case ondemand::json_type::string: return "a string";
      case ondemand::json_type::boolean: return "a boolean";
      case ondemand::json_type::null: return "null";
    }
    return "unknown";
  }

  ondemand::json_type type_of(ondemand::value& v) {
    ondemand::json_type t;
    check(v.type().get(t));
    return t;
  }

  // Parses the line and positions `obj` on its object.
  void open(ondemand::document& doc, ondemand::object& obj) {
    padded_ = simdjson::padded_string_view(line_.data(), line_.size(),
                                           line_.size() + kLinePadding);
    check(parser_.iterate(padded_).get(doc));
    ondemand::json_type t;
    check(doc.type().get(t));
    if (t != ondemand::json_type::object)
      fail(std::string("a record must be a JSON object, this line holds ") + type_name(t));
    check(doc.get_object().get(obj));
  }
  void close(ondemand::document& doc) {
    // simdjson 3.0 has no document::at_end(); past the last token the location
    // is OUT_OF_BOUNDS.
    if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS)
      fail_json(simdjson::TRAILING_CONTENT);
  }

  void mark(unsigned& seen, unsigned bit, std::string_view key) const {
    if (seen & bit) fail("duplicate field \"" + std::string(key) + "\"");
    seen |= bit;
  }

  // null for an optional field: consumes and validates it.
  bool take_null(ondemand::value& v) {
    if (type_of(v) != ondemand::json_type::null) return false;
    bool is_null = false;
    check(v.is_null().get(is_null));
    if (!is_null) fail_json(simdjson::N_ATOM_ERROR);
    return true;
  }

  std::string_view get_string(ondemand::value& v, std::string_view what) {
    ondemand::json_type t = type_of(v);
    if (t != ondemand::json_type::string)
      fail(std::string(what) + " must be a string, not " + type_name(t));
    std::string_view s;
    check(v.get_string().get(s));
    return s;
  }

  void get_string_array(ondemand::value& v, std::string_view key, std::vector<std::string>& out) {
    ondemand::json_type t = type_of(v);
    if (t != ondemand::json_type::array)
      fail("field \"" + std::string(key) + "\" must be an array of strings, not " + type_name(t));
    ondemand::array arr;
    check(v.get_array().get(arr));
    std::size_t n = 0;
    for (auto item : arr) {
      ondemand::value e;
      check(std::move(item).get(e));
      ondemand::json_type et = type_of(e);
      if (et != ondemand::json_type::string)
        fail("field \"" + std::string(key) + "\" must be an array of strings, but element " +
             std::to_string(n) + " is " + type_name(et));
      std::string_view s;
      check(e.get_string().get(s));
      // Assign into the existing strings so their capacity is reused.
      if (n < out.size())
        out[n].assign(s.data(), s.size());
      else
        out.emplace_back(s);
      ++n;
    }
    out.resize(n);
  }

  void get_number_array(ondemand::value& v, std::string_view key, std::vector<double>& out) {
    ondemand::json_type t = type_of(v);
    if (t != ondemand::json_type::array)
      fail("field \"" + std::string(key) + "\" must be an array of numbers, not " + type_name(t));
    ondemand::array arr;
    check(v.get_array().get(arr));
    out.clear();
    for (auto item : arr) {
      ondemand::value e;
      check(std::move(item).get(e));
      ondemand::json_type et = type_of(e);
      if (et != ondemand::json_type::number)
        fail("field \"" + std::string(key) + "\" must be an array of numbers, but element " +
             std::to_string(out.size()) + " is " + type_name(et));
      double d;
      if (error_code err = e.get_double().get(d)) {
        const std::string_view token = trim_right(e.raw_json_token());
        if (is_json_number(token))
          fail("field \"" + std::string(key) + "\": element " + std::to_string(out.size()) + ", the number " +
               shown_number(token) + ", is beyond the range of a double");
        fail_json(err);
      }
      out.push_back(d);
    }
  }

  void get_token_ids(ondemand::value& v, std::vector<std::int64_t>& out) {
    ondemand::json_type t = type_of(v);
    if (t != ondemand::json_type::array)
      fail(std::string("field \"input_ids\" must be an array of integers, not ") + type_name(t));
    ondemand::array arr;
    check(v.get_array().get(arr));
    out.clear();
    for (auto item : arr) {
      ondemand::value e;
      check(std::move(item).get(e));
      ondemand::json_type et = type_of(e);
      std::string where_ = "field \"input_ids\" must be an array of non-negative integers, but element " +
                           std::to_string(out.size());
      if (et != ondemand::json_type::number) fail(where_ + " is " + type_name(et));
      ondemand::number_type nt;
      const std::string_view token = trim_right(e.raw_json_token());
      if (e.get_number_type().get(nt) || nt != ondemand::number_type::signed_integer) {
        if (!is_json_number(token)) fail_json(simdjson::NUMBER_ERROR);
        fail(where_ + " is " + shown_number(token));
      }
      std::int64_t id;
      check(e.get_int64().get(id));
      if (id < 0) fail(where_ + " is " + std::to_string(id));
      out.push_back(id);
    }
  }

  // An integer id keeps its decimal digits; anything else is refused.
  void get_id(ondemand::value& v, std::string& out) {
    ondemand::json_type t = type_of(v);
    if (t == ondemand::json_type::string) {
      std::string_view s;
      check(v.get_string().get(s));
      out.assign(s.data(), s.size());
      return;
    }
    if (t != ondemand::json_type::number)
      fail(std::string("field \"id\" must be a string or an integer, not ") + type_name(t));
    // The digits are read from the token itself, so the id keeps exactly the
    // decimal text it was given.
    const std::string_view token = trim_right(v.raw_json_token());
    if (!is_json_number(token)) fail_json(simdjson::NUMBER_ERROR);
    if (!is_json_integer(token))
      fail("field \"id\" must be a string or an integer, not the number " + shown_number(token));
    std::int64_t i = 0;
    std::uint64_t u = 0;
    const char* first = token.data();
    const char* last = token.data() + token.size();
    if (std::from_chars(first, last, i).ec == std::errc()) {
      out = std::to_string(i);
    } else if (token[0] != '-' && std::from_chars(first, last, u).ec == std::errc()) {
      out = std::to_string(u);
    } else {
      fail("field \"id\" is the integer " + shown_number(token) +
           ", too large for a 64-bit integer id; write it as a string to keep every digit");
    }
  }

  // The value's JSON text as it appears in the line, validated in full: on-demand
  // only checks what it is asked for, and skipped values are passed on verbatim.
  std::string_view raw_value(ondemand::value& v, std::string_view key) {
    std::string_view raw;
    ondemand::json_type t = type_of(v);
    if (t == ondemand::json_type::array) {
      ondemand::array a;
      check(v.get_array().get(a));
      check(a.raw_json().get(raw));
    } else if (t == ondemand::json_type::object) {
      ondemand::object o;
      check(v.get_object().get(o));
      check(o.raw_json().get(raw));
    } else {
      raw = v.raw_json_token();
    }
    raw = trim_right(raw);
    // The span lies inside the line, which is followed by kLinePadding readable
    // bytes, so the DOM parser may read past it without a copy.
    simdjson::dom::element ignored;
    error_code e = validator_
                       .parse(reinterpret_cast<const std::uint8_t*>(raw.data()), raw.size(),
                              /*realloc_if_needed=*/false)
                       .get(ignored);
    if (e) {
      if (e == simdjson::UTF8_ERROR) fail_json(e);
      if (unterminated_) fail_json(e);
      if (e == simdjson::NUMBER_ERROR || e == simdjson::NUMBER_OUT_OF_RANGE) {
        if (t == ondemand::json_type::number && is_json_number(raw))
          fail("field \"" + std::string(key) + "\" is the number " + shown_number(raw) +
               ", beyond what kalm reads (64-bit integers and doubles); write it as a string to keep it");
        if (t != ondemand::json_type::number)
          fail("field \"" + std::string(key) + "\" holds a number kalm cannot read (malformed, or beyond 64-bit "
               "integers and doubles)");
      }
      fail("invalid JSON in field \"" + std::string(key) + "\": " + simdjson::error_message(e));
    }
    return raw;
  }

  ondemand::parser parser_;
  simdjson::dom::parser validator_;
  simdjson::padded_string_view padded_;
  std::string_view line_;
  const std::string* file_ = nullptr;
  std::size_t line_number_ = 0;
  bool unterminated_ = false;
};

void JsonlReader::Parser::parse(TrainingGroup& r) {
  ondemand::document doc;
  ondemand::object obj;
  open(doc, obj);
  unsigned seen = 0;     // fields met, for the duplicate check
  unsigned present = 0;  // optional fields met with a non-null value
  r.extra.clear();
  for (auto item : obj) {
    ondemand::field field;
    check(std::move(item).get(field));
    std::string_view key;
    check(field.unescaped_key().get(key));
    ondemand::value v = field.value();
    if (key == "query") {
      mark(seen, kQuery, key);
      std::string_view s = get_string(v, "field \"query\"");
      r.query.assign(s.data(), s.size());
    } else if (key == "pos") {
      mark(seen, kPos, key);
      get_string_array(v, key, r.pos);
    } else if (key == "neg") {
      mark(seen, kNeg, key);
      if (take_null(v)) continue;
      present |= kNeg;
      get_string_array(v, key, r.neg);
    } else if (key == "pos_scores") {
      mark(seen, kPosScores, key);
      if (take_null(v)) continue;
      present |= kPosScores;
      get_number_array(v, key, r.pos_scores);
    } else if (key == "neg_scores") {
      mark(seen, kNegScores, key);
      if (take_null(v)) continue;
      present |= kNegScores;
      get_number_array(v, key, r.neg_scores);
    } else if (key == "task" || key == "instruction") {
      bool is_task = key == "task";
      mark(seen, is_task ? kTask : kInstruction, key);
      if (take_null(v)) continue;
      present |= is_task ? kTask : kInstruction;
      std::string_view s = get_string(v, is_task ? "field \"task\"" : "field \"instruction\"");
      std::optional<std::string>& dst = is_task ? r.task : r.instruction;
      if (dst)
        dst->assign(s.data(), s.size());
      else
        dst.emplace(s);
    } else if (key == "type") {
      mark(seen, kType, key);
      if (take_null(v)) continue;
      present |= kType;
      std::string_view s = get_string(v, "field \"type\"");
      std::optional<TaskType> t = parse_task_type(s);
      if (!t)
        fail("field \"type\" is \"" + std::string(s) +
             "\"; expected one of retrieval, sts, classification, clustering, reranking, "
             "pair, bitext");
      r.type = t;
    } else {
      // `key` lives in the parser's string buffer, which raw_value() leaves alone.
      std::string k(key);
      r.extra.add(k, raw_value(v, k));
    }
  }
  close(doc);
  if (!(seen & kQuery)) fail("missing required field \"query\"");
  if (!(seen & kPos)) fail("missing required field \"pos\"");
  if (r.pos.empty()) fail("field \"pos\" is empty; a training group needs a positive");
  if (!(present & kNeg)) r.neg.clear();
  if (!(present & kPosScores)) r.pos_scores.clear();
  if (!(present & kNegScores)) r.neg_scores.clear();
  if (!(present & kTask)) r.task.reset();
  if (!(present & kInstruction)) r.instruction.reset();
  if (!(present & kType)) r.type.reset();
  if ((present & kPosScores) && r.pos_scores.size() != r.pos.size())
    fail("field \"pos_scores\" has " + std::to_string(r.pos_scores.size()) +
         " entries but \"pos\" has " + std::to_string(r.pos.size()));
  if ((present & kNegScores) && r.neg_scores.size() != r.neg.size())
    fail("field \"neg_scores\" has " + std::to_string(r.neg_scores.size()) +
         " entries but \"neg\" has " + std::to_string(r.neg.size()));
}

void JsonlReader::Parser::parse(CorpusRecord& r) {
  ondemand::document doc;
  ondemand::object obj;
  open(doc, obj);
  unsigned seen = 0, present = 0;
  r.extra.clear();
  for (auto item : obj) {
    ondemand::field field;
    check(std::move(item).get(field));
    std::string_view key;
    check(field.unescaped_key().get(key));
    ondemand::value v = field.value();
    if (key == "text") {
      mark(seen, kText, key);
      std::string_view s = get_string(v, "field \"text\"");
      r.text.assign(s.data(), s.size());
    } else if (key == "input_ids") {
      mark(seen, kInputIds, key);
      get_token_ids(v, r.input_ids);
    } else if (key == "id") {
      mark(seen, kId, key);
      if (take_null(v)) continue;
      present |= kId;
      get_id(v, r.id);
    } else {
      std::string k(key);
      r.extra.add(k, raw_value(v, k));
    }
  }
  close(doc);
  if ((seen & kText) && (seen & kInputIds))
    fail("a record has either \"text\" or \"input_ids\", this one has both");
  if (!(seen & (kText | kInputIds))) fail("missing required field \"text\"");
  r.has_text = (seen & kText) != 0;
  if (r.has_text)
    r.input_ids.clear();
  else
    r.text.clear();
  r.has_id = (present & kId) != 0;
  if (!r.has_id) r.id.clear();
}

void JsonlReader::Parser::parse(RawFields& r) {
  ondemand::document doc;
  ondemand::object obj;
  open(doc, obj);
  r.clear();
  for (auto item : obj) {
    ondemand::field field;
    check(std::move(item).get(field));
    std::string_view key;
    check(field.unescaped_key().get(key));
    ondemand::value v = field.value();
    std::string k(key);
    r.add(k, raw_value(v, k));
  }
  close(doc);
}

// ---------------------------------------------------------------------------
// JsonlReader

JsonlReader::JsonlReader(const std::string& path, ReaderOptions options)
    : JsonlReader(std::make_unique<InputStream>(path), options) {}

JsonlReader::JsonlReader(std::unique_ptr<InputStream> input, ReaderOptions options)
    : lines_(std::move(input), options.max_line_bytes),
      options_(options),
      parser_(std::make_unique<Parser>()) {}

JsonlReader::~JsonlReader() = default;

bool JsonlReader::next_line() {
  // Cleared first: when lines_.next() throws, it may already have moved or
  // freed the buffer the previous line pointed into, and line() must not hand
  // out a view of freed memory (it is empty after a stream error).
  line_ = {};
  std::string_view line;
  while (lines_.next(line)) {
    if (options_.format == InputFormat::kJsonl && is_blank(line)) continue;
    line_ = line;
    parser_->start(line, lines_.name(), lines_.line_number(), lines_.last_line_unterminated());
    return true;
  }
  line_ = {};
  return false;
}

bool JsonlReader::next(TrainingGroup& record) {
  if (options_.format != InputFormat::kJsonl)
    throw UsageError(lines_.name() + ": training groups are read from JSON Lines only");
  if (!next_line()) return false;
  parser_->parse(record);
  ++records_;
  return true;
}

bool JsonlReader::next(CorpusRecord& record) {
  if (!next_line()) return false;
  if (options_.format == InputFormat::kText) {
    if (!simdjson::validate_utf8(line_.data(), line_.size()))
      throw FormatError(where(lines_.name(), lines_.line_number()) + ": invalid UTF-8");
    record.text.assign(line_.data(), line_.size());
    record.has_text = true;
    record.input_ids.clear();
    record.id.clear();
    record.has_id = false;
    record.extra.clear();
  } else {
    parser_->parse(record);
  }
  ++records_;
  return true;
}

bool JsonlReader::next(RawFields& record) {
  if (options_.format != InputFormat::kJsonl)
    throw UsageError(lines_.name() + ": JSON records are read from JSON Lines only");
  if (!next_line()) return false;
  parser_->parse(record);
  ++records_;
  return true;
}

}  // namespace kalm::io
