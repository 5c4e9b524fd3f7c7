// resolve_dist: flags, torchrun's and Slurm's variables, and their errors.
#include <doctest/doctest.h>

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "kalm/error.h"
#include "kalm/train/dist.h"

using kalm::train::DistFlags;
using kalm::train::DistOptions;
using kalm::train::resolve_dist;

namespace {

struct FakeEnv {
  std::map<std::string, std::string> vars;
  kalm::train::EnvLookup lookup() const {
    return [this](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  }
};

}  // namespace

DOCTEST_TEST_CASE("resolve_dist: no flags, no environment -> one process") {
  FakeEnv env;
  const DistOptions d = resolve_dist(DistFlags{}, env.lookup());
  DOCTEST_CHECK(d.world_size == 1);
  DOCTEST_CHECK(d.rank == 0);
  DOCTEST_CHECK(d.local_rank == 0);
  DOCTEST_CHECK(d.source == "default");
  DOCTEST_CHECK(d.timeout_s == 300);
}

DOCTEST_TEST_CASE("resolve_dist: torchrun's variables give a TCP rendezvous") {
  FakeEnv env{{{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "10.0.0.7"},
               {"MASTER_PORT", "29511"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"},
               {"TORCHELASTIC_RESTART_COUNT", "2"}}};
  DistFlags flags;
  flags.timeout_s = 5;
  const DistOptions d = resolve_dist(flags, env.lookup());
  DOCTEST_CHECK(d.rank == 1);
  DOCTEST_CHECK(d.world_size == 4);
  DOCTEST_CHECK(d.local_rank == 1);
  DOCTEST_CHECK(d.master_addr == "10.0.0.7");
  DOCTEST_CHECK(d.master_port == 29511);
  DOCTEST_CHECK(d.agent_store);
  DOCTEST_CHECK(d.restart_count == 2);
  DOCTEST_CHECK(d.store_path.empty());
  DOCTEST_CHECK(d.timeout_s == 5);
  DOCTEST_CHECK(d.source == "RANK/WORLD_SIZE");
}

DOCTEST_TEST_CASE("resolve_dist: Slurm's variables are the fallback; RANK/WORLD_SIZE win") {
  FakeEnv env{{{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}, {"MASTER_ADDR", "node1"},
               {"MASTER_PORT", "12345"}}};
  DistOptions d = resolve_dist(DistFlags{}, env.lookup());
  DOCTEST_CHECK(d.rank == 3);
  DOCTEST_CHECK(d.world_size == 8);
  DOCTEST_CHECK(d.local_rank == 1);
  DOCTEST_CHECK(!d.agent_store);
  DOCTEST_CHECK(d.source == "SLURM_PROCID/SLURM_NTASKS");

  env.vars["RANK"] = "0";
  env.vars["WORLD_SIZE"] = "2";
  env.vars["LOCAL_RANK"] = "0";
  d = resolve_dist(DistFlags{}, env.lookup());
  DOCTEST_CHECK(d.rank == 0);
  DOCTEST_CHECK(d.world_size == 2);
  DOCTEST_CHECK(d.local_rank == 0);
}

DOCTEST_TEST_CASE("resolve_dist: flags beat the environment; --dist-store beats MASTER_ADDR") {
  FakeEnv env{{{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}};
  DistFlags flags;
  flags.world_size = 2;
  flags.rank = 0;
  flags.store_path = "/tmp/store";
  const DistOptions d = resolve_dist(flags, env.lookup());
  DOCTEST_CHECK(d.world_size == 2);
  DOCTEST_CHECK(d.rank == 0);
  DOCTEST_CHECK(d.store_path == "/tmp/store");
  DOCTEST_CHECK(d.master_addr.empty());
  DOCTEST_CHECK(d.source == "flags");

  // Flags alone with the address in the environment: TCP store.
  DistFlags only_flags;
  only_flags.world_size = 2;
  only_flags.rank = 1;
  const DistOptions t = resolve_dist(only_flags, env.lookup());
  DOCTEST_CHECK(t.master_addr == "h");
  DOCTEST_CHECK(t.master_port == 1);
  DOCTEST_CHECK(t.rank == 1);
}

DOCTEST_TEST_CASE("resolve_dist: bad launches are usage errors") {
  DistFlags none;
  // Half a pair.
  DOCTEST_CHECK_THROWS_AS(resolve_dist(none, FakeEnv{{{"RANK", "0"}}}.lookup()), kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(resolve_dist(none, FakeEnv{{{"WORLD_SIZE", "2"}}}.lookup()), kalm::UsageError);
  // Not integers.
  DOCTEST_CHECK_THROWS_AS(resolve_dist(none, FakeEnv{{{"RANK", "one"}, {"WORLD_SIZE", "2"}}}.lookup()),
                          kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(resolve_dist(none, FakeEnv{{{"RANK", "0"}, {"WORLD_SIZE", "2x"}}}.lookup()),
                          kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(resolve_dist(none, FakeEnv{{{"LOCAL_RANK", ""}}}.lookup()), kalm::UsageError);
  // Rank outside the world.
  DOCTEST_CHECK_THROWS_AS(resolve_dist(none, FakeEnv{{{"RANK", "2"}, {"WORLD_SIZE", "2"}}}.lookup()),
                          kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(resolve_dist(none, FakeEnv{{{"RANK", "0"}, {"WORLD_SIZE", "0"}}}.lookup()),
                          kalm::UsageError);
  // A world without a rendezvous, or with a bad port.
  try {
    resolve_dist(none, FakeEnv{{{"RANK", "0"}, {"WORLD_SIZE", "2"}}}.lookup());
    DOCTEST_FAIL("no rendezvous accepted");
  } catch (const kalm::UsageError& e) {
    DOCTEST_CHECK(std::string(e.what()).find("MASTER_ADDR") != std::string::npos);
  }
  DOCTEST_CHECK_THROWS_AS(
      resolve_dist(none, FakeEnv{{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}}}
                             .lookup()),
      kalm::UsageError);
  // A non-positive timeout.
  DistFlags zero;
  zero.timeout_s = 0;
  DOCTEST_CHECK_THROWS_AS(resolve_dist(zero, FakeEnv{}.lookup()), kalm::UsageError);
}

DOCTEST_TEST_CASE("resolve_backend: auto picks NCCL for CUDA ranks when built with it, Gloo otherwise") {
  using kalm::train::DistBackend;
  using kalm::train::resolve_backend;
  const torch::Device cpu(torch::kCPU), cuda(torch::kCUDA, 0);
  DOCTEST_CHECK_THROWS_WITH_AS(resolve_backend("mpi", cpu), "--dist-backend must be auto, nccl or gloo, got 'mpi'",
                               kalm::UsageError);
  DOCTEST_CHECK_THROWS_WITH_AS(resolve_backend("nccl", cpu),
                               "--dist-backend nccl needs --device cuda (NCCL runs collectives on GPUs)",
                               kalm::UsageError);
  if (kalm::train::gloo_available()) {
    DOCTEST_CHECK(resolve_backend("auto", cpu) == DistBackend::kGloo);
    DOCTEST_CHECK(resolve_backend("gloo", cuda) == DistBackend::kGloo);  // staged through the host
  } else {
    DOCTEST_CHECK_THROWS_AS(resolve_backend("auto", cpu), kalm::UsageError);
  }
  if (kalm::train::nccl_available()) {
    DOCTEST_CHECK(resolve_backend("auto", cuda) == DistBackend::kNccl);
    DOCTEST_CHECK(resolve_backend("nccl", cuda) == DistBackend::kNccl);
  } else {
    DOCTEST_CHECK_THROWS_AS(resolve_backend("nccl", cuda), kalm::UsageError);
    if (kalm::train::gloo_available()) DOCTEST_CHECK(resolve_backend("auto", cuda) == DistBackend::kGloo);
  }
  DOCTEST_CHECK(kalm::train::backend_name(DistBackend::kNccl) == "nccl");
}

DOCTEST_TEST_CASE("DataParallel: a one-rank group gathers and reduces as the identity; a build without Gloo refuses") {
  const std::string store = std::filesystem::temp_directory_path() /
                            ("kalm_test_store_" + std::to_string(::getpid()));
  std::filesystem::remove(store);
  DistOptions o;
  o.world_size = 1;
  o.rank = 0;
  o.store_path = store;
  o.timeout_s = 30;
  const torch::Device cpu(torch::kCPU);
  if (!kalm::train::gloo_available()) {
    try {
      kalm::train::DataParallel group(o, cpu);
      DOCTEST_FAIL("a build without Gloo made a process group");
    } catch (const kalm::UsageError& e) {
      DOCTEST_CHECK(std::string(e.what()).find("built without data parallelism over Gloo") != std::string::npos);
    }
    return;
  }
  auto exercise = [](kalm::train::DataParallel& group, const torch::Device& device) {
    const auto options = torch::TensorOptions().dtype(torch::kFloat).device(device);
    const auto local = torch::arange(6, options).reshape({2, 3}).requires_grad_(true);
    const auto gathered = group.all_gather_rows(local);
    DOCTEST_CHECK(gathered.device() == device);
    DOCTEST_CHECK(torch::equal(gathered.cpu(), local.detach().cpu()));
    gathered.sum().backward();  // this rank's rows keep their gradient
    DOCTEST_CHECK(torch::equal(local.grad().cpu(), torch::ones({2, 3})));
    // A teacher's scores stay on the host (float64) whatever the rank's device:
    // NCCL, which takes only GPU tensors, gathers them on the GPU and hands them back.
    const auto scores = torch::tensor({0.25, -1.5, 3.0}, torch::kDouble).reshape({1, 3});
    const auto gathered_scores = group.all_gather_rows(scores);
    DOCTEST_CHECK(gathered_scores.device() == torch::Device(torch::kCPU));
    DOCTEST_CHECK(torch::equal(gathered_scores, scores));
    auto p = torch::zeros({2}, options).requires_grad_(true);
    p.mutable_grad() = torch::tensor({1.5f, -2.0f}).to(device);
    group.all_reduce_gradients({p});
    DOCTEST_CHECK(p.grad().device() == device);
    DOCTEST_CHECK(torch::equal(p.grad().cpu(), torch::tensor({1.5f, -2.0f})));
    DOCTEST_CHECK(group.all_max(7) == 7);
    group.barrier();
  };
  {
    kalm::train::DataParallel group(o, cpu);
    DOCTEST_CHECK(group.backend() == kalm::train::DistBackend::kGloo);
    exercise(group, cpu);
  }
  std::filesystem::remove(store);
  // One process needs no rendezvous: an in-memory store.
  DistOptions alone;
  alone.backend = "gloo";
  {
    kalm::train::DataParallel group(alone, cpu);
    exercise(group, cpu);
  }
  // On a GPU machine: the NCCL group, collectives on the device.
  if (kalm::train::nccl_available() && torch::cuda::is_available()) {
    const torch::Device cuda(torch::kCUDA, 0);
    alone.backend = "nccl";
    kalm::train::DataParallel group(alone, cuda);
    DOCTEST_CHECK(group.backend() == kalm::train::DistBackend::kNccl);
    exercise(group, cuda);
  }
}

namespace {

// Runs rank 0's and rank 1's bodies on two threads, each with its own group of
// two over a FileStore (as two processes would); returns each rank's error
// message ("" = none).
std::pair<std::string, std::string> two_ranks(
    const std::string& store, double timeout_s,
    const std::function<void(kalm::train::DataParallel&)>& rank0,
    const std::function<void(kalm::train::DataParallel&)>& rank1) {
  std::filesystem::remove(store);
  std::string errors[2];
  auto run = [&](int rank, const std::function<void(kalm::train::DataParallel&)>& body) {
    try {
      DistOptions o;
      o.world_size = 2;
      o.rank = rank;
      o.store_path = store;
      o.timeout_s = timeout_s;
      kalm::train::DataParallel group(o, torch::Device(torch::kCPU));
      body(group);
    } catch (const std::exception& e) {
      errors[rank] = e.what();
      if (errors[rank].empty()) errors[rank] = "(empty message)";
    }
  };
  std::thread first(run, 0, rank0);
  run(1, rank1);
  first.join();
  std::filesystem::remove(store);
  return {errors[0], errors[1]};
}

}  // namespace

DOCTEST_TEST_CASE("DataParallel::leader_work: the others wait out a write longer than the timeout; failures reach them") {
  if (!kalm::train::gloo_available()) return;  // CPU ranks need Gloo (a GPU-only NCCL build has no CPU group)
  const std::string store = std::filesystem::temp_directory_path() /
                            ("kalm_test_leader_" + std::to_string(::getpid()));
  std::atomic<bool> written{false};
  bool written_when_released = false;
  // Rank 0 works 2.5 s with a 1 s timeout: a barrier (the old checkpoint wait)
  // fails here; the store wait sees rank 0's signs of life and waits.
  auto [e0, e1] = two_ranks(
      store, 1.0,
      [&](kalm::train::DataParallel& group) {
        group.leader_work("wait for rank 0's checkpoint", [&] {
          std::this_thread::sleep_for(std::chrono::milliseconds(2500));
          written = true;
        });
        DOCTEST_CHECK(group.all_max(3) == 5);  // the group still works afterwards
      },
      [&](kalm::train::DataParallel& group) {
        group.leader_work("wait for rank 0's checkpoint", [] { DOCTEST_FAIL("only rank 0 works"); });
        written_when_released = written;
        DOCTEST_CHECK(group.all_max(5) == 5);
      });
  DOCTEST_CHECK(e0 == "");
  DOCTEST_CHECK(e1 == "");
  DOCTEST_CHECK(written_when_released);

  // Rank 0's work fails: rank 0 gets its own error back (same type), rank 1 an
  // error carrying its message, at once rather than at its next collective.
  // Both first finish connecting (a collective): a rank 0 that fails and
  // closes its group while rank 1 is still connecting ends rank 1 in the
  // rendezvous instead (seen under load), which is not what this case tests.
  bool rank0_io_error = false;
  std::tie(e0, e1) = two_ranks(
      store, 5.0,
      [&](kalm::train::DataParallel& group) {
        DOCTEST_CHECK(group.all_max(1) == 2);
        try {
          group.leader_work("wait for rank 0's checkpoint",
                            [] { throw kalm::IoError("out/checkpoint-4: No space left on device"); });
        } catch (const kalm::IoError&) {
          rank0_io_error = true;
          throw;
        }
      },
      [&](kalm::train::DataParallel& group) {
        DOCTEST_CHECK(group.all_max(2) == 2);
        group.leader_work("wait for rank 0's checkpoint", [] {});
      });
  DOCTEST_CHECK(rank0_io_error);
  DOCTEST_CHECK(e0 == "out/checkpoint-4: No space left on device");
  DOCTEST_CHECK(e1 ==
                "data parallel wait for rank 0's checkpoint failed on rank 1 of 2: rank 0 failed: "
                "out/checkpoint-4: No space left on device");

  // Rank 0 never arrives: rank 1 gives up after the timeout.
  std::tie(e0, e1) = two_ranks(
      store, 1.0, [](kalm::train::DataParallel&) { std::this_thread::sleep_for(std::chrono::milliseconds(2000)); },
      [](kalm::train::DataParallel& group) { group.leader_work("wait for rank 0's checkpoint", [] {}); });
  DOCTEST_CHECK(e0 == "");
  DOCTEST_CHECK(e1.find("data parallel wait for rank 0's checkpoint failed on rank 1 of 2: a peer may have died or "
                        "stalled (--dist-timeout 1 s)") == 0);

  // Rank 0 arrived (its first sign of life is in the store) and then froze:
  // written here by hand, with no heartbeat after it.
  std::tie(e0, e1) = two_ranks(
      store, 1.0,
      [&](kalm::train::DataParallel&) {
        c10d::FileStore raw(store, 1);
        raw.set("kalm/leader_work/0/alive", std::vector<std::uint8_t>{'0'});
        std::this_thread::sleep_for(std::chrono::milliseconds(3000));
      },
      [](kalm::train::DataParallel& group) { group.leader_work("wait for rank 0's checkpoint", [] {}); });
  DOCTEST_CHECK(e0 == "");
  DOCTEST_CHECK(e1 ==
                "data parallel wait for rank 0's checkpoint failed on rank 1 of 2: rank 0 showed no sign of life for "
                "--dist-timeout 1 s (it died, hangs or is stopped)");
}

DOCTEST_TEST_CASE("GradientBuckets: buckets launch in order while the armed backward runs; sums written back") {
  if (!kalm::train::data_parallel_available()) return;  // the refusal is checked above
  auto run = [](const torch::Device& device, const std::string& backend) {
    DistOptions alone;
    alone.backend = backend;
    kalm::train::DataParallel group(alone, device);
    const auto options = torch::TensorOptions().dtype(torch::kFloat).device(device);
    // A chain x -> w1 -> w2 -> w3: backward produces w3's gradient first.
    torch::manual_seed(3);
    std::vector<torch::Tensor> params;
    for (int i = 0; i < 3; ++i) params.push_back(torch::randn({4, 4}, options).requires_grad_(true));
    const auto x = torch::randn({2, 4}, options);
    auto loss_of = [&](const std::vector<torch::Tensor>& w) {
      return x.matmul(w[0]).tanh().matmul(w[1]).tanh().matmul(w[2]).pow(2).sum();
    };
    std::vector<torch::Tensor> expected;
    {
      std::vector<torch::Tensor> copies;
      for (const auto& p : params) copies.push_back(p.detach().clone().requires_grad_(true));
      loss_of(copies).backward();
      loss_of(copies).backward();  // two backward passes: the step's gradients accumulate
      for (const auto& c : copies) expected.push_back(c.grad().clone());
    }
    // 64 bytes per bucket: one 4x4 float parameter each, three buckets.
    kalm::train::GradientBuckets buckets(group, params, 64.0 / (1024.0 * 1024.0));
    loss_of(params).backward();  // not armed: an earlier micro-batch
    buckets.arm();
    loss_of(params).backward();
    buckets.finish();
    auto counts = buckets.last_counts();
    DOCTEST_CHECK(counts.buckets == 3);
    DOCTEST_CHECK(counts.launched_in_backward == 3);
    DOCTEST_CHECK(counts.launched_at_finish == 0);
    for (int i = 0; i < 3; ++i) DOCTEST_CHECK(torch::allclose(params[i].grad().cpu(), expected[i].cpu(), 0, 0));

    // Bucket 0 (the last-registered parameter) gets no gradient from the armed
    // backward: no later bucket may go first (every rank must issue the same
    // collectives in the same order), so all launch at finish.
    auto unused = torch::zeros({4}, options).requires_grad_(true);
    unused.mutable_grad() = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).to(device);
    std::vector<torch::Tensor> with_unused = params;
    with_unused.push_back(unused);
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    kalm::train::GradientBuckets blocked(group, with_unused, 64.0 / (1024.0 * 1024.0));
    blocked.arm();
    loss_of(params).backward();
    blocked.finish();
    counts = blocked.last_counts();
    DOCTEST_CHECK(counts.buckets == 4);
    DOCTEST_CHECK(counts.launched_in_backward == 0);
    DOCTEST_CHECK(counts.launched_at_finish == 4);
    DOCTEST_CHECK(torch::equal(unused.grad().cpu(), torch::tensor({1.0f, 2.0f, 3.0f, 4.0f})));

    // finish() without arm(): every bucket reduced there.
    blocked.finish();
    DOCTEST_CHECK(blocked.last_counts().launched_at_finish == 4);
    DOCTEST_CHECK(torch::equal(unused.grad().cpu(), torch::tensor({1.0f, 2.0f, 3.0f, 4.0f})));

    // One large bucket: launched by the hook of its last parameter.
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    kalm::train::GradientBuckets one(group, params, 25);
    one.arm();
    loss_of(params).backward();
    one.finish();
    counts = one.last_counts();
    DOCTEST_CHECK(counts.buckets == 1);
    DOCTEST_CHECK(counts.launched_in_backward == 1);
  };
  if (kalm::train::gloo_available()) run(torch::Device(torch::kCPU), "gloo");
  if (kalm::train::nccl_available() && torch::cuda::is_available()) run(torch::Device(torch::kCUDA, 0), "nccl");
}
