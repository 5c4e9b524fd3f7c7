#include "kalm/model/tensor_io.h"

#include <algorithm>
#include <cstring>

#include "kalm/error.h"
#include "kalm/io/quantize.h"

namespace kalm::model {
namespace {

std::vector<std::int64_t> sizes_of(const torch::Tensor& t) {
  return std::vector<std::int64_t>(t.sizes().begin(), t.sizes().end());
}

std::string tensor_context(const std::string& file, std::string_view name) {
  return display_name(file) + ": tensor '" + std::string(name) + "'";
}

}  // namespace

torch::ScalarType to_torch_dtype(io::DType dtype) noexcept {
  switch (dtype) {
    case io::DType::F64:
      return torch::kDouble;
    case io::DType::F32:
      return torch::kFloat;
    case io::DType::F16:
      return torch::kHalf;
    case io::DType::BF16:
      return torch::kBFloat16;
    case io::DType::I64:
      return torch::kLong;
    case io::DType::I32:
      return torch::kInt;
    case io::DType::I16:
      return torch::kShort;
    case io::DType::I8:
      return torch::kChar;
    case io::DType::U8:
      return torch::kByte;
    case io::DType::BOOL:
      return torch::kBool;
  }
  return torch::kByte;
}

std::optional<io::DType> try_from_torch_dtype(torch::ScalarType dtype) noexcept {
  for (io::DType d : io::kAllDTypes)
    if (to_torch_dtype(d) == dtype) return d;
  return std::nullopt;
}

io::DType from_torch_dtype(torch::ScalarType dtype, const std::string& context) {
  if (auto d = try_from_torch_dtype(dtype)) return *d;
  throw FormatError(context + ": dtype " + std::string(c10::toString(dtype)) +
                    " cannot be stored in safetensors (supported: float64 float32 float16 "
                    "bfloat16 int64 int32 int16 int8 uint8 bool)");
}

torch::Tensor tensor_from(const io::SafetensorsFile& file, const io::TensorInfo& info) {
  const auto options = torch::TensorOptions().dtype(to_torch_dtype(info.dtype)).device(torch::kCPU);
  if (info.nbytes() == 0) return torch::empty(info.shape, options);
  const std::uint8_t* data = file.data(info);
  if (info.dtype == io::DType::BOOL) {
    // torch assumes bool bytes are 0 or 1; anything else is undefined there.
    const std::uint8_t* bad =
        std::find_if(data, data + info.nbytes(), [](std::uint8_t b) { return b > 1; });
    if (bad != data + info.nbytes())
      throw FormatError(tensor_context(file.path(), info.name) + ": BOOL byte " +
                        std::to_string(*bad) + " at element " + std::to_string(bad - data) +
                        " is not 0 or 1");
  }
  if (reinterpret_cast<std::uintptr_t>(data) % io::dtype_size(info.dtype) != 0) {
    torch::Tensor copy = torch::empty(info.shape, options);
    std::memcpy(copy.data_ptr(), data, info.nbytes());
    return copy;
  }
  // from_blob wants void*; the mapping is copy-on-write, so even a write through
  // the tensor is safe for the file (see the header).
  std::shared_ptr<const void> keep = file.keepalive();
  return torch::from_blob(
      const_cast<std::uint8_t*>(data), info.shape, [keep](void*) mutable { keep.reset(); },
      options);
}

torch::Tensor tensor_from(const io::SafetensorsFile& file, std::string_view name) {
  return tensor_from(file, file.at(name));
}

torch::Tensor tensor_from(const io::CheckpointReader& checkpoint, std::string_view name) {
  return tensor_from(checkpoint.file_of(name), checkpoint.info(name));
}

torch::Tensor tensor_copy(const io::SafetensorsFile& file, std::string_view name) {
  return tensor_from(file, name).clone(at::MemoryFormat::Contiguous);
}

torch::Tensor tensor_copy(const io::CheckpointReader& checkpoint, std::string_view name) {
  return tensor_from(checkpoint, name).clone(at::MemoryFormat::Contiguous);
}

std::vector<std::pair<std::string, torch::Tensor>> load_all(const io::SafetensorsFile& file) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.reserve(file.tensors().size());
  for (const auto& info : file.tensors()) out.emplace_back(info.name, tensor_from(file, info));
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> load_all(
    const io::CheckpointReader& checkpoint) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.reserve(checkpoint.size());
  for (const auto& name : checkpoint.names()) out.emplace_back(name, tensor_from(checkpoint, name));
  return out;
}

namespace {
// A kalm-embed --quantize output read back as float32 (kalm/io/quantize.h: int8
// and uint8 dequantized with the file's ranges, binary as +1/-1 per dimension).
torch::Tensor load_quantized(const io::SafetensorsFile& file, const io::TensorInfo& info, const std::string& name) {
  const auto kind = file.metadata_value("quantization");
  if (!kind)
    throw FormatError(name + ": tensor 'embeddings' is " + std::string(io::dtype_name(info.dtype)) +
                      " but the file has no 'quantization' metadata saying how to read it");
  io::Quantization q;
  try {
    q = io::parse_quantization(*kind, "metadata 'quantization'");
  } catch (const UsageError& e) {
    throw FormatError(name + ": " + e.what());
  }
  if (q == io::Quantization::None) throw FormatError(name + ": metadata 'quantization' is none but 'embeddings' is " +
                                                     std::string(io::dtype_name(info.dtype)));
  const bool is_signed = q == io::Quantization::Int8 || q == io::Quantization::Binary;
  if ((info.dtype == io::DType::I8) != is_signed)
    throw FormatError(name + ": metadata 'quantization' " + *kind + " does not match the " +
                      std::string(io::dtype_name(info.dtype)) + " tensor 'embeddings'");
  const std::int64_t rows = info.shape[0], cols = info.shape[1];
  std::int64_t dim = cols;
  std::vector<float> ranges;
  if (io::needs_ranges(q)) {
    ranges = io::read_quantization_ranges(file.path(), dim);
  } else {
    const auto d = file.metadata_value("dim");
    std::int64_t parsed = -1;
    if (d) try { parsed = std::stoll(*d); } catch (const std::exception&) {}
    if (parsed <= 0 || (parsed + 7) / 8 != cols)
      throw FormatError(name + ": metadata 'dim' must give the embedding dimension of the " + std::to_string(cols) +
                        " packed bytes per row of a binary 'embeddings' tensor");
    dim = parsed;
  }
  std::vector<float> values = io::dequantize(file.data(info), rows, dim, q, ranges);
  torch::Tensor t = torch::empty({rows, dim}, torch::kFloat32);
  if (!values.empty()) std::memcpy(t.data_ptr<float>(), values.data(), values.size() * sizeof(float));
  return t;
}
}  // namespace

torch::Tensor load_embedding_matrix(const std::string& path, std::int64_t expected_rows, const std::string& what) {
  const auto file = io::SafetensorsFile::open(path);
  const io::TensorInfo* info = file.find("embeddings");
  const std::string name = display_name(path);
  if (!info) throw FormatError(name + ": no tensor named 'embeddings' (a [rows, dim] matrix, as kalm-embed writes)");
  if (info->shape.size() != 2)
    throw FormatError(name + ": tensor 'embeddings' must be 2-D [rows, dim], has " +
                      std::to_string(info->shape.size()) + " dimensions");
  if (expected_rows >= 0 && info->shape[0] != expected_rows)
    throw FormatError(name + ": tensor 'embeddings' has " + std::to_string(info->shape[0]) + " rows, expected " +
                      std::to_string(expected_rows) + (what.empty() ? "" : ": " + what));
  if (info->dtype == io::DType::I8 || info->dtype == io::DType::U8) return load_quantized(file, *info, name);
  if (info->dtype != io::DType::F32 && info->dtype != io::DType::F16 && info->dtype != io::DType::BF16 &&
      info->dtype != io::DType::F64)
    throw FormatError(name + ": tensor 'embeddings' must be F32, F16, BF16 or F64 (or I8/U8 written by "
                      "kalm-embed --quantize), not " + std::string(io::dtype_name(info->dtype)));
  const io::NonFiniteCount bad = io::count_non_finite(info->dtype, file.data(*info), info->nbytes());
  if (bad.count > 0) {
    const std::int64_t dim = std::max<std::int64_t>(info->shape[1], 1);
    throw FormatError(name + ": row " + std::to_string(static_cast<std::int64_t>(bad.first) / dim) +
                      " of tensor 'embeddings' is NaN or infinite (" + io::describe_non_finite(bad) + ")");
  }
  torch::Tensor t = tensor_from(file, *info);
  return t.scalar_type() == torch::kFloat32 ? t : t.to(torch::kFloat32);
}

void add_tensors(io::SafetensorsWriter& writer,
                 const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                 std::vector<torch::Tensor>& keep) {
  keep.reserve(keep.size() + tensors.size());
  for (const auto& [name, tensor] : tensors) {
    const std::string context = "safetensors writer: tensor '" + name + "'";
    if (!tensor.defined()) throw FormatError(context + ": undefined tensor");
    if (tensor.layout() != torch::kStrided)
      throw FormatError(context + ": only dense (strided) tensors can be saved");
    const io::DType dtype = from_torch_dtype(tensor.scalar_type(), context);
    // resolve_*: lazily conjugated/negated views hold other bytes than they show.
    torch::Tensor cpu = tensor.detach().to(torch::kCPU).contiguous().resolve_conj().resolve_neg();
    const std::uint64_t nbytes = static_cast<std::uint64_t>(cpu.numel()) * cpu.element_size();
    // kalm never writes NaN or infinity into a checkpoint: such a file would
    // load and silently produce NaN everywhere (load_model refuses it too).
    const io::NonFiniteCount bad =
        io::count_non_finite(dtype, static_cast<const std::uint8_t*>(nbytes ? cpu.data_ptr() : nullptr), nbytes);
    if (bad.count > 0) throw FormatError(context + " has " + io::describe_non_finite(bad) + "; not written");
    writer.add(name, dtype, sizes_of(cpu), nbytes ? cpu.data_ptr() : nullptr, nbytes);
    keep.push_back(std::move(cpu));
  }
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  io::SafetensorsWriter writer;
  std::vector<torch::Tensor> keep;
  add_tensors(writer, tensors, keep);
  writer.set_metadata(metadata);
  writer.write(path);
}

std::vector<std::string> save_checkpoint(
    const std::string& dir, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
    const std::map<std::string, std::string>& metadata, std::uint64_t max_shard_bytes) {
  io::SafetensorsWriter writer;
  std::vector<torch::Tensor> keep;
  add_tensors(writer, tensors, keep);
  writer.set_metadata(metadata);
  return io::write_checkpoint(dir, writer, max_shard_bytes);
}

}  // namespace kalm::model
