// c10d's Gloo backend is compiled into Debian's libtorch_cpu; its header is
// guarded by this macro, which LibTorch's CMake config does not set for users.
#define USE_C10D_GLOO
#include "kalm/train/dist.h"

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "kalm/error.h"

namespace kalm::train {

struct DataParallel::Impl {
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

namespace {
template <typename F>
auto guarded(const char* what, F&& f) {
  try {
    return f();
  } catch (const kalm::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(std::string("data parallel ") + what + " failed: " + e.what());
  }
}
}  // namespace

DataParallel::DataParallel(int rank, int world, const std::string& store_path)
    : impl_(std::make_unique<Impl>()), rank_(rank), world_(world) {
  if (world < 1 || rank < 0 || rank >= world)
    throw UsageError("--rank must lie in [0, --world-size), got rank " + std::to_string(rank) + " of " +
                     std::to_string(world));
  if (store_path.empty()) throw UsageError("--world-size > 1 needs --dist-store FILE (shared by every rank)");
  guarded("rendezvous", [&] {
    auto store = c10::make_intrusive<c10d::FileStore>(store_path, world);
    auto options = c10d::ProcessGroupGloo::Options::create();
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
    return 0;
  });
}

DataParallel::~DataParallel() = default;

torch::Tensor DataParallel::all_gather_rows(const torch::Tensor& local) {
  return guarded("all_gather", [&] {
    std::vector<torch::Tensor> input{local.detach().contiguous()};
    std::vector<std::vector<torch::Tensor>> output(1);
    for (int r = 0; r < world_; ++r) output[0].push_back(torch::empty_like(input[0]));
    impl_->group->allgather(output, input)->wait();
    output[0][static_cast<std::size_t>(rank_)] = local;
    return torch::cat(output[0], 0);
  });
}

void DataParallel::all_reduce_gradients(const std::vector<torch::Tensor>& params) {
  guarded("all_reduce", [&] {
    std::vector<torch::Tensor> grads;
    for (const auto& p : params)
      if (p.grad().defined()) grads.push_back(p.grad());
    if (grads.empty()) return 0;
    // One flat buffer: one collective instead of one per tensor.
    std::vector<torch::Tensor> flat{torch::cat([&] {
      std::vector<torch::Tensor> views;
      for (auto& g : grads) views.push_back(g.reshape({-1}));
      return views;
    }())};
    impl_->group->allreduce(flat)->wait();
    std::int64_t offset = 0;
    for (auto& g : grads) {
      const auto n = g.numel();
      g.copy_(flat[0].slice(0, offset, offset + n).view_as(g));
      offset += n;
    }
    return 0;
  });
}

std::int64_t DataParallel::all_max(std::int64_t value) {
  return guarded("all_reduce", [&] {
    std::vector<torch::Tensor> t{torch::full({1}, value, torch::kLong)};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::MAX;
    impl_->group->allreduce(t, options)->wait();
    return t[0].item<std::int64_t>();
  });
}

void DataParallel::barrier() {
  guarded("barrier", [&] {
    impl_->group->barrier()->wait();
    return 0;
  });
}

}  // namespace kalm::train
