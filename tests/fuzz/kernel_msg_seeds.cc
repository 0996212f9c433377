// Writes a seed corpus for kernel_msg_fuzz into the directory given as
// argv[1]: well-formed OPEN/READ/CLOSE messages from the encode_* helpers
// plus a few near-misses, so the fuzzer starts from the real layout.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "proto/kernel_msg.h"

using namespace ondemand::proto;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 64;
  }
  std::vector<std::string> seeds = {
      encode_open(1, 1, 5, "erofs,fsid", "blob1"),
      encode_open(2, 7, 9, "erofs,domain", std::string("bin\0\xff", 5)),
      encode_open(3, 8, 10, "erofs,x", ""),
      encode_open(4, 9, 11, "erofs,long", std::string(900, 'c')),
      encode_read(5, 1, 0, 4096),
      encode_read(6, 1, 1 << 20, 1 << 20),
      encode_read(7, 1, ~0ULL, ~0ULL),
      encode_close(8, 1),
  };
  // Near-misses: truncated, lying len, missing NUL.
  auto open = encode_open(9, 2, 12, "erofs,y", "z");
  seeds.push_back(open.substr(0, open.size() - 1));
  seeds.push_back(open.substr(0, 20));
  auto no_nul = open;
  no_nul[no_nul.size() - 2] = 'X';  // the volume key's NUL
  seeds.push_back(no_nul);
  int n = 0;
  for (const auto& s : seeds) {
    const std::string path = std::string(argv[1]) + "/seed-" + std::to_string(n++);
    std::ofstream out(path, std::ios::binary);
    out.write(s.data(), static_cast<std::streamsize>(s.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      return 1;
    }
  }
  return 0;
}
