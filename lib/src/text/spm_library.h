#pragma once
// Access to libkalm_spm (lib/spm_shim/spm_shim.h explains why sentencepiece lives
// behind a dlopen()ed shim). The shim is looked up, in order, at:
//   $KALM_SPM_LIBRARY, <exe dir>/../lib/libkalm_spm.so (build tree),
//   <exe dir>/../lib/kalm/libkalm_spm.so and <exe dir>/../<libdir>/kalm/ (installed),
//   the build tree's absolute path compiled in.
// Loaded once per process, thread-safe. Throws ModelError when it cannot be found.

#include "../../spm_shim/spm_shim.h"

namespace kalm::text::detail {

struct SpmLibrary {
  decltype(&kalm_spm_load) load;
  decltype(&kalm_spm_free) free;
  decltype(&kalm_spm_free_buffer) free_buffer;
  decltype(&kalm_spm_encode) encode;
  decltype(&kalm_spm_decode) decode;
  decltype(&kalm_spm_piece_size) piece_size;
  decltype(&kalm_spm_piece_to_id) piece_to_id;
  decltype(&kalm_spm_id_to_piece) id_to_piece;
  decltype(&kalm_spm_is_control) is_control;
  decltype(&kalm_spm_special_ids) special_ids;
  decltype(&kalm_spm_train) train;
};

const SpmLibrary& spm_library();

}  // namespace kalm::text::detail
