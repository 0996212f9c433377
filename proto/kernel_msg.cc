#include "proto/kernel_msg.h"

#include "proto/bytes.h"

#include <cstring>

#include <fmt/format.h>

namespace ondemand::proto {
namespace {

constexpr std::size_t HEADER = sizeof(cachefiles_msg);

ParseResult parse_open(const cachefiles_msg& hdr, std::span<const std::byte> payload) {
  if (payload.size() < sizeof(cachefiles_open))
    return ParseError{ParseErrorKind::TRUNCATED_PAYLOAD, hdr.msg_id, hdr.opcode};
  auto load_open = load<cachefiles_open>(payload, 0);
  // From here on the fd is known: every error below must hand it back.
  const auto fd = static_cast<std::int32_t>(load_open.fd);
  const std::size_t keys = payload.size() - sizeof(cachefiles_open);
  const std::uint64_t wanted =
      std::uint64_t{load_open.volume_key_size} + std::uint64_t{load_open.cookie_key_size};
  if (wanted > keys)
    return ParseError{ParseErrorKind::KEY_OVERFLOW, hdr.msg_id, hdr.opcode, fd};
  const auto* data = reinterpret_cast<const char*>(payload.data() + sizeof(cachefiles_open));
  const std::uint32_t vsize = load_open.volume_key_size;
  // The kernel sends the volume key with its NUL (volume->key[0] + 1 bytes).
  if (vsize == 0 || data[vsize - 1] != '\0')
    return ParseError{ParseErrorKind::BAD_VOLUME_KEY, hdr.msg_id, hdr.opcode, fd};
  OpenRequest open;
  open.msg_id = hdr.msg_id;
  open.object_id = hdr.object_id;
  open.anon_fd = fd;
  open.flags = load_open.flags;
  open.volume_key.assign(data, vsize - 1);
  open.cookie_key.assign(data + vsize, load_open.cookie_key_size);
  return KernelRequest{std::move(open)};
}

}  // namespace

ParseResult parse_kernel_msg(std::span<const std::byte> bytes) {
  if (bytes.size() < HEADER) return ParseError{ParseErrorKind::TRUNCATED_HEADER};
  const auto hdr = load<cachefiles_msg>(bytes, 0);
  if (bytes.size() > KERNEL_MSG_MAX_SIZE)
    return ParseError{ParseErrorKind::TOO_LARGE, hdr.msg_id, hdr.opcode};
  if (hdr.len != bytes.size())
    return ParseError{ParseErrorKind::LENGTH_MISMATCH, hdr.msg_id, hdr.opcode};
  const auto payload = bytes.subspan(HEADER);
  switch (hdr.opcode) {
    case CACHEFILES_OP_OPEN:
      return parse_open(hdr, payload);
    case CACHEFILES_OP_READ: {
      if (payload.size() < sizeof(cachefiles_read))
        return ParseError{ParseErrorKind::TRUNCATED_PAYLOAD, hdr.msg_id, hdr.opcode};
      const auto rd = load<cachefiles_read>(payload, 0);
      return KernelRequest{ReadRequest{hdr.msg_id, hdr.object_id, rd.off, rd.len}};
    }
    case CACHEFILES_OP_CLOSE:
      return KernelRequest{CloseRequest{hdr.msg_id, hdr.object_id}};
    default:
      return ParseError{ParseErrorKind::UNKNOWN_OPCODE, hdr.msg_id, hdr.opcode};
  }
}

std::string_view to_string(ParseErrorKind kind) {
  switch (kind) {
    case ParseErrorKind::TRUNCATED_HEADER: return "truncated header";
    case ParseErrorKind::LENGTH_MISMATCH: return "len disagrees with bytes read";
    case ParseErrorKind::TOO_LARGE: return "message larger than CACHEFILES_MSG_MAX_SIZE";
    case ParseErrorKind::TRUNCATED_PAYLOAD: return "payload shorter than its struct";
    case ParseErrorKind::KEY_OVERFLOW: return "key sizes overflow the payload";
    case ParseErrorKind::BAD_VOLUME_KEY: return "volume key empty or not NUL-terminated";
    case ParseErrorKind::UNKNOWN_OPCODE: return "unknown opcode";
  }
  return "?";
}

std::string format_copen(std::uint32_t msg_id, std::int64_t size_or_negative_errno) {
  return fmt::format("copen {},{}", msg_id, size_or_negative_errno);
}

namespace {
std::string encode(std::uint32_t msg_id, std::uint32_t opcode, std::uint32_t object_id,
                   std::string_view payload) {
  cachefiles_msg hdr{};
  hdr.msg_id = msg_id;
  hdr.opcode = opcode;
  hdr.len = static_cast<std::uint32_t>(HEADER + payload.size());
  hdr.object_id = object_id;
  std::string out(reinterpret_cast<const char*>(&hdr), HEADER);
  out.append(payload);
  return out;
}
}  // namespace

std::string encode_open(std::uint32_t msg_id, std::uint32_t object_id, std::int32_t fd,
                        std::string_view volume_key_without_nul, std::string_view cookie_key) {
  cachefiles_open open{};
  open.volume_key_size = static_cast<std::uint32_t>(volume_key_without_nul.size() + 1);
  open.cookie_key_size = static_cast<std::uint32_t>(cookie_key.size());
  open.fd = static_cast<std::uint32_t>(fd);
  std::string payload(reinterpret_cast<const char*>(&open), sizeof open);
  payload.append(volume_key_without_nul);
  payload.push_back('\0');
  payload.append(cookie_key);
  return encode(msg_id, CACHEFILES_OP_OPEN, object_id, payload);
}

std::string encode_read(std::uint32_t msg_id, std::uint32_t object_id, std::uint64_t off,
                        std::uint64_t len) {
  cachefiles_read rd{off, len};
  return encode(msg_id, CACHEFILES_OP_READ, object_id,
                std::string_view(reinterpret_cast<const char*>(&rd), sizeof rd));
}

std::string encode_close(std::uint32_t msg_id, std::uint32_t object_id) {
  return encode(msg_id, CACHEFILES_OP_CLOSE, object_id, {});
}

}  // namespace ondemand::proto
