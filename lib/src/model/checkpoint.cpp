#include "kalm/model/checkpoint.h"

#include <filesystem>
#include <map>

#include "kalm/error.h"
#include "kalm/io/atomic_file.h"
#include "kalm/io/safetensors.h"
#include "kalm/model/tensor_io.h"

namespace kalm::model {

namespace fs = std::filesystem;

namespace {

// Where transformers' classes put the base model's tensors.
constexpr const char* kPrefixes[] = {"", "model.", "language_model.model.", "model.language_model."};
// Tensors of the base model live under these roots (after the prefix).
constexpr const char* kModelRoots[] = {"embed_tokens.", "layers.", "norm."};

std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string torch_dtype_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kHalf: return "float16";
    case torch::kDouble: return "float64";
    default: throw UsageError(std::string("cannot save weights as ") + c10::toString(dtype));
  }
}

}  // namespace

LoadedModel load_model(const std::string& dir, const LoadOptions& options) {
  if (options.dtype != torch::kFloat && options.dtype != torch::kBFloat16)
    throw UsageError(std::string("unsupported compute dtype ") + c10::toString(options.dtype) +
                     " (choose f32 or bf16)");
  const fs::path root(dir);
  if (!fs::is_directory(root)) throw ModelError(display_name(dir) + ": not a model directory");
  const fs::path config_path = root / "config.json";
  if (!fs::exists(config_path))
    throw ModelError(display_name(config_path.string()) + ": no config.json in the model directory");

  LoadedModel out;
  out.dir = dir;
  out.config = parse_config_file(config_path.string());
  out.sentence_transformers = read_sentence_transformers(dir);

  const io::CheckpointReader reader = io::CheckpointReader::open(dir);
  const std::string weights = reader.sharded() ? (root / io::kWeightsIndexName).string()
                                               : reader.files().at(0).path();
  bool found = false;
  for (const char* prefix : kPrefixes) {
    if (reader.contains(std::string(prefix) + "embed_tokens.weight")) {
      out.weights_prefix = prefix;
      found = true;
      break;
    }
  }
  if (!found)
    throw ModelError(display_name(weights) +
                     ": no token embedding (looked for 'embed_tokens.weight' with the prefixes '', "
                     "'model.', 'language_model.model.', 'model.language_model.')");
  const std::string& prefix = out.weights_prefix;

  const AttentionMode attention = options.attention.value_or(out.config.default_attention());
  const auto tensor_options = torch::TensorOptions().dtype(options.dtype).device(options.device);
  Encoder encoder(out.config, attention, tensor_options);

  const std::vector<HfTensorSpec> specs = encoder->hf_tensor_specs();
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, bool> expected;
  for (const auto& spec : specs) {
    const std::string name = prefix + spec.name;
    expected[name] = true;
    if (!reader.contains(name))
      throw ModelError(display_name(weights) + ": missing tensor '" + name + "' (expected shape " +
                       shape_str(spec.shape) + ")");
    const io::TensorInfo& info = reader.info(name);
    const std::string file = display_name(reader.file_of(name).path());
    if (spec.name == "embed_tokens.weight" && info.shape.size() == 2 &&
        info.shape[0] != out.config.vocab_size)
      throw ModelError(file + ": tensor '" + name + "' has " + std::to_string(info.shape[0]) +
                       " rows but " + display_name(config_path.string()) + " says vocab_size " +
                       std::to_string(out.config.vocab_size));
    if (info.shape != spec.shape)
      throw ModelError(file + ": tensor '" + name + "' has shape " + shape_str(info.shape) +
                       ", expected " + shape_str(spec.shape) + " from " +
                       display_name(config_path.string()));
    if (info.dtype != io::DType::F32 && info.dtype != io::DType::BF16 && info.dtype != io::DType::F16 &&
        info.dtype != io::DType::F64)
      throw ModelError(file + ": tensor '" + name + "' has dtype " + std::string(io::dtype_name(info.dtype)) +
                       "; model weights must be F32, BF16, F16 or F64");
    // One damaged weight would turn every output into NaN: refuse it by name.
    const io::NonFiniteCount bad = io::count_non_finite(info.dtype, reader.file_of(name).data(info), info.nbytes());
    if (bad.count > 0)
      throw ModelError(file + ": tensor '" + name + "' has " + io::describe_non_finite(bad) +
                       "; the checkpoint is damaged");
    // Checked: its pages can go until the copy below reads them again, so the
    // scan never holds the whole file resident.
    reader.file_of(name).release_pages(info);
    tensors[spec.name] = tensor_from(reader.file_of(name), info);
  }
  for (const std::string& name : reader.names()) {
    if (!starts_with(name, prefix) || expected.count(name)) continue;
    const std::string rest = name.substr(prefix.size());
    bool model_tensor = false;
    for (const char* root_name : kModelRoots) model_tensor = model_tensor || starts_with(rest, root_name);
    if (model_tensor && !ends_with(rest, "rotary_emb.inv_freq"))
      throw ModelError(display_name(reader.file_of(name).path()) + ": unexpected tensor '" + name +
                       "' for a " + std::string(architecture_name(out.config.architecture)) + " model with " +
                       std::to_string(out.config.num_hidden_layers) + " layers (does " +
                       display_name(config_path.string()) + " match the weights?)");
  }
  // On CPU the token embedding (the largest tensor of most embedding models)
  // can be the file's own bytes: the mapping is copy-on-write, so training
  // that updates it copies only the pages it writes.
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor& source = tensors.at("embed_tokens.weight");
    const std::string name = prefix + "embed_tokens.weight";
    const io::SafetensorsFile& file = reader.file_of(name);
    const bool is_mapping = source.data_ptr() == static_cast<const void*>(file.data(reader.info(name)));
    if (options.device.is_cpu() && source.scalar_type() == options.dtype && is_mapping) {
      encoder->embed_tokens->weight.set_data(source);
      out.mapped_parameters.push_back("embed_tokens.weight");
    }
  }
  encoder->load_hf_tensors(tensors, weights, [&](const std::string& spec_name) {
    if (!out.mapped_parameters.empty() && spec_name == out.mapped_parameters.front()) return;
    const std::string name = prefix + spec_name;
    reader.file_of(name).release_pages(reader.info(name));
  });
  encoder->eval();
  out.encoder = encoder;
  return out;
}

void save_model(const std::string& dir, const EncoderImpl& encoder, const SaveOptions& options) {
  const torch::ScalarType dtype = options.dtype.value_or(encoder.dtype());
  const std::string dtype_name = torch_dtype_name(dtype);
  std::vector<std::pair<std::string, torch::Tensor>> tensors = encoder.hf_tensors();
  for (auto& [name, t] : tensors) t = t.to(dtype);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError(display_name(dir) + ": cannot create directory (" + ec.message() + ")");
  save_checkpoint(dir, tensors, {{"format", "pt"}}, options.max_shard_bytes);
  const std::string json = config_to_json(encoder.config(), encoder.attention(), dtype_name);
  io::AtomicOutputFile config((fs::path(dir) / "config.json").string());
  config.write(json.data(), json.size());
  config.commit();
}

}  // namespace kalm::model
