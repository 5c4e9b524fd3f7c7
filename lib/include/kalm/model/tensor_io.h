#pragma once
// LibTorch <-> safetensors: torch::Tensor views of safetensors entries and
// safetensors files / model directories from torch::Tensor.
//
// Reading is zero-copy: tensor_from() wraps the mapped bytes with
// torch::from_blob and a deleter that holds the mapping, so the tensor stays
// valid after the SafetensorsFile / CheckpointReader is gone. Such a tensor is
// a read-mostly view: it shares memory with every other tensor taken from the
// same file, so write to it only if nothing else uses that entry. (The mapping
// is private copy-on-write, so a write never reaches the file and never
// faults.) For an independent tensor use tensor_copy(), or
// tensor_from(...).to(dtype) with a different dtype. Exceptions to zero-copy,
// all copied instead: zero-size tensors, data not aligned to the element size
// (files from other writers may pack tensors at any offset).
//
// dtype mapping (io::DType <-> torch): F64 kDouble, F32 kFloat, F16 kHalf,
// BF16 kBFloat16, I64 kLong, I32 kInt, I16 kShort, I8 kChar, U8 kByte,
// BOOL kBool. Any other torch dtype cannot be saved (FormatError).
//
// Thread safety: the functions are reentrant; tensors from one file may be
// created from many threads at once.

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kalm/io/safetensors.h"

namespace kalm::model {

torch::ScalarType to_torch_dtype(io::DType dtype) noexcept;
// nullopt for torch dtypes safetensors files from kalm cannot hold.
std::optional<io::DType> try_from_torch_dtype(torch::ScalarType dtype) noexcept;
// Throws FormatError "<context>: dtype X cannot be stored in safetensors".
io::DType from_torch_dtype(torch::ScalarType dtype, const std::string& context);

// A CPU tensor of info.shape and the mapped dtype viewing the file's bytes
// (see above). `info` must come from `file`. A BOOL tensor is checked to hold
// only 0/1 bytes (anything else would be undefined in torch): FormatError
// naming the file and the tensor.
torch::Tensor tensor_from(const io::SafetensorsFile& file, const io::TensorInfo& info);
// By name; FormatError naming file and tensor when absent.
torch::Tensor tensor_from(const io::SafetensorsFile& file, std::string_view name);
// From a (possibly sharded) model directory; ModelError when absent.
torch::Tensor tensor_from(const io::CheckpointReader& checkpoint, std::string_view name);

// As tensor_from, but an owned contiguous copy: safe to modify, independent of
// the file.
torch::Tensor tensor_copy(const io::SafetensorsFile& file, std::string_view name);
torch::Tensor tensor_copy(const io::CheckpointReader& checkpoint, std::string_view name);

// Every tensor of the file / checkpoint (zero-copy), sorted by name.
std::vector<std::pair<std::string, torch::Tensor>> load_all(const io::SafetensorsFile& file);
std::vector<std::pair<std::string, torch::Tensor>> load_all(const io::CheckpointReader& checkpoint);

// The embedding matrix of a safetensors file as kalm-embed writes it (tensor
// "embeddings", [rows, dim], f32/f16/bf16/f64), as f32. FormatError naming the
// file for a missing or malformed tensor, a row count other than
// `expected_rows` (when >= 0; `what` says what the rows are), or a NaN or
// infinite value (naming its row, 0-based: the record's position).
torch::Tensor load_embedding_matrix(const std::string& path, std::int64_t expected_rows = -1,
                                    const std::string& what = "");

// Queues `tensors` on a writer: each is detached, moved to the CPU and made
// contiguous; those copies are kept in `keep` (the writer borrows their bytes,
// so `keep` must outlive the write). Throws FormatError naming the tensor for
// an undefined or sparse tensor, an unsupported dtype, or a bad/duplicate name.
void add_tensors(io::SafetensorsWriter& writer,
                 const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                 std::vector<torch::Tensor>& keep);

// Writes one safetensors file atomically ("-" = stdout); the header follows the
// reference library's layout (see kalm/io/safetensors.h). For a model
// directory that transformers must load, use save_checkpoint instead (it adds
// the "format": "pt" metadata transformers requires). Throws FormatError (bad
// tensors, see add_tensors) or IoError; nothing is left behind on failure.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Writes a transformers-compatible model.safetensors, or shards + index when
// larger than max_shard_bytes (see io::write_checkpoint). Returns the files
// written, relative to `dir`.
std::vector<std::string> save_checkpoint(
    const std::string& dir, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
    const std::map<std::string, std::string>& metadata = {},
    std::uint64_t max_shard_bytes = io::kDefaultMaxShardBytes);

}  // namespace kalm::model
