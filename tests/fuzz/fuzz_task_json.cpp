// libFuzzer target: eval task directories (lib/src/eval/task.cpp): task.json
// through load_task_spec, then the data files of the task's type through the
// loader kalm-eval calls for it.
//
// Input: parts separated by the bytes 00 01 (fuzz_common.h):
//   task.json [00 01 data [00 01 data2 [00 01 data3]]]
// The parts are written into one scratch directory per process, under the
// names the spec asks for (split names are used only when they are plain file
// names; others make the loader look for a file that is not there):
//   retrieval:       data = corpus.jsonl, data2 = queries.jsonl, data3 = qrels/<split>.tsv
//   classification:  data = <split>.jsonl, data2 = <train_split>.jsonl
//   every other:     data = <split>.jsonl
// where <split> is the first of "splits". Files of the previous input are
// removed first.
//
// Checks beyond "no crash": a loaded spec has at least one split and counts
// in range; loaded data has as many labels or scores as texts.
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.h"
#include "kalm/eval/task.h"

namespace {

namespace eval = kalm::eval;

class ScratchDir {
 public:
  ScratchDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/kalm-fuzz-task.XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    dir_ = tmpl;
    ::mkdir((dir_ + "/qrels").c_str(), 0700);
  }
  const std::string& dir() const { return dir_; }
  void write(const std::string& name, std::string_view bytes) {
    const std::string path = dir_ + "/" + name;
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      std::abort();
    }
    written_.push_back(path);
  }
  void clear() {
    for (const std::string& p : written_) ::unlink(p.c_str());
    written_.clear();
  }

 private:
  std::string dir_;
  std::vector<std::string> written_;
};

ScratchDir& scratch() {
  static ScratchDir dir;
  return dir;
}

// libFuzzer ends with exit(): the scratch directory goes with the process.
// Registered after scratch() is constructed, so it runs before its destructor.
void remove_scratch() {
  ScratchDir& dir = scratch();
  dir.clear();
  ::rmdir((dir.dir() + "/qrels").c_str());
  ::rmdir(dir.dir().c_str());
}

bool plain_name(const std::string& s) {
  if (s.empty() || s.size() > 64 || s == "." || s == "..") return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

void load_data(const eval::TaskSpec& spec, const std::string& split) {
  switch (spec.type) {
    case eval::TaskKind::kRetrieval: {
      eval::RetrievalData d = eval::load_retrieval(spec, split);
      KALM_FUZZ_CHECK(d.corpus_ids.size() == d.corpus_texts.size() && !d.corpus_ids.empty(), "corpus");
      KALM_FUZZ_CHECK(d.query_ids.size() == d.query_texts.size() && !d.query_ids.empty(), "queries");
      KALM_FUZZ_CHECK(!d.qrels.empty(), "qrels");
      break;
    }
    case eval::TaskKind::kReranking: {
      auto samples = eval::load_reranking(spec, split);
      KALM_FUZZ_CHECK(!samples.empty(), "reranking");
      break;
    }
    case eval::TaskKind::kSts:
    case eval::TaskKind::kPairClassification:
    case eval::TaskKind::kBitext: {
      eval::PairData d = eval::load_pairs(spec, split);
      KALM_FUZZ_CHECK(d.first.size() == d.second.size() && !d.first.empty(), "pairs");
      if (spec.type == eval::TaskKind::kSts) KALM_FUZZ_CHECK(d.scores.size() == d.first.size(), "scores");
      if (spec.type == eval::TaskKind::kPairClassification)
        KALM_FUZZ_CHECK(d.labels.size() == d.first.size(), "labels");
      break;
    }
    case eval::TaskKind::kClassification: {
      eval::LabelIds ids;
      eval::LabeledTexts train = eval::load_labeled(spec, spec.train_split, ids);
      eval::LabeledTexts test = eval::load_labeled(spec, split, ids);
      KALM_FUZZ_CHECK(train.texts.size() == train.labels.size() && test.texts.size() == test.labels.size(),
                      "classification");
      for (std::int64_t l : test.labels) KALM_FUZZ_CHECK(l >= 0 && l < static_cast<std::int64_t>(ids.size()), "label");
      break;
    }
    case eval::TaskKind::kClustering: {
      auto sets = eval::load_clustering(spec, split);
      KALM_FUZZ_CHECK(!sets.empty(), "clustering");
      for (const auto& s : sets) KALM_FUZZ_CHECK(s.texts.size() == s.labels.size() && !s.texts.empty(), "set");
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string_view> parts = kalm_fuzz::split_parts(data, size);
  ScratchDir& dir = scratch();
  static const bool registered = std::atexit(remove_scratch) == 0;
  (void)registered;
  dir.clear();
  dir.write("task.json", parts[0]);
  eval::TaskSpec spec;
  if (!kalm_fuzz::expect_kalm_errors([&] { spec = eval::load_task_spec(dir.dir()); })) return 0;
  KALM_FUZZ_CHECK(!spec.splits.empty(), "splits");
  KALM_FUZZ_CHECK(spec.n_experiments >= 1 && spec.samples_per_label >= 1 && spec.batch_size >= 1, "counts");
  KALM_FUZZ_CHECK(eval::parse_task_kind(eval::task_kind_name(spec.type)) == spec.type, "type name");
  (void)eval::default_main_score(spec.type);
  (void)eval::is_symmetric(spec.type);

  const std::string& split = spec.splits.front();
  auto part = [&](std::size_t i) { return i < parts.size() ? parts[i] : std::string_view(); };
  if (parts.size() > 1) {
    if (spec.type == eval::TaskKind::kRetrieval) {
      dir.write("corpus.jsonl", part(1));
      if (parts.size() > 2) dir.write("queries.jsonl", part(2));
      if (parts.size() > 3 && plain_name(split)) dir.write("qrels/" + split + ".tsv", part(3));
    } else {
      if (plain_name(split)) dir.write(split + ".jsonl", part(1));
      if (spec.type == eval::TaskKind::kClassification && parts.size() > 2 && plain_name(spec.train_split) &&
          spec.train_split != split)
        dir.write(spec.train_split + ".jsonl", part(2));
    }
  }
  kalm_fuzz::expect_kalm_errors([&] { load_data(spec, split); });
  return 0;
}
