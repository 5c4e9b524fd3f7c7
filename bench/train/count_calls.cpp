// bench/train helper: kalm-train itself, with LibTorch's RecordFunction
// counting what costs a GPU its throughput, on any device:
//   item_reads      aten::_local_scalar_dense: every .item() / scalar read-back;
//                   on a GPU each one waits for the device (a host sync)
//   model_calls     aten::embedding: one per model pass (one lookup per call)
//   device_copies   aten::copy_ between different devices (0 on a CPU run)
//
//   kalm-bench-train-calls [kalm-train flags...]
//
// Prints the three totals after the run; bench/train/run.sh runs it at two step
// counts and reports the difference per step, which leaves set-up out.
#include <ATen/record_function.h>

#include <atomic>
#include <cstdio>
#include <string_view>

#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/train/train_command.h"

namespace {
std::atomic<long long> item_reads{0}, model_calls{0}, device_copies{0};

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& fn) {
  const std::string_view name = fn.name();
  if (name == "aten::_local_scalar_dense") {
    ++item_reads;
  } else if (name == "aten::embedding") {
    ++model_calls;
  } else if (name == "aten::copy_") {
    const auto inputs = fn.inputs();
    if (inputs.size() >= 2 && inputs[0].isTensor() && inputs[1].isTensor() &&
        inputs[0].toTensor().device() != inputs[1].toTensor().device())
      ++device_copies;
  }
  return nullptr;
}
}  // namespace

int main(int argc, char** argv) {
  kalm::train::block_stop_signals();
  at::addGlobalCallback(at::RecordFunctionCallback(on_enter).needsInputs(true).scopes({at::RecordScope::FUNCTION}));
  kalm::cli::Tool tool("kalm-train", "kalm-train with call counters (bench/train)");
  kalm::train::TrainFlags flags;
  kalm::train::add_train_flags(tool, flags, /*distill=*/false);
  int status = 0;
  const int rc = tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    status = kalm::train::run_train_command(flags, tool, /*distill=*/false);
  });
  std::printf("item_reads %lld\nmodel_calls %lld\ndevice_copies %lld\n", item_reads.load(), model_calls.load(),
              device_copies.load());
  return rc != 0 ? rc : status;
}
