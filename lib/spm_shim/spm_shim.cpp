// libkalm_spm: see spm_shim.h for why this exists. Every entry point catches
// everything: no C++ exception may cross the C boundary.
#include "spm_shim.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

void set_error(char* err, size_t err_len, const std::string& message) {
  if (!err || err_len == 0) return;
  std::size_t n = std::min(message.size(), err_len - 1);
  std::memcpy(err, message.data(), n);
  err[n] = '\0';
}

char* copy_out(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (!out) return nullptr;
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = '\0';
  return out;
}

const sentencepiece::SentencePieceProcessor& sp(const void* p) {
  return *static_cast<const sentencepiece::SentencePieceProcessor*>(p);
}

class TextIterator final : public sentencepiece::SentenceIterator {
 public:
  TextIterator(const char* const* texts, const size_t* lens, size_t n) : texts_(texts), lens_(lens), n_(n) {
    if (n_ > 0) current_.assign(texts_[0], lens_[0]);
  }
  bool done() const override { return i_ >= n_; }
  void Next() override {
    if (++i_ < n_) current_.assign(texts_[i_], lens_[i_]);
  }
  const std::string& value() const override { return current_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  const char* const* texts_;
  const size_t* lens_;
  size_t n_;
  size_t i_ = 0;
  std::string current_;
};

}  // namespace

extern "C" {

int kalm_spm_abi_version(void) { return KALM_SPM_ABI_VERSION; }

void* kalm_spm_load(const char* model, size_t model_len, char* err, size_t err_len) {
  try {
    auto* p = new sentencepiece::SentencePieceProcessor();
    auto status = p->LoadFromSerializedProto(std::string_view(model, model_len));
    if (!status.ok()) {
      set_error(err, err_len, status.ToString());
      delete p;
      return nullptr;
    }
    return p;
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return nullptr;
  }
}

void kalm_spm_free(void* processor) { delete static_cast<sentencepiece::SentencePieceProcessor*>(processor); }
void kalm_spm_free_buffer(void* buffer) { std::free(buffer); }

int kalm_spm_encode(const void* processor, const char* text, size_t text_len, int** ids, size_t* n_ids, char* err,
                    size_t err_len) {
  try {
    std::vector<int> out;
    auto status = sp(processor).Encode(std::string_view(text, text_len), &out);
    if (!status.ok()) {
      set_error(err, err_len, status.ToString());
      return 1;
    }
    *n_ids = out.size();
    *ids = static_cast<int*>(std::malloc(std::max<size_t>(1, out.size()) * sizeof(int)));
    if (!*ids) {
      set_error(err, err_len, "out of memory");
      return 1;
    }
    if (!out.empty()) std::memcpy(*ids, out.data(), out.size() * sizeof(int));
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return 1;
  }
}

int kalm_spm_decode(const void* processor, const int* ids, size_t n_ids, char** text, size_t* text_len, char* err,
                    size_t err_len) {
  try {
    std::vector<int> in(ids, ids + n_ids);
    std::string out;
    auto status = sp(processor).Decode(in, &out);
    if (!status.ok()) {
      set_error(err, err_len, status.ToString());
      return 1;
    }
    *text = copy_out(out);
    *text_len = out.size();
    return *text ? 0 : 1;
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return 1;
  }
}

int kalm_spm_piece_size(const void* processor) { return sp(processor).GetPieceSize(); }

int kalm_spm_piece_to_id(const void* processor, const char* piece, size_t piece_len) {
  try {
    return sp(processor).PieceToId(std::string_view(piece, piece_len));
  } catch (...) {
    return -1;
  }
}

int kalm_spm_id_to_piece(const void* processor, int id, char** piece, size_t* piece_len) {
  try {
    const std::string& s = sp(processor).IdToPiece(id);
    *piece = copy_out(s);
    *piece_len = s.size();
    return *piece ? 0 : 1;
  } catch (...) {
    return 1;
  }
}

int kalm_spm_is_control(const void* processor, int id) { return sp(processor).IsControl(id) ? 1 : 0; }

void kalm_spm_special_ids(const void* processor, int out[4]) {
  out[0] = sp(processor).bos_id();
  out[1] = sp(processor).eos_id();
  out[2] = sp(processor).pad_id();
  out[3] = sp(processor).unk_id();
}

int kalm_spm_train(const char* const* texts, const size_t* text_lens, size_t n_texts, const char* const* keys,
                   const char* const* values, size_t n_args, unsigned int seed, char** model, size_t* model_len,
                   char* err, size_t err_len) {
  try {
    std::unordered_map<std::string, std::string> args;
    for (size_t i = 0; i < n_args; ++i) args[keys[i]] = values[i];
    sentencepiece::SetRandomGeneratorSeed(seed);
    TextIterator it(texts, text_lens, n_texts);
    std::string out;
    auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &out);
    if (!status.ok()) {
      set_error(err, err_len, status.ToString());
      return 1;
    }
    *model = copy_out(out);
    *model_len = out.size();
    return *model ? 0 : 1;
  } catch (const std::exception& e) {
    set_error(err, err_len, e.what());
    return 1;
  }
}

}  // extern "C"
