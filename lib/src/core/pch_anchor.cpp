// Anchor translation unit for the shared precompiled header (<torch/torch.h>).
// Every torch target reuses the PCH built for this object library.
namespace kalm::detail {
int pch_anchor() { return 0; }
}  // namespace kalm::detail
