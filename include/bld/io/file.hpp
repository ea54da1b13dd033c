// bld/io/file.hpp — reading whole files with errors that name the file and the reason.
#pragma once

#include "bld/core/error.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <string_view>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define BLD_HAVE_MMAP 1
#endif

namespace bld::io {

/// Files larger than this are refused (a tokenizer file is < 100 MB; 1 GiB leaves room).
inline constexpr std::uintmax_t max_file_bytes = std::uintmax_t{1} << 30;

/// Reads a whole file into a string.
/// @throws bld::load_error naming the operation, the path and the reason.
[[nodiscard]] inline std::string read_file(const std::string& path, const std::string& op) {
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(st)) throw load_error(op, path, "no such file");
    if (std::filesystem::is_directory(st)) throw load_error(op, path, "is a directory, expected a file");
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) throw load_error(op, path, "cannot read its size: " + ec.message());
    if (size > max_file_bytes)
        throw load_error(op, path, "file of " + std::to_string(size) + " bytes exceeds the limit of " +
                                       std::to_string(max_file_bytes) + " bytes");
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw load_error(op, path, std::string("cannot open: ") + std::strerror(errno));
    std::string data(static_cast<std::size_t>(size), '\0');
    const std::size_t got = data.empty() ? 0 : std::fread(data.data(), 1, data.size(), f);
    std::fclose(f);
    if (got != data.size())
        throw load_error(op, path, "short read (" + std::to_string(got) + " of " + std::to_string(size) + " bytes)");
    return data;
}

/// The bytes of a file, read-only, with at least `padding` readable bytes after the end (what
/// simdjson needs). Mapped from the page cache where possible — on a VM, first-touching a fresh
/// 33 MB buffer costs more than parsing it — and copied otherwise.
class file_bytes {
public:
    file_bytes(const std::string& path, const std::string& op, std::size_t padding = 64) {
        copy_ = std::string();
#ifdef BLD_HAVE_MMAP
        std::error_code ec;
        const auto st = std::filesystem::status(path, ec);
        if (!ec && std::filesystem::is_regular_file(st)) {
            const auto size = std::filesystem::file_size(path, ec);
            const long page = ::sysconf(_SC_PAGESIZE);
            if (!ec && size > 0 && size <= max_file_bytes && page > 0 &&
                (size % static_cast<std::uintmax_t>(page)) != 0 &&
                static_cast<std::uintmax_t>(page) - size % static_cast<std::uintmax_t>(page) >= padding) {
                const int fd = ::open(path.c_str(), O_RDONLY);
                if (fd >= 0) {
                    void* p = ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
                    ::close(fd);
                    if (p != MAP_FAILED) {
                        map_ = p;
                        size_ = static_cast<std::size_t>(size);
                        capacity_ = size_ + padding;
                        return;
                    }
                }
            }
        }
#endif
        copy_ = read_file(path, op);
        size_ = copy_.size();
        copy_.reserve(size_ + padding);
        capacity_ = copy_.capacity();
    }
    file_bytes(const file_bytes&) = delete;
    file_bytes& operator=(const file_bytes&) = delete;
    ~file_bytes() {
#ifdef BLD_HAVE_MMAP
        if (map_) ::munmap(map_, size_);
#endif
    }
    [[nodiscard]] std::string_view view() const noexcept {
        return map_ ? std::string_view(static_cast<const char*>(map_), size_) : std::string_view(copy_);
    }
    /// Readable bytes from view().data() on (≥ size + padding).
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

private:
    void* map_ = nullptr;
    std::size_t size_ = 0, capacity_ = 0;
    std::string copy_;
};

} // namespace bld::io
