// HF post-processors for single sequences: TemplateProcessing, ByteLevel (ids
// unchanged), RobertaProcessing, BertProcessing, Sequence.
#include <map>

#include "hf_components.h"

namespace kalm::text::detail {

namespace {

// A template as a list of parts: the sequence ($A) or the ids of a special token.
class TemplateProcessor final : public PostProcessor {
 public:
  struct Part {
    bool is_sequence = false;
    std::vector<int32_t> ids;
  };
  explicit TemplateProcessor(std::vector<Part> parts) : parts_(std::move(parts)) {
    for (const Part& p : parts_) added_ += p.ids.size();
  }
  std::size_t added_tokens() const override { return added_; }
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens || added_ == 0) return;
    std::vector<int32_t> out;
    out.reserve(ids.size() + added_);
    for (const Part& p : parts_) {
      if (p.is_sequence) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), p.ids.begin(), p.ids.end());
      }
    }
    ids.swap(out);
  }
  void special_ids(std::vector<int32_t>& out) const override {
    for (const Part& p : parts_) out.insert(out.end(), p.ids.begin(), p.ids.end());
  }

 private:
  std::vector<Part> parts_;
  std::size_t added_ = 0;
};

class NoopProcessor final : public PostProcessor {
 public:
  std::size_t added_tokens() const override { return 0; }
  void process(std::vector<int32_t>&, bool) const override {}
  void special_ids(std::vector<int32_t>&) const override {}
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  std::size_t added_tokens() const override {
    std::size_t n = 0;
    for (const auto& p : parts_) n += p->added_tokens();
    return n;
  }
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    for (const auto& p : parts_) p->process(ids, add_special_tokens);
  }
  void special_ids(std::vector<int32_t>& out) const override {
    for (const auto& p : parts_) p->special_ids(out);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

// ["[CLS]", 101] -> 101
int32_t token_pair_id(JsonElement e, const std::string& ctx) {
  auto a = json_array(e, ctx);
  if (a.size() != 2) json_fail(ctx, "expected [token, id]");
  json_as_string(a.at(0).value(), ctx + "[0]");
  return json_id(a.at(1).value(), ctx + "[1]");
}

std::unique_ptr<PostProcessor> make_template(JsonElement e, const std::string& ctx) {
  // special_tokens: {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}
  std::map<std::string, std::vector<int32_t>, std::less<>> specials;
  if (auto st = json_field(e, "special_tokens")) {
    for (auto [key, value] : json_object(*st, ctx + ".special_tokens")) {
      const std::string c = ctx + ".special_tokens." + std::string(key);
      std::vector<int32_t> ids;
      for (JsonElement id : json_array(json_require(value, "ids", c), c + ".ids")) {
        ids.push_back(json_id(id, c + ".ids"));
      }
      specials[std::string(key)] = std::move(ids);
    }
  }
  const std::string sctx = ctx + ".single";
  std::vector<TemplateProcessor::Part> parts;
  std::size_t k = 0;
  for (JsonElement piece : json_array(json_require(e, "single", ctx), sctx)) {
    const std::string pctx = sctx + "[" + std::to_string(k++) + "]";
    std::string_view special_name;
    bool is_sequence = false;
    std::string_view seq_id = "A";
    if (piece.is_string()) {
      // The compact form: "$A", "$B:1", "[CLS]", "[CLS]:0".
      std::string_view s = json_as_string(piece, pctx);
      const auto colon = s.rfind(':');
      if (colon != std::string_view::npos && colon > 0) s = s.substr(0, colon);
      if (!s.empty() && s[0] == '$') {
        is_sequence = true;
        seq_id = s.size() > 1 ? s.substr(1) : std::string_view("A");
      } else {
        special_name = s;
      }
    } else if (auto seq = json_field(piece, "Sequence")) {
      is_sequence = true;
      seq_id = json_string(*seq, "id", pctx + ".Sequence");
    } else if (auto sp = json_field(piece, "SpecialToken")) {
      special_name = json_string(*sp, "id", pctx + ".SpecialToken");
    } else {
      json_fail(pctx, "expected a Sequence or SpecialToken piece");
    }
    if (is_sequence) {
      if (seq_id != "A") json_fail(pctx, "a single-sequence template can only use $A");
      // A second $A would repeat the text after truncation has cut it to fit
      // max_length, and the ids would no longer fit.
      for (const TemplateProcessor::Part& p : parts)
        if (p.is_sequence) json_fail(pctx, "a single-sequence template can use $A only once");
      parts.push_back({true, {}});
    } else {
      auto it = specials.find(special_name);
      if (it == specials.end())
        json_fail(pctx, "special token \"" + std::string(special_name) + "\" not in special_tokens");
      parts.push_back({false, it->second});
    }
  }
  return std::make_unique<TemplateProcessor>(std::move(parts));
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(JsonElement e, const std::string& ctx) {
  const std::string_view type = json_type(e, ctx);
  if (type == "TemplateProcessing") return make_template(e, ctx);
  if (type == "ByteLevel") return std::make_unique<NoopProcessor>();
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    const int32_t cls = token_pair_id(json_require(e, "cls", ctx), ctx + ".cls");
    const int32_t sep = token_pair_id(json_require(e, "sep", ctx), ctx + ".sep");
    std::vector<TemplateProcessor::Part> parts = {{false, {cls}}, {true, {}}, {false, {sep}}};
    return std::make_unique<TemplateProcessor>(std::move(parts));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PostProcessor>> parts;
    std::size_t k = 0;
    for (JsonElement p : json_array(json_require(e, "processors", ctx), ctx + ".processors")) {
      parts.push_back(make_post_processor(p, ctx + ".processors[" + std::to_string(k++) + "]"));
    }
    return std::make_unique<SequenceProcessor>(std::move(parts));
  }
  json_fail(ctx, "unsupported post_processor type \"" + std::string(type) + "\"");
}

std::unique_ptr<PostProcessor> make_bos_eos_processor(std::optional<int32_t> bos,
                                                      std::optional<int32_t> eos) {
  std::vector<TemplateProcessor::Part> parts;
  if (bos) parts.push_back({false, {*bos}});
  parts.push_back({true, {}});
  if (eos) parts.push_back({false, {*eos}});
  return std::make_unique<TemplateProcessor>(std::move(parts));
}

}  // namespace kalm::text::detail
