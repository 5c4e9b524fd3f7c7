// FusedAdamW: PyTorch's AdamW update in one fused kernel, its versioned
// checkpoint state, and the version-1 (torch::optim::AdamW archive) migration.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <filesystem>
#include <string>

#include "kalm/error.h"
#include "kalm/io/remove_tree.h"
#include "kalm/model/tensor_io.h"
#include "kalm/train/optimizer.h"

using kalm::train::AdamWOptions;
using kalm::train::FusedAdamW;
namespace fs = std::filesystem;

namespace {

struct ScratchDir {
  fs::path path;
  explicit ScratchDir(const std::string& tag)
      : path(fs::temp_directory_path() / ("kalm_optimizer_" + tag + "_" + std::to_string(::getpid()))) {
    kalm::io::remove_tree_nothrow(path.string());
    fs::create_directories(path);
  }
  ~ScratchDir() { kalm::io::remove_tree_nothrow(path.string()); }
};

// Two parameters and a gradient for step k that differs per step.
struct Params {
  torch::Tensor a = torch::tensor({1.0f, -2.0f, 0.5f}).requires_grad_(true);
  torch::Tensor b = torch::tensor({{0.25f, 3.0f}, {-1.0f, 0.0f}}).requires_grad_(true);
  std::vector<std::pair<std::string, torch::Tensor>> named() const { return {{"a", a}, {"b", b}}; }
  void set_grads(int k, bool with_b = true) {
    a.mutable_grad() = torch::tensor({0.5f, -0.1f * static_cast<float>(k), 2.0f});
    b.mutable_grad() = with_b ? torch::full({2, 2}, 0.3f * static_cast<float>(k + 1)) : torch::Tensor();
  }
};

double max_diff(const torch::Tensor& x, const torch::Tensor& y) { return (x - y).abs().max().item<double>(); }

}  // namespace

DOCTEST_TEST_CASE("FusedAdamW: one step as the closed form") {
  auto p = torch::tensor({1.0f}).requires_grad_(true);
  AdamWOptions o;
  o.lr = 0.1;
  o.weight_decay = 0.01;
  FusedAdamW opt({{"p", p}}, o);
  p.mutable_grad() = torch::tensor({0.5f});
  opt.step();
  // p * (1 - lr * wd) - lr / (1 - beta1) * m / (sqrt(v) / sqrt(1 - beta2) + eps),
  // m = 0.05, v = 0.00025: 0.999 - 1 * 0.05 / (0.5 + 1e-8)
  const double expected = 0.999 - 0.05 / (0.5 + 1e-8);
  DOCTEST_CHECK(p.item<double>() == doctest::Approx(expected).epsilon(1e-6));
  DOCTEST_CHECK_THROWS_AS(FusedAdamW({{"p", p}}, AdamWOptions{-1.0}), kalm::UsageError);
}

DOCTEST_TEST_CASE("FusedAdamW follows torch::optim::AdamW, skipping parameters without a gradient") {
  Params fused, reference;
  AdamWOptions o;
  o.lr = 0.05;
  o.weight_decay = 0.1;
  FusedAdamW opt(fused.named(), o);
  torch::optim::AdamW ref({reference.a, reference.b},
                          torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay).betas({o.beta1, o.beta2}).eps(o.eps));
  for (int k = 0; k < 6; ++k) {
    const bool with_b = k != 2;  // b has no gradient at step 2: untouched, its step count stays
    const double lr = o.lr * (1.0 - 0.1 * k);
    opt.set_lr(lr);
    for (auto& group : ref.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    fused.set_grads(k, with_b);
    reference.set_grads(k, with_b);
    const auto b_before = fused.b.detach().clone();
    opt.step();
    ref.step();
    if (!with_b) DOCTEST_CHECK(torch::equal(fused.b, b_before));
  }
  // Different kernels, the same arithmetic: float32 rounding apart.
  DOCTEST_CHECK(max_diff(fused.a, reference.a) < 1e-6);
  DOCTEST_CHECK(max_diff(fused.b, reference.b) < 1e-6);
  DOCTEST_CHECK(max_diff(fused.a, torch::tensor({1.0f, -2.0f, 0.5f})) > 0.1);  // it moved
  opt.zero_grad();
  DOCTEST_CHECK(!fused.a.grad().defined());
}

DOCTEST_TEST_CASE("FusedAdamW: saved state resumes bit-exactly; bad files are refused by name") {
  ScratchDir dir("save");
  Params run, resumed;
  FusedAdamW opt(run.named(), {});
  for (int k = 0; k < 3; ++k) {
    run.set_grads(k, k != 1);
    opt.step();
  }
  opt.save(dir.path.string());
  const auto file = kalm::io::SafetensorsFile::open((dir.path / "optimizer.safetensors").string());
  DOCTEST_CHECK(file.metadata_value("kalm_optimizer_version") == std::optional<std::string>("2"));
  DOCTEST_CHECK(kalm::model::tensor_from(file, "step.a").item<float>() == 3.0f);
  DOCTEST_CHECK(kalm::model::tensor_from(file, "step.b").item<float>() == 2.0f);

  {
    torch::NoGradGuard no_grad;
    resumed.a.copy_(run.a);
    resumed.b.copy_(run.b);
  }
  FusedAdamW again(resumed.named(), {});
  again.load(dir.path.string());
  for (int k = 3; k < 5; ++k) {
    run.set_grads(k);
    resumed.set_grads(k);
    opt.step();
    again.step();
  }
  DOCTEST_CHECK(torch::equal(run.a, resumed.a));
  DOCTEST_CHECK(torch::equal(run.b, resumed.b));

  // A model with another parameter, or another shape, is refused naming the tensor.
  auto c = torch::zeros({3}).requires_grad_(true);
  FusedAdamW other({{"c", c}}, {});
  const std::string path = (dir.path / "optimizer.safetensors").string();
  DOCTEST_CHECK_THROWS_WITH_AS(other.load(dir.path.string()), (path + ": tensor exp_avg.c is missing").c_str(),
                               kalm::FormatError);
  auto wrong = torch::zeros({4}).requires_grad_(true);
  FusedAdamW shaped({{"a", wrong}, {"b", resumed.b}}, {});
  DOCTEST_CHECK_THROWS_WITH_AS(shaped.load(dir.path.string()),
                               (path + ": tensor exp_avg.a is [3] Float, the model needs [4] Float").c_str(),
                               kalm::FormatError);
  // An unknown version is refused, not guessed at.
  kalm::model::save_safetensors(path, {{"exp_avg.a", torch::zeros({3})}},
                                {{"kalm_optimizer", "adamw"}, {"kalm_optimizer_version", "3"}});
  DOCTEST_CHECK_THROWS_WITH_AS(again.load(dir.path.string()),
                               (path + ": __metadata__.kalm_optimizer_version is '3'; this kalm reads version 2").c_str(),
                               kalm::FormatError);
  ScratchDir empty("empty");
  DOCTEST_CHECK_THROWS_AS(again.load(empty.path.string()), kalm::IoError);
}

DOCTEST_TEST_CASE("FusedAdamW reads a version-1 checkpoint (torch::optim::AdamW archive) and goes on") {
  ScratchDir dir("legacy");
  Params old_run, migrated, reference;
  torch::optim::AdamW legacy({old_run.a, old_run.b}, torch::optim::AdamWOptions(0.01).weight_decay(0.05));
  for (int k = 0; k < 2; ++k) {
    old_run.set_grads(k, k == 0);  // b had one step, a two
    legacy.step();
  }
  torch::save(legacy, (dir.path / "optimizer.pt").string());
  {
    torch::NoGradGuard no_grad;
    migrated.a.copy_(old_run.a);
    migrated.b.copy_(old_run.b);
    reference.a.copy_(old_run.a);
    reference.b.copy_(old_run.b);
  }
  AdamWOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.05;  // the settings come from the command line, as they did for the first run
  FusedAdamW opt(migrated.named(), o);
  opt.load(dir.path.string());
  // The reference goes on with LibTorch's optimiser and the same state (the
  // archive restores its settings too).
  torch::optim::AdamW ref({reference.a, reference.b}, torch::optim::AdamWOptions(0.01));
  torch::load(ref, (dir.path / "optimizer.pt").string());
  for (int k = 2; k < 5; ++k) {
    migrated.set_grads(k);
    reference.set_grads(k);
    opt.step();
    ref.step();
  }
  DOCTEST_CHECK(max_diff(migrated.a, reference.a) < 1e-6);
  DOCTEST_CHECK(max_diff(migrated.b, reference.b) < 1e-6);
  // The step counts came across (2 and 1, then 3 more each): a step count
  // lost would change the bias correction by far more than rounding.
  opt.save(dir.path.string());
  const auto file = kalm::io::SafetensorsFile::open((dir.path / "optimizer.safetensors").string());
  DOCTEST_CHECK(kalm::model::tensor_from(file, "step.a").item<float>() == 5.0f);
  DOCTEST_CHECK(kalm::model::tensor_from(file, "step.b").item<float>() == 4.0f);
}
