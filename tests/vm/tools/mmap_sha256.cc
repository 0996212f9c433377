// mmap-sha256: SHA-256 of files read through mmap, in `sha256sum` format.
//
//   mmap-sha256 [--reverse] FILE...
//
// Each file is mapped read-only (MAP_PRIVATE) and hashed straight from the
// mapping, so every byte arrives through page faults (filemap_fault and the
// filesystem's readahead), not read(2). --reverse first touches every page
// from the last to the first with MADV_RANDOM set, so the faults come in
// descending order one page at a time, then hashes. Empty files are not
// mapped (mmap of length 0 is EINVAL) and hash as empty.
//
// Output: "<hex>  <path>" per file, exactly like sha256sum. Any failure is
// reported on stderr and the exit status is 1 (the other files are still
// hashed); a SIGBUS from a failed page-in is reported with the file name.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string_view>

#include <openssl/evp.h>

namespace {

sigjmp_buf bus_jump;
volatile sig_atomic_t in_mapping = 0;

void on_sigbus(int) {
  if (in_mapping) siglongjmp(bus_jump, 1);
  _exit(3);
}

// Returns false (after printing why) when the file could not be hashed.
bool hash_file(const char* path, bool reverse, unsigned char (&md)[EVP_MAX_MD_SIZE],
               unsigned& md_len) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "mmap-sha256: open %s: %s\n", path, std::strerror(errno));
    return false;
  }
  struct stat st{};
  if (::fstat(fd, &st) < 0) {
    std::fprintf(stderr, "mmap-sha256: fstat %s: %s\n", path, std::strerror(errno));
    ::close(fd);
    return false;
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  void* map = nullptr;
  if (size > 0) {
    map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      std::fprintf(stderr, "mmap-sha256: mmap %s: %s\n", path, std::strerror(errno));
      ::close(fd);
      return false;
    }
  }
  ::close(fd);  // the mapping keeps the file

  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  volatile bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1;
  if (ok && size > 0) {
    const auto* bytes = static_cast<const unsigned char*>(map);
    if (sigsetjmp(bus_jump, 1) != 0) {
      in_mapping = 0;
      std::fprintf(stderr, "mmap-sha256: %s: SIGBUS while reading the mapping (I/O error)\n",
                   path);
      ok = false;
    } else {
      in_mapping = 1;
      if (reverse) {
        ::madvise(map, size, MADV_RANDOM);
        const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
        volatile unsigned char sink = 0;
        for (std::size_t off = (size - 1) / page * page;; off -= page) {
          sink = sink ^ bytes[off];
          if (off == 0) break;
        }
        (void)sink;
      }
      ok = EVP_DigestUpdate(ctx, bytes, size) == 1;
      in_mapping = 0;
    }
  }
  if (ok) ok = EVP_DigestFinal_ex(ctx, md, &md_len) == 1;
  if (!ok) std::fprintf(stderr, "mmap-sha256: hashing %s failed\n", path);
  EVP_MD_CTX_free(ctx);
  if (map) ::munmap(map, size);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  bool reverse = false;
  int first = 1;
  for (; first < argc; ++first) {
    const std::string_view arg = argv[first];
    if (arg == "--reverse") {
      reverse = true;
    } else if (arg == "--") {
      ++first;
      break;
    } else if (arg == "-h" || arg == "--help") {
      std::printf("usage: mmap-sha256 [--reverse] FILE...\n");
      return 0;
    } else if (arg.starts_with("--")) {
      std::fprintf(stderr, "mmap-sha256: unknown option %s\n", argv[first]);
      return 2;
    } else {
      break;
    }
  }
  if (first >= argc) {
    std::fprintf(stderr, "usage: mmap-sha256 [--reverse] FILE...\n");
    return 2;
  }
  struct sigaction sa{};
  sa.sa_handler = on_sigbus;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, nullptr);

  int status = 0;
  for (int i = first; i < argc; ++i) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    if (!hash_file(argv[i], reverse, md, md_len)) {
      status = 1;
      continue;
    }
    for (unsigned b = 0; b < md_len; ++b) std::printf("%02x", md[b]);
    std::printf("  %s\n", argv[i]);
  }
  if (std::fflush(stdout) != 0) status = 1;
  return status;
}
