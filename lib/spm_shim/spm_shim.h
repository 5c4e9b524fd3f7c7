#pragma once
// C interface of libkalm_spm, the shim around the sentencepiece library.
//
// Why a shim: Debian's libsentencepiece bundles protobuf 3.14 and exports its
// symbols; LibTorch loads the system libprotobuf 3.21. In one global symbol
// scope the two interpose and the process crashes at start-up. kalm therefore
// never links sentencepiece: it dlopen()s this shim with RTLD_LOCAL |
// RTLD_DEEPBIND (lib/src/text/spm_library.cpp), so sentencepiece binds to its
// own protobuf and LibTorch's stays untouched. Only plain C types cross.
//
// Memory returned through `char**` / `int**` is malloc'd: free it with
// kalm_spm_free_buffer. Error texts go to `err` (NUL-terminated, truncated).
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef KALM_SPM_EXPORT
#define KALM_SPM_EXPORT
#endif

#define KALM_SPM_ABI_VERSION 1
KALM_SPM_EXPORT int kalm_spm_abi_version(void);

// A processor from a serialized ModelProto; NULL on failure.
KALM_SPM_EXPORT void* kalm_spm_load(const char* model, size_t model_len, char* err, size_t err_len);
KALM_SPM_EXPORT void kalm_spm_free(void* processor);
KALM_SPM_EXPORT void kalm_spm_free_buffer(void* buffer);

// 0 on success.
KALM_SPM_EXPORT int kalm_spm_encode(const void* processor, const char* text, size_t text_len, int** ids, size_t* n_ids,
                    char* err, size_t err_len);
KALM_SPM_EXPORT int kalm_spm_decode(const void* processor, const int* ids, size_t n_ids, char** text, size_t* text_len,
                    char* err, size_t err_len);
KALM_SPM_EXPORT int kalm_spm_piece_size(const void* processor);
KALM_SPM_EXPORT int kalm_spm_piece_to_id(const void* processor, const char* piece, size_t piece_len);
// 0 on success; *piece is malloc'd.
KALM_SPM_EXPORT int kalm_spm_id_to_piece(const void* processor, int id, char** piece, size_t* piece_len);
KALM_SPM_EXPORT int kalm_spm_is_control(const void* processor, int id);
// bos, eos, pad, unk ids (-1 when absent).
KALM_SPM_EXPORT void kalm_spm_special_ids(const void* processor, int out[4]);

// Trains on texts with trainer flags given as key/value pairs; *model receives the
// serialized ModelProto. 0 on success.
KALM_SPM_EXPORT int kalm_spm_train(const char* const* texts, const size_t* text_lens, size_t n_texts, const char* const* keys,
                   const char* const* values, size_t n_args, unsigned int seed, char** model, size_t* model_len,
                   char* err, size_t err_len);

#ifdef __cplusplus
}
#endif
