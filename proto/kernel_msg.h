// The cachefiles on-demand kernel ABI (<linux/cachefiles.h>, Linux 6.12),
// parsed from bytes into values. Pure: no I/O.
//
// read() on /dev/cachefiles returns exactly one struct cachefiles_msg:
//   {u32 msg_id, u32 opcode, u32 len, u32 object_id, u8 data[]}
// with `len` covering header and payload, at most CACHEFILES_MSG_MAX_SIZE.
// parse_kernel_msg() checks every length before touching a field, so a short
// read, a lying `len` or an overflowing key size becomes a ParseError, never
// an out-of-bounds access.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include <linux/cachefiles.h>

namespace ondemand::proto {

inline constexpr std::size_t KERNEL_MSG_MAX_SIZE = CACHEFILES_MSG_MAX_SIZE;

// OPEN: the kernel has installed `anon_fd` in the reading process's fd table;
// whoever parses this message owns that fd from now on, even when the rest
// of the message is rejected.
struct OpenRequest {
  std::uint32_t msg_id;
  std::uint32_t object_id;
  std::int32_t anon_fd;
  std::uint32_t flags;
  std::string volume_key;  // "erofs,<domain_id or fsid>", NUL stripped
  std::string cookie_key;  // the blob id, binary as sent
};

struct ReadRequest {
  std::uint32_t msg_id;
  std::uint32_t object_id;
  std::uint64_t offset;
  std::uint64_t length;
};

// CLOSE needs no reply; the kernel already forgot the request.
struct CloseRequest {
  std::uint32_t msg_id;
  std::uint32_t object_id;
};

enum class ParseErrorKind {
  TRUNCATED_HEADER,   // fewer bytes than struct cachefiles_msg
  LENGTH_MISMATCH,    // header.len != bytes actually read
  TOO_LARGE,          // more than CACHEFILES_MSG_MAX_SIZE
  TRUNCATED_PAYLOAD,  // payload shorter than the opcode's fixed struct
  KEY_OVERFLOW,       // volume_key_size + cookie_key_size exceed the payload
  BAD_VOLUME_KEY,     // volume key empty or not NUL-terminated
  UNKNOWN_OPCODE,
};

struct ParseError {
  ParseErrorKind kind;
  std::uint32_t msg_id = 0;  // valid when the header was complete
  std::uint32_t opcode = 0;
  // An OPEN whose payload was readable enough to find the fd still carries
  // a kernel-installed fd that must be closed by the caller; -1 otherwise.
  std::int32_t leaked_fd = -1;
};

using KernelRequest = std::variant<OpenRequest, ReadRequest, CloseRequest>;
using ParseResult = std::variant<KernelRequest, ParseError>;

ParseResult parse_kernel_msg(std::span<const std::byte> bytes);

std::string_view to_string(ParseErrorKind kind);

// Command strings written back to the device.
// "copen <msg_id>,<size>" accepts an OPEN; a negative errno refuses it.
std::string format_copen(std::uint32_t msg_id, std::int64_t size_or_negative_errno);
inline constexpr std::string_view RESTORE_COMMAND = "restore";

// Test and fuzz helpers: serialise requests the way the kernel does.
std::string encode_open(std::uint32_t msg_id, std::uint32_t object_id, std::int32_t fd,
                        std::string_view volume_key_without_nul, std::string_view cookie_key);
std::string encode_read(std::uint32_t msg_id, std::uint32_t object_id, std::uint64_t off,
                        std::uint64_t len);
std::string encode_close(std::uint32_t msg_id, std::uint32_t object_id);

}  // namespace ondemand::proto
