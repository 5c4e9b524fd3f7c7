#pragma once
// Removing a file or a directory tree: the one place kalm deletes directories.
//
// Why not std::filesystem::remove_all: pip's LibTorch (libtorch_cpu.so) exports
// its own statically linked copy of std::filesystem, and the dynamic linker can
// bind a kalm call to that copy, whose remove_all jumps to address 0 (SIGSEGV).
// This implementation uses POSIX calls only (openat/fdopendir/unlinkat), so no
// binding can send it into LibTorch. tests/source_rules.sh fails the build's
// tests if a raw remove_all comes back anywhere in the tree.
//
// Symbolic links are removed, never followed. Thread-safe (no shared state).

#include <string>

namespace kalm::io {

// Removes `path` (a file, a link, or a directory with everything below it).
// A path that does not exist is not an error. Returns how many entries were
// removed. Throws IoError naming the entry that could not be removed, and why.
std::size_t remove_tree(const std::string& path);

// The same for clean-up paths (destructors, error handlers): never throws;
// returns false when something could not be removed (`why`, if given, says what).
bool remove_tree_nothrow(const std::string& path, std::string* why = nullptr) noexcept;

}  // namespace kalm::io
