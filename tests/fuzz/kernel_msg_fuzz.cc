// libFuzzer target for proto::parse_kernel_msg, the one function that reads
// bytes the kernel (or a confused kernel, or a future ABI) hands us.
//
// Fuzz input is never trusted as a real fd: leaked_fd and anon_fd values are
// compared with the bytes they came from and never closed. Every invariant
// failure aborts, which libFuzzer reports as a crash with the input saved.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>

#include "proto/kernel_msg.h"

#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace ondemand::proto;


constexpr std::size_t HDR = sizeof(cachefiles_msg);

template <typename T>
T field(const std::uint8_t* data, std::size_t offset) {
  T v;
  std::memcpy(&v, data + offset, sizeof v);
  return v;
}

ParseResult parse_string(const std::string& s) {
  return parse_kernel_msg({reinterpret_cast<const std::byte*>(s.data()), s.size()});
}

void check_error(const ParseError& err, const std::uint8_t* data, std::size_t size) {
  FUZZ_CHECK(to_string(err.kind) != "?");
  if (size < HDR) {
    FUZZ_CHECK(err.kind == ParseErrorKind::TRUNCATED_HEADER);
    FUZZ_CHECK(err.leaked_fd == -1);
    return;
  }
  FUZZ_CHECK(err.kind != ParseErrorKind::TRUNCATED_HEADER);
  FUZZ_CHECK(err.msg_id == field<std::uint32_t>(data, offsetof(cachefiles_msg, msg_id)));
  FUZZ_CHECK(err.opcode == field<std::uint32_t>(data, offsetof(cachefiles_msg, opcode)));
  if (size > KERNEL_MSG_MAX_SIZE) FUZZ_CHECK(err.kind == ParseErrorKind::TOO_LARGE);
  const bool fd_known = err.kind == ParseErrorKind::KEY_OVERFLOW ||
                        err.kind == ParseErrorKind::BAD_VOLUME_KEY;
  if (fd_known) {
    // The kernel installed an fd: it must come back to be closed.
    FUZZ_CHECK(err.opcode == CACHEFILES_OP_OPEN);
    FUZZ_CHECK(size >= HDR + sizeof(cachefiles_open));
    FUZZ_CHECK(err.leaked_fd == field<std::int32_t>(data, HDR + offsetof(cachefiles_open, fd)));
  } else {
    FUZZ_CHECK(err.leaked_fd == -1);
  }
}

void check_open(const OpenRequest& open, const std::uint8_t* data, std::size_t size) {
  FUZZ_CHECK(size >= HDR + sizeof(cachefiles_open));
  FUZZ_CHECK(open.volume_key.size() + 1 + open.cookie_key.size() <= size - HDR - sizeof(cachefiles_open));
  const auto vsize = field<std::uint32_t>(data, HDR + offsetof(cachefiles_open, volume_key_size));
  const auto csize = field<std::uint32_t>(data, HDR + offsetof(cachefiles_open, cookie_key_size));
  FUZZ_CHECK(open.volume_key.size() + 1 == vsize);
  FUZZ_CHECK(open.cookie_key.size() == csize);
  FUZZ_CHECK(open.anon_fd == field<std::int32_t>(data, HDR + offsetof(cachefiles_open, fd)));
  FUZZ_CHECK(open.flags == field<std::uint32_t>(data, HDR + offsetof(cachefiles_open, flags)));
  const auto* keys = reinterpret_cast<const char*>(data + HDR + sizeof(cachefiles_open));
  FUZZ_CHECK(std::memcmp(open.volume_key.data(), keys, open.volume_key.size()) == 0);
  FUZZ_CHECK(keys[vsize - 1] == '\0');
  FUZZ_CHECK(std::memcmp(open.cookie_key.data(), keys + vsize, open.cookie_key.size()) == 0);

  // encode_open(parse(x)) parses back to the same request.
  const auto again = parse_string(
      encode_open(open.msg_id, open.object_id, open.anon_fd, open.volume_key, open.cookie_key));
  const auto* req = std::get_if<KernelRequest>(&again);
  FUZZ_CHECK(req);
  const auto* o2 = std::get_if<OpenRequest>(req);
  FUZZ_CHECK(o2);
  FUZZ_CHECK(o2->msg_id == open.msg_id && o2->object_id == open.object_id);
  FUZZ_CHECK(o2->anon_fd == open.anon_fd);
  FUZZ_CHECK(o2->volume_key == open.volume_key && o2->cookie_key == open.cookie_key);
}

void check_request(const KernelRequest& req, const std::uint8_t* data, std::size_t size) {
  FUZZ_CHECK(size >= HDR && size <= KERNEL_MSG_MAX_SIZE);
  FUZZ_CHECK(field<std::uint32_t>(data, offsetof(cachefiles_msg, len)) == size);
  const auto input = std::string(reinterpret_cast<const char*>(data), size);
  if (const auto* open = std::get_if<OpenRequest>(&req)) {
    check_open(*open, data, size);
  } else if (const auto* rd = std::get_if<ReadRequest>(&req)) {
    FUZZ_CHECK(size >= HDR + sizeof(cachefiles_read));
    FUZZ_CHECK(rd->offset == field<std::uint64_t>(data, HDR + offsetof(cachefiles_read, off)));
    FUZZ_CHECK(rd->length == field<std::uint64_t>(data, HDR + offsetof(cachefiles_read, len)));
    if (size == HDR + sizeof(cachefiles_read))
      FUZZ_CHECK(encode_read(rd->msg_id, rd->object_id, rd->offset, rd->length) == input);
  } else {
    const auto& close = std::get<CloseRequest>(req);
    if (size == HDR) FUZZ_CHECK(encode_close(close.msg_id, close.object_id) == input);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto result = parse_kernel_msg({reinterpret_cast<const std::byte*>(data), size});
  if (const auto* err = std::get_if<ParseError>(&result))
    check_error(*err, data, size);
  else
    check_request(std::get<KernelRequest>(result), data, size);
  return 0;
}
