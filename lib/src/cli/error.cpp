#include "kalm/error.h"

namespace kalm {

std::string display_name(const std::string& path) {
  return path == "-" || path.empty() ? std::string("<stdin>") : path;
}

std::string where(const std::string& file, std::size_t line) {
  return display_name(file) + ":" + std::to_string(line);
}

}  // namespace kalm
