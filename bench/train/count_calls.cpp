// bench/train helper: kalm-train itself, with LibTorch's RecordFunction
// counting what costs a GPU its throughput, on any device:
//   item_reads      aten::_local_scalar_dense: every .item() / scalar read-back;
//                   on a GPU each one waits for the device (a host sync).
//                   Those inside aten::_fused_adamw_ are counted apart
//                   (optimizer_step_reads): LibTorch's CPU kernel reads each
//                   parameter's step count with .item(); the CUDA kernel
//                   reads them on the device, so they are no sync there
//   model_calls     kalm::encoder_call (forward_from_embeddings): one per call
//   table_lookups   aten::embedding: lookups in the token-embedding table
//   device_copies   aten::copy_ between different devices (0 on a CPU run)
//
//   kalm-bench-train-calls [kalm-train flags...]
//
// Prints the totals after the run; bench/train/run.sh runs it at two step
// counts and reports the difference per step, which leaves set-up out.
#include <ATen/record_function.h>

#include <atomic>
#include <cstdio>
#include <string_view>

#include "kalm/cli/tool.h"
#include "kalm/core/runtime.h"
#include "kalm/train/train_command.h"

namespace {
std::atomic<long long> item_reads{0}, optimizer_step_reads{0}, model_calls{0}, table_lookups{0}, device_copies{0};
thread_local int inside_fused_adamw = 0;

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& fn) {
  const std::string_view name = fn.name();
  if (name == "aten::_local_scalar_dense") {
    ++(inside_fused_adamw > 0 ? optimizer_step_reads : item_reads);
  } else if (name == "aten::_fused_adamw_") {
    ++inside_fused_adamw;
  } else if (name == "kalm::encoder_call") {
    ++model_calls;
  } else if (name == "aten::embedding") {
    ++table_lookups;
  } else if (name == "aten::copy_") {
    const auto inputs = fn.inputs();
    if (inputs.size() >= 2 && inputs[0].isTensor() && inputs[1].isTensor() &&
        inputs[0].toTensor().device() != inputs[1].toTensor().device())
      ++device_copies;
  }
  return nullptr;
}

void on_exit(const at::RecordFunction& fn, at::ObserverContext*) {
  if (fn.name() == std::string_view("aten::_fused_adamw_")) --inside_fused_adamw;
}
}  // namespace

int main(int argc, char** argv) {
  kalm::train::block_stop_signals();
  at::addGlobalCallback(at::RecordFunctionCallback(on_enter, on_exit)
                            .needsInputs(true)
                            .scopes({at::RecordScope::FUNCTION, at::RecordScope::USER_SCOPE}));
  kalm::cli::Tool tool("kalm-train", "kalm-train with call counters (bench/train)");
  kalm::train::TrainFlags flags;
  kalm::train::add_train_flags(tool, flags, /*distill=*/false);
  int status = 0;
  const int rc = tool.run(argc, argv, [&] {
    kalm::core::configure_runtime(tool.common());
    status = kalm::train::run_train_command(flags, tool, /*distill=*/false);
  });
  std::printf("item_reads %lld\noptimizer_step_reads %lld\nmodel_calls %lld\ntable_lookups %lld\ndevice_copies %lld\n",
              item_reads.load(), optimizer_step_reads.load(), model_calls.load(), table_lookups.load(),
              device_copies.load());
  return rc != 0 ? rc : status;
}
