#include <doctest/doctest.h>
#include <torch/torch.h>

#include <string>

#include "kalm/error.h"
#include "kalm/model/device.h"

using kalm::model::Autocast;
using kalm::model::device_for_local_rank;
using kalm::model::parse_device;

DOCTEST_TEST_CASE("device: parse_device accepts cpu and refuses other names") {
  DOCTEST_CHECK(parse_device("cpu") == torch::Device(torch::kCPU));
  for (const std::string bad : {"", "gpu", "tpu", "cpu:1", "cuda:x", "cuda:-1", "mps", "CUDA"}) {
    DOCTEST_CAPTURE(bad);
    try {
      parse_device(bad);
      DOCTEST_FAIL("accepted");
    } catch (const kalm::UsageError& e) {
      DOCTEST_CHECK(std::string(e.what()).find("--device wants cpu, cuda or cuda:N") != std::string::npos);
    }
  }
}

DOCTEST_TEST_CASE("device: CUDA is refused with the reason when absent, checked against the GPU count when present") {
  if (!torch::cuda::is_available()) {
    try {
      parse_device("cuda");
      DOCTEST_FAIL("accepted");
    } catch (const kalm::UsageError& e) {
      DOCTEST_CHECK(std::string(e.what()) ==
                    "--device cuda: this build of LibTorch has no CUDA, or no GPU is visible");
    }
    DOCTEST_CHECK_THROWS_AS(parse_device("cuda:0"), kalm::UsageError);
    // Plain "cuda" under a launcher: LOCAL_RANK would pick the GPU, and there is none.
    DOCTEST_CHECK_THROWS_AS(device_for_local_rank(torch::Device(torch::kCUDA), 0), kalm::UsageError);
    return;
  }
  const auto count = static_cast<int>(torch::cuda::device_count());
  DOCTEST_CHECK(parse_device("cuda") == torch::Device(torch::kCUDA));
  DOCTEST_CHECK(parse_device("cuda:0") == torch::Device(torch::kCUDA, 0));
  DOCTEST_CHECK_THROWS_AS(parse_device("cuda:" + std::to_string(count)), kalm::UsageError);
  DOCTEST_CHECK(device_for_local_rank(torch::Device(torch::kCUDA), count - 1) ==
                torch::Device(torch::kCUDA, static_cast<torch::DeviceIndex>(count - 1)));
  if (count > 1) {
    DOCTEST_CHECK_THROWS_AS(device_for_local_rank(torch::Device(torch::kCUDA), count), kalm::UsageError);
  } else {  // one visible GPU is every local rank's (a launcher isolating GPUs per task)
    DOCTEST_CHECK(device_for_local_rank(torch::Device(torch::kCUDA), 3) == torch::Device(torch::kCUDA, 0));
  }
}

DOCTEST_TEST_CASE("device: device_for_local_rank leaves the CPU and indexed GPUs alone") {
  DOCTEST_CHECK(device_for_local_rank(torch::Device(torch::kCPU), 3) == torch::Device(torch::kCPU));
  // An explicit index wins over LOCAL_RANK (no GPU is needed to say so).
  DOCTEST_CHECK(device_for_local_rank(torch::Device(torch::kCUDA, 1), 0) == torch::Device(torch::kCUDA, 1));
}

DOCTEST_TEST_CASE("device: Autocast runs matmuls in bfloat16 on the CPU, nests, and restores") {
  const auto a = torch::rand({4, 8});
  const auto b = torch::rand({8, 3});
  DOCTEST_CHECK((torch::mm(a, b).scalar_type() == torch::kFloat));
  {
    Autocast outer(torch::Device(torch::kCPU), true);
    DOCTEST_CHECK((torch::mm(a, b).scalar_type() == torch::kBFloat16));
    {
      Autocast inner(torch::Device(torch::kCPU), true);
      DOCTEST_CHECK((torch::mm(a, b).scalar_type() == torch::kBFloat16));
      Autocast off(torch::Device(torch::kCPU), false);  // a disabled scope changes nothing
      DOCTEST_CHECK((torch::mm(a, b).scalar_type() == torch::kBFloat16));
    }
    DOCTEST_CHECK((torch::mm(a, b).scalar_type() == torch::kBFloat16));  // the outer scope still holds
    // Autocast leaves non-listed ops in float32.
    DOCTEST_CHECK((a.sum().scalar_type() == torch::kFloat));
  }
  DOCTEST_CHECK((torch::mm(a, b).scalar_type() == torch::kFloat));
  {
    Autocast disabled(torch::Device(torch::kCPU), false);
    DOCTEST_CHECK((torch::mm(a, b).scalar_type() == torch::kFloat));
  }
}

DOCTEST_TEST_CASE("device: Autocast on CUDA (GPU machines only)") {
  if (!torch::cuda::is_available()) return;
  const auto a = torch::rand({4, 8}, torch::Device(torch::kCUDA));
  const auto b = torch::rand({8, 3}, torch::Device(torch::kCUDA));
  {
    Autocast on(torch::Device(torch::kCUDA), true);
    DOCTEST_CHECK((torch::mm(a, b).scalar_type() == torch::kBFloat16));
    // CPU autocast is a separate state: a CPU matmul stays float32.
    DOCTEST_CHECK((torch::mm(a.cpu(), b.cpu()).scalar_type() == torch::kFloat));
  }
  DOCTEST_CHECK((torch::mm(a, b).scalar_type() == torch::kFloat));
}
