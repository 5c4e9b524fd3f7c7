#include "kalm/train/optimizer.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <tuple>

#include "kalm/error.h"
#include "kalm/io/safetensors.h"
#include "kalm/model/tensor_io.h"

namespace kalm::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormatKey = "kalm_optimizer";
constexpr const char* kVersionKey = "kalm_optimizer_version";
constexpr const char* kVersion = "2";

void check_options(const AdamWOptions& o) {
  if (!(o.lr >= 0) || !std::isfinite(o.lr)) throw UsageError("AdamW: the learning rate must be a finite number >= 0");
  if (!(o.beta1 >= 0 && o.beta1 < 1) || !(o.beta2 >= 0 && o.beta2 < 1))
    throw UsageError("AdamW: betas must lie in [0, 1)");
  if (!(o.eps > 0)) throw UsageError("AdamW: eps must be > 0");
  if (!(o.weight_decay >= 0)) throw UsageError("AdamW: weight decay must be >= 0");
}

std::string shape_of(const torch::Tensor& t) {
  std::string s = "[";
  for (std::int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace

FusedAdamW::FusedAdamW(std::vector<std::pair<std::string, torch::Tensor>> named_parameters, AdamWOptions options)
    : options_(options) {
  check_options(options_);
  for (auto& [name, param] : named_parameters) {
    if (!param.is_floating_point()) throw UsageError("AdamW: parameter " + name + " is not floating point");
    Slot s;
    s.name = name;
    s.param = param;
    s.exp_avg = torch::zeros_like(param, torch::MemoryFormat::Preserve);
    s.exp_avg_sq = torch::zeros_like(param, torch::MemoryFormat::Preserve);
    s.step = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat).device(param.device()));
    slots_.push_back(std::move(s));
  }
}

void FusedAdamW::zero_grad() {
  for (auto& s : slots_) s.param.mutable_grad() = torch::Tensor();
}

void FusedAdamW::step() {
  torch::NoGradGuard no_grad;
  // _fused_adamw_ takes one device and one dtype per call (as PyTorch groups them).
  struct Group {
    std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
  };
  std::map<std::tuple<int, int, int>, Group> groups;
  for (auto& s : slots_) {
    if (!s.param.grad().defined()) continue;
    const auto key = std::make_tuple(static_cast<int>(s.param.device().type()), static_cast<int>(s.param.device().index()),
                                     static_cast<int>(s.param.scalar_type()));
    Group& g = groups[key];
    g.params.push_back(s.param);
    g.grads.push_back(s.param.grad());
    g.exp_avgs.push_back(s.exp_avg);
    g.exp_avg_sqs.push_back(s.exp_avg_sq);
    g.steps.push_back(s.step);
  }
  for (auto& [key, g] : groups) {
    // The kernel reads the step count already advanced (torch.optim's _fused_adamw).
    at::_foreach_add_(g.steps, 1);
    at::_fused_adamw_(g.params, g.grads, g.exp_avgs, g.exp_avg_sqs, /*max_exp_avg_sqs=*/{}, g.steps, options_.lr,
                      options_.beta1, options_.beta2, options_.weight_decay, options_.eps, /*amsgrad=*/false,
                      /*maximize=*/false);
  }
}

void FusedAdamW::save(const std::string& dir) const {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& s : slots_) {
    tensors.emplace_back("exp_avg." + s.name, s.exp_avg);
    tensors.emplace_back("exp_avg_sq." + s.name, s.exp_avg_sq);
    tensors.emplace_back("step." + s.name, s.step);
  }
  model::save_safetensors((fs::path(dir) / kOptimizerStateFile).string(), tensors,
                          {{kFormatKey, "adamw"}, {kVersionKey, kVersion}});
}

void FusedAdamW::load(const std::string& dir) {
  const std::string path = (fs::path(dir) / kOptimizerStateFile).string();
  if (!fs::exists(path)) {
    const std::string legacy = (fs::path(dir) / kLegacyOptimizerFile).string();
    if (fs::exists(legacy)) return load_legacy(legacy);
    throw IoError(dir + ": no optimiser state (" + kOptimizerStateFile + " or " + kLegacyOptimizerFile + ")");
  }
  const auto file = io::SafetensorsFile::open(path);
  const auto format = file.metadata_value(kFormatKey);
  const auto version = file.metadata_value(kVersionKey);
  if (!format || *format != "adamw")
    throw FormatError(path + ": __metadata__." + kFormatKey + " is " + (format ? "'" + *format + "'" : "missing") +
                      " (kalm writes 'adamw')");
  if (!version || *version != kVersion)
    throw FormatError(path + ": __metadata__." + kVersionKey + " is " + (version ? "'" + *version + "'" : "missing") +
                      "; this kalm reads version " + kVersion);
  torch::NoGradGuard no_grad;
  for (auto& s : slots_) {
    for (auto [field, target] : {std::pair<const char*, torch::Tensor*>{"exp_avg.", &s.exp_avg},
                                 {"exp_avg_sq.", &s.exp_avg_sq}, {"step.", &s.step}}) {
      const std::string key = field + s.name;
      if (!file.contains(key)) throw FormatError(path + ": tensor " + key + " is missing");
      const torch::Tensor saved = model::tensor_from(file, key);
      if (saved.sizes() != target->sizes() || saved.scalar_type() != target->scalar_type())
        throw FormatError(path + ": tensor " + key + " is " + shape_of(saved) + " " +
                          c10::toString(saved.scalar_type()) + ", the model needs " + shape_of(*target) + " " +
                          c10::toString(target->scalar_type()));
      target->copy_(saved);
    }
  }
}

// Version 1: LibTorch's own AdamW archive, keyed by parameter order.
void FusedAdamW::load_legacy(const std::string& path) {
  std::vector<torch::Tensor> params;
  for (const auto& s : slots_) params.push_back(s.param);
  torch::optim::AdamW legacy(params, torch::optim::AdamWOptions(options_.lr));
  try {
    // Onto the host: LibTorch's archive otherwise puts every tensor back on
    // the device that wrote it (a GPU index this run may not have); the
    // moments are copied onto each parameter's device below.
    torch::load(legacy, path, torch::Device(torch::kCPU));
  } catch (const c10::Error& e) {
    throw FormatError(path + ": not a kalm version-1 optimiser state (" + e.what_without_backtrace() + ")");
  }
  torch::NoGradGuard no_grad;
  const auto& state = legacy.state();
  for (auto& s : slots_) {
    const auto it = state.find(s.param.unsafeGetTensorImpl());
    if (it == state.end()) continue;  // never had a gradient: fresh state, as LibTorch
    const auto& st = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    if (st.exp_avg().sizes() != s.param.sizes())
      throw FormatError(path + ": the state of parameter " + s.name + " is " + shape_of(st.exp_avg()) +
                        ", the model's is " + shape_of(s.param));
    s.exp_avg.copy_(st.exp_avg());
    s.exp_avg_sq.copy_(st.exp_avg_sq());
    s.step.fill_(static_cast<double>(st.step()));
  }
}

}  // namespace kalm::train
