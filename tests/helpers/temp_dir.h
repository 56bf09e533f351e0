#pragma once
// A directory under $TMPDIR (or /tmp) that exists for the lifetime of the
// object and is removed with everything in it when the object goes away.
#include <filesystem>
#include <string_view>

namespace edgepin::test {

class TempDir {
 public:
  // Creates a fresh directory named "<prefix>XXXXXX". Throws
  // std::system_error if it cannot.
  explicit TempDir(std::string_view prefix = "edgepin-test-");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;

  const std::filesystem::path& path() const { return path_; }
  // path() / name.
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

  // Keeps the directory on destruction (to look at a failed test's files).
  void keep() { keep_ = true; }

 private:
  void remove() noexcept;

  std::filesystem::path path_;
  bool keep_ = false;
};

}  // namespace edgepin::test
