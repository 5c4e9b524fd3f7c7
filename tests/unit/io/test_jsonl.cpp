// Byte streams (plain / zstd, files / pipes / stdin) and the line splitter.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "kalm/error.h"
#include "kalm/io/jsonl.h"
#include "kalm/io/zstd_stream.h"
#include "test_jsonl_util.h"

using kalm_test::error_of;
using kalm_test::read_file;
using kalm_test::TempDir;
using kalm_test::write_file;
using kalm_test::zstd_frame;

namespace {

std::string read_all(kalm::io::InputStream& in, std::size_t chunk = 4096) {
  std::string out;
  std::vector<char> buf(chunk);
  for (;;) {
    std::size_t n = in.read(buf.data(), buf.size());
    if (n == 0) return out;
    out.append(buf.data(), n);
  }
}

std::vector<std::string> all_lines(kalm::io::LineReader& r) {
  std::vector<std::string> out;
  std::string_view line;
  while (r.next(line)) out.emplace_back(line);
  return out;
}

// A skippable frame (magic 0x184D2A50) carrying `payload`.
std::string skippable_frame(const std::string& payload) {
  std::string f = "\x50\x2A\x4D\x18";
  auto n = static_cast<std::uint32_t>(payload.size());
  for (int i = 0; i < 4; ++i) f.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  return f + payload;
}

// Text with lines of many lengths, some long enough to straddle read buffers.
std::string varied_lines(std::size_t count) {
  std::string text;
  for (std::size_t i = 0; i < count; ++i) {
    std::size_t len = (i * 7919) % 3000;
    if (i % 97 == 0) len = 300000 + i;
    text += std::to_string(i) + ":" + std::string(len, static_cast<char>('a' + i % 26)) + "\n";
  }
  return text;
}

// Points fd `target` at `fd` for the lifetime of the object.
class Redirect {
 public:
  Redirect(int target, int fd) : target_(target), saved_(::dup(target)) { ::dup2(fd, target); }
  ~Redirect() {
    ::dup2(saved_, target_);
    ::close(saved_);
  }

 private:
  int target_, saved_;
};

}  // namespace

DOCTEST_TEST_CASE("InputStream reads plain files as they are") {
  TempDir dir;
  std::string path = dir.file("plain.txt");
  std::string text = varied_lines(300);
  write_file(path, text);
  kalm::io::InputStream in(path);
  DOCTEST_CHECK_FALSE(in.compressed());
  DOCTEST_CHECK(read_all(in, 1000) == text);
  DOCTEST_CHECK(in.bytes_consumed() == text.size());
  std::vector<char> buf(16);
  DOCTEST_CHECK(in.read(buf.data(), buf.size()) == 0);  // stays at the end
}

DOCTEST_TEST_CASE("InputStream detects zstd by its magic, not by the name") {
  TempDir dir;
  std::string text = varied_lines(300);
  std::string path = dir.file("no_extension");
  write_file(path, zstd_frame(text));
  kalm::io::InputStream in(path);
  DOCTEST_CHECK(in.compressed());
  DOCTEST_CHECK(read_all(in, 777) == text);

  // A .zst name on plain data is still plain data.
  std::string plain = dir.file("lying.zst");
  write_file(plain, "hello\n");
  kalm::io::InputStream in2(plain);
  DOCTEST_CHECK_FALSE(in2.compressed());
  DOCTEST_CHECK(read_all(in2) == "hello\n");
}

DOCTEST_TEST_CASE("InputStream decodes concatenated and skippable frames as one stream") {
  std::string a = "first frame\n", b = std::string(200000, 'b') + "\n", c = "third\n";
  std::string data = zstd_frame(a) + skippable_frame("metadata") + zstd_frame(b) +
                     zstd_frame("") + zstd_frame(c);
  auto in = kalm::io::InputStream::from_memory(data, "frames.zst");
  DOCTEST_CHECK(in->compressed());
  DOCTEST_CHECK(read_all(*in, 333) == a + b + c);

  // A stream may also start with a skippable frame.
  auto in2 = kalm::io::InputStream::from_memory(skippable_frame("x") + zstd_frame(a), "s.zst");
  DOCTEST_CHECK(in2->compressed());
  DOCTEST_CHECK(read_all(*in2) == a);

  // The output buffer filling up exactly at a frame boundary is not an end.
  auto in3 = kalm::io::InputStream::from_memory(zstd_frame("0123456789") + zstd_frame("abc"), "x");
  DOCTEST_CHECK(read_all(*in3, 10) == "0123456789abc");
}

DOCTEST_TEST_CASE("InputStream rejects a truncated zstd frame, naming the file") {
  TempDir dir;
  std::string text = varied_lines(50);
  std::string frame = zstd_frame(text);
  for (std::size_t cut : {frame.size() - 1, frame.size() / 2, std::size_t{6}}) {
    DOCTEST_CAPTURE(cut);
    std::string path = dir.file("cut.jsonl.zst");
    write_file(path, zstd_frame("complete\n") + frame.substr(0, cut));
    kalm::io::InputStream in(path);
    std::string msg = error_of<kalm::FormatError>([&] { read_all(in); });
    DOCTEST_CHECK(msg.find(path) != std::string::npos);
    DOCTEST_CHECK(msg.find("truncated zstd frame") != std::string::npos);
    DOCTEST_CHECK(msg.find("frame 2") != std::string::npos);
  }
}

DOCTEST_TEST_CASE("InputStream rejects garbage after a frame, naming the file") {
  TempDir dir;
  std::string frame = zstd_frame("{\"a\":1}\n");
  std::string path = dir.file("garbage.zst");
  write_file(path, frame + "this is not zstd\n");
  kalm::io::InputStream in(path);
  std::string msg = error_of<kalm::FormatError>([&] { read_all(in); });
  DOCTEST_CHECK(msg.find(path) != std::string::npos);
  DOCTEST_CHECK(msg.find("not a zstd frame") != std::string::npos);
  DOCTEST_CHECK(msg.find("at byte " + std::to_string(frame.size())) != std::string::npos);

  // Fewer bytes than a frame header: still an error, never a silent end.
  write_file(path, frame + "xy");
  kalm::io::InputStream in2(path);
  msg = error_of<kalm::FormatError>([&] { read_all(in2); });
  DOCTEST_CHECK(msg == path + ": data after zstd frame 1 (at byte " + std::to_string(frame.size()) +
                           ") is not a zstd frame (trailing garbage?)");
  write_file(path, frame + "\x28\xB5");  // the start of a magic number, then nothing
  kalm::io::InputStream in2b(path);
  msg = error_of<kalm::FormatError>([&] { read_all(in2b); });
  DOCTEST_CHECK(msg == path + ": 2 stray byte(s) after the last zstd frame");

  // Corrupted data inside a frame.
  std::string bad = zstd_frame(varied_lines(40));
  for (std::size_t i = 20; i < bad.size() - 8; i += 5) bad[i] = static_cast<char>(bad[i] ^ 0x5A);
  write_file(path, bad);
  kalm::io::InputStream in3(path);
  msg = error_of<kalm::FormatError>([&] { read_all(in3); });
  DOCTEST_CHECK(msg.find(path) != std::string::npos);
  DOCTEST_CHECK(msg.find("frame 1") != std::string::npos);
}

DOCTEST_TEST_CASE("InputStream reports files it cannot open") {
  TempDir dir;
  std::string missing = dir.file("missing.jsonl");
  std::string msg = error_of<kalm::IoError>([&] { kalm::io::InputStream in(missing); });
  DOCTEST_CHECK(msg == missing + ": cannot open: No such file or directory");
  msg = error_of<kalm::IoError>([&] { kalm::io::InputStream in(dir.file("")); });
  DOCTEST_CHECK(msg.find("is a directory") != std::string::npos);
}

DOCTEST_TEST_CASE("InputStream reads an empty input as zero bytes") {
  TempDir dir;
  write_file(dir.file("empty"), "");
  kalm::io::InputStream in(dir.file("empty"));
  DOCTEST_CHECK_FALSE(in.compressed());
  DOCTEST_CHECK(read_all(in).empty());
  // An empty zstd frame is also zero bytes.
  auto z = kalm::io::InputStream::from_memory(zstd_frame(""), "empty.zst");
  DOCTEST_CHECK(z->compressed());
  DOCTEST_CHECK(read_all(*z).empty());
}

DOCTEST_TEST_CASE("InputStream streams zstd through a pipe written in small pieces") {
  std::string text = varied_lines(200);
  std::string data = zstd_frame(text.substr(0, 100000)) + zstd_frame(text.substr(100000));
  int fds[2];
  DOCTEST_REQUIRE(::pipe(fds) == 0);
  std::thread writer([&] {
    for (std::size_t i = 0; i < data.size(); i += 1031) {
      std::size_t n = std::min<std::size_t>(1031, data.size() - i);
      if (::write(fds[1], data.data() + i, n) != static_cast<ssize_t>(n)) break;
    }
    ::close(fds[1]);
  });
  auto in = kalm::io::InputStream::from_fd(fds[0], "<pipe>");
  std::string got;
  try {
    got = read_all(*in, 4096);
  } catch (...) {
    writer.join();
    throw;
  }
  writer.join();
  ::close(fds[0]);
  DOCTEST_CHECK(in->compressed());
  DOCTEST_CHECK(got == text);
}

DOCTEST_TEST_CASE("\"-\" reads stdin and names it <stdin> in errors") {
  TempDir dir;
  std::string path = dir.file("stdin.jsonl.zst");
  write_file(path, zstd_frame("{\"query\":\"q\",\"pos\":[\"p\"]}\n{\"query\":1}\n"));
  int fd = ::open(path.c_str(), O_RDONLY);
  DOCTEST_REQUIRE(fd >= 0);
  std::string msg;
  kalm::io::TrainingGroup g;
  {
    Redirect redirect(STDIN_FILENO, fd);
    kalm::io::JsonlReader reader("-");
    DOCTEST_CHECK(reader.name() == "<stdin>");
    DOCTEST_CHECK(reader.next(g));
    msg = error_of<kalm::FormatError>([&] { reader.next(g); });
  }
  ::close(fd);
  DOCTEST_CHECK(g.query == "q");
  DOCTEST_CHECK(msg == "<stdin>:2: field \"query\" must be a string, not a number");
}

DOCTEST_TEST_CASE("LineReader splits lines across buffer refills") {
  std::string text = varied_lines(400);
  std::vector<std::string> expected;
  for (std::size_t start = 0; start < text.size();) {
    std::size_t nl = text.find('\n', start);
    expected.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  {
    kalm::io::LineReader r(kalm::io::InputStream::from_memory(text, "mem"));
    DOCTEST_CHECK(all_lines(r) == expected);
    DOCTEST_CHECK(r.line_number() == expected.size());
  }
  {
    kalm::io::LineReader r(kalm::io::InputStream::from_memory(zstd_frame(text), "mem.zst"));
    DOCTEST_CHECK(all_lines(r) == expected);
  }
}

DOCTEST_TEST_CASE("LineReader: CRLF, a missing final newline, a BOM, blank lines") {
  kalm::io::LineReader r(kalm::io::InputStream::from_memory(
      "\xEF\xBB\xBF" "first\r\n\r\n  \nlast", "mem"));
  std::string_view line;
  DOCTEST_REQUIRE(r.next(line));
  DOCTEST_CHECK(line == "first");
  DOCTEST_CHECK(r.line_number() == 1);
  DOCTEST_CHECK_FALSE(r.last_line_unterminated());
  DOCTEST_REQUIRE(r.next(line));
  DOCTEST_CHECK(line == "");
  DOCTEST_REQUIRE(r.next(line));
  DOCTEST_CHECK(line == "  ");
  DOCTEST_REQUIRE(r.next(line));
  DOCTEST_CHECK(line == "last");
  DOCTEST_CHECK(r.line_number() == 4);
  DOCTEST_CHECK(r.last_line_unterminated());
  DOCTEST_CHECK_FALSE(r.next(line));
  DOCTEST_CHECK(r.line_number() == 4);

  // A trailing newline does not make an extra empty line; a lone "\r" line is empty.
  kalm::io::LineReader r2(kalm::io::InputStream::from_memory("a\n\r\n", "mem"));
  std::vector<std::string> lines = all_lines(r2);
  DOCTEST_CHECK(lines == std::vector<std::string>{"a", ""});
}

DOCTEST_TEST_CASE("LineReader leaves readable padding after every line") {
  // Lines end right at the end of the buffer and of the input.
  std::string text = std::string(100, 'x') + "\n" + std::string(50, 'y');
  kalm::io::LineReader r(kalm::io::InputStream::from_memory(text, "mem"));
  std::string_view line;
  std::size_t sum = 0;
  while (r.next(line))
    for (std::size_t i = 0; i < line.size() + kalm::io::kLinePadding; ++i)
      sum += static_cast<unsigned char>(line.data()[i]) > 0;  // must not fault
  DOCTEST_CHECK(sum >= 150);
}

DOCTEST_TEST_CASE("LineReader enforces the maximum line length with file:line") {
  std::string ok = std::string(100, 'a');
  std::string text = ok + "\r\n" + ok + "\n" + ok + "b\n";
  kalm::io::LineReader r(kalm::io::InputStream::from_memory(text, "long.txt"), 100);
  std::string_view line;
  DOCTEST_REQUIRE(r.next(line));
  DOCTEST_CHECK(line == ok);
  DOCTEST_REQUIRE(r.next(line));
  DOCTEST_CHECK(line == ok);
  std::string msg = error_of<kalm::FormatError>([&] { r.next(line); });
  DOCTEST_CHECK(msg == "long.txt:3: line is longer than 100 bytes (the maximum line length)");

  // Detected before the whole line is in memory.
  std::string huge(3 << 20, 'z');
  kalm::io::LineReader r2(kalm::io::InputStream::from_memory(huge, "huge.txt"), 1 << 20);
  msg = error_of<kalm::FormatError>([&] { r2.next(line); });
  DOCTEST_CHECK(msg == "huge.txt:1: line is longer than 1048576 bytes (the maximum line length)");
}

DOCTEST_TEST_CASE("OutputStream writes plain and .zst files atomically") {
  TempDir dir;
  std::string text = varied_lines(120);
  for (std::string name : {"out.jsonl", "out.jsonl.zst"}) {
    DOCTEST_CAPTURE(name);
    std::string path = dir.file(name);
    {
      kalm::io::OutputStream out(path);
      DOCTEST_CHECK(out.compressed() == (name.size() > 4 && name.substr(name.size() - 4) == ".zst"));
      for (std::size_t i = 0; i < text.size(); i += 4099)
        out.write(std::string_view(text).substr(i, 4099));
      out.write(text);  // one big piece
      DOCTEST_CHECK_FALSE(std::filesystem::exists(path));  // not before finish()
      out.finish();
      out.finish();  // idempotent
      DOCTEST_CHECK_THROWS_AS(out.write("x"), kalm::IoError);
    }
    std::string raw = read_file(path);
    if (name.substr(name.size() - 4) == ".zst") {
      DOCTEST_CHECK(raw.compare(0, 4, "\x28\xB5\x2F\xFD") == 0);
      DOCTEST_CHECK(kalm_test::zstd_decompress_all(raw) == text + text);
    } else {
      DOCTEST_CHECK(raw == text + text);
    }
    kalm::io::InputStream in(path);
    DOCTEST_CHECK(read_all(in) == text + text);
  }
  DOCTEST_CHECK(dir.entries().size() == 2);  // no temporaries left
}

DOCTEST_TEST_CASE("OutputStream compresses with worker threads and chosen levels") {
  TempDir dir;
  std::string text = varied_lines(300);
  for (int threads : {0, 1, 2}) {
    for (int level : {1, 19}) {
      std::string path = dir.file("t" + std::to_string(threads) + "l" + std::to_string(level) + ".zst");
      kalm::io::OutputStream out(path, {std::nullopt, level, threads});
      out.write(text);
      out.finish();
      DOCTEST_CHECK(kalm_test::zstd_decompress_all(read_file(path)) == text);
    }
  }
  // Forced compression without the suffix, and forced plain with it.
  kalm::io::OutputStream forced(dir.file("forced"), {true, 3, 0});
  forced.write("abc\n");
  forced.finish();
  DOCTEST_CHECK(kalm_test::zstd_decompress_all(read_file(dir.file("forced"))) == "abc\n");
  kalm::io::OutputStream plain(dir.file("plain.zst"), {false, 3, 0});
  plain.write("abc\n");
  plain.finish();
  DOCTEST_CHECK(read_file(dir.file("plain.zst")) == "abc\n");

  DOCTEST_CHECK_THROWS_AS(kalm::io::OutputStream(dir.file("x.zst"), {std::nullopt, 99, 0}),
                          kalm::UsageError);
  DOCTEST_CHECK_THROWS_AS(kalm::io::OutputStream(dir.file("x.zst"), {std::nullopt, 3, -1}),
                          kalm::UsageError);
  DOCTEST_CHECK_FALSE(std::filesystem::exists(dir.file("x.zst")));
}

DOCTEST_TEST_CASE("OutputStream without finish() leaves nothing behind") {
  TempDir dir;
  for (std::string name : {"a.jsonl", "a.jsonl.zst"}) {
    try {
      kalm::io::OutputStream out(dir.file(name));
      out.write(varied_lines(50));
      throw std::runtime_error("simulated failure");
    } catch (const std::runtime_error&) {
    }
  }
  DOCTEST_CHECK(dir.entries().empty());
  // Unwritable directory: IoError naming the path.
  std::string bad = dir.file("no/such/dir/out.jsonl");
  std::string msg = error_of<kalm::IoError>([&] { kalm::io::OutputStream out(bad); });
  DOCTEST_CHECK(msg.find(bad) != std::string::npos);
}

DOCTEST_TEST_CASE("OutputStream refuses zstd to a terminal but writes it to a redirected stdout") {
  int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  if (master >= 0 && ::grantpt(master) == 0 && ::unlockpt(master) == 0) {
    int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY);
    DOCTEST_REQUIRE(slave >= 0);
    std::string msg;
    {
      std::fflush(stdout);
      Redirect redirect(STDOUT_FILENO, slave);
      msg = error_of<kalm::UsageError>([] { kalm::io::OutputStream out("-", {true, 3, 0}); });
    }
    ::close(slave);
    DOCTEST_CHECK(msg.find("refusing to write zstd-compressed data to a terminal") != std::string::npos);
  } else {
    DOCTEST_MESSAGE("no pseudo-terminal available; terminal refusal not exercised");
  }
  if (master >= 0) ::close(master);

  TempDir dir;
  std::string path = dir.file("stdout.zst");
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  DOCTEST_REQUIRE(fd >= 0);
  {
    std::fflush(stdout);
    Redirect redirect(STDOUT_FILENO, fd);
    kalm::io::OutputStream out("-", {true, 3, 0});
    out.write("to stdout\n");
    out.finish();
  }
  ::close(fd);
  DOCTEST_CHECK(kalm_test::zstd_decompress_all(read_file(path)) == "to stdout\n");
}
