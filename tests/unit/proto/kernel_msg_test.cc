#include "proto/kernel_msg.h"

#include <cstring>
#include <limits>

#include <catch2/catch.hpp>

namespace ondemand::proto {
namespace {

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

ParseResult parse(const std::string& s) { return parse_kernel_msg(as_bytes(s)); }

// A message built field by field, for the shapes encode_* refuses to make.
std::string raw_msg(std::uint32_t msg_id, std::uint32_t opcode, std::uint32_t object_id,
                    const std::string& payload, std::int64_t len_override = -1) {
  cachefiles_msg hdr{};
  hdr.msg_id = msg_id;
  hdr.opcode = opcode;
  hdr.len = len_override >= 0 ? static_cast<std::uint32_t>(len_override)
                              : static_cast<std::uint32_t>(sizeof hdr + payload.size());
  hdr.object_id = object_id;
  std::string out(reinterpret_cast<const char*>(&hdr), sizeof hdr);
  return out + payload;
}

std::string raw_open_payload(std::uint32_t vsize, std::uint32_t csize, std::int32_t fd,
                             const std::string& keys) {
  cachefiles_open open{};
  open.volume_key_size = vsize;
  open.cookie_key_size = csize;
  open.fd = static_cast<std::uint32_t>(fd);
  open.flags = 0;
  return std::string(reinterpret_cast<const char*>(&open), sizeof open) + keys;
}

// By value: callers pass temporaries.
ParseError error_of(const ParseResult& r) {
  REQUIRE(std::holds_alternative<ParseError>(r));
  return std::get<ParseError>(r);
}

template <typename T>
T request_of(const ParseResult& r) {
  REQUIRE(std::holds_alternative<KernelRequest>(r));
  const auto& req = std::get<KernelRequest>(r);
  REQUIRE(std::holds_alternative<T>(req));
  return std::get<T>(req);
}

}  // namespace

TEST_CASE("parse_kernel_msg: OPEN yields ids, fd, volume key without its NUL and the binary cookie key",
          "[proto][kernel_msg]") {
  const std::string cookie("blob\0\xff\x01z", 8);
  const auto bytes = encode_open(7, 42, 99, "erofs,domain", cookie);
  const auto& open = request_of<OpenRequest>(parse(bytes));
  CHECK(open.msg_id == 7);
  CHECK(open.object_id == 42);
  CHECK(open.anon_fd == 99);
  CHECK(open.flags == 0);
  CHECK(open.volume_key == "erofs,domain");
  CHECK(open.volume_key.size() == 12);  // the kernel's NUL is stripped
  CHECK(open.cookie_key == cookie);     // embedded NUL and high bytes kept
  CHECK(open.cookie_key.size() == 8);
}

TEST_CASE("parse_kernel_msg: OPEN with an empty cookie key is structurally valid",
          "[proto][kernel_msg]") {
  // Rejecting the empty id is the engine's job (validate_blob_id), with a copen.
  const auto& open = request_of<OpenRequest>(parse(encode_open(1, 2, 5, "erofs,x", "")));
  CHECK(open.cookie_key.empty());
  CHECK(open.volume_key == "erofs,x");
}

TEST_CASE("parse_kernel_msg: OPEN flags are passed through", "[proto][kernel_msg]") {
  cachefiles_open open{};
  open.volume_key_size = 3;
  open.cookie_key_size = 1;
  open.fd = 11;
  open.flags = 0xa5a5;
  std::string payload(reinterpret_cast<const char*>(&open), sizeof open);
  payload += std::string("ab\0c", 4);
  const auto& req = request_of<OpenRequest>(parse(raw_msg(3, CACHEFILES_OP_OPEN, 4, payload)));
  CHECK(req.flags == 0xa5a5);
  CHECK(req.volume_key == "ab");
  CHECK(req.cookie_key == "c");
}

TEST_CASE("parse_kernel_msg: READ yields offset and length, CLOSE yields its ids",
          "[proto][kernel_msg]") {
  const auto& rd = request_of<ReadRequest>(parse(encode_read(9, 13, 0x1'0000'0000ULL, 4096)));
  CHECK(rd.msg_id == 9);
  CHECK(rd.object_id == 13);
  CHECK(rd.offset == 0x1'0000'0000ULL);
  CHECK(rd.length == 4096);

  const auto& cl = request_of<CloseRequest>(parse(encode_close(10, 14)));
  CHECK(cl.msg_id == 10);
  CHECK(cl.object_id == 14);
}

TEST_CASE("parse_kernel_msg: anything shorter than the header is TRUNCATED_HEADER with no fd",
          "[proto][kernel_msg]") {
  const auto full = encode_read(1, 2, 3, 4);
  for (std::size_t n = 0; n < sizeof(cachefiles_msg); ++n) {
    INFO("bytes: " << n);
    const auto& err = error_of(parse(full.substr(0, n)));
    CHECK(err.kind == ParseErrorKind::TRUNCATED_HEADER);
    CHECK(err.leaked_fd == -1);
  }
}

TEST_CASE("parse_kernel_msg: len disagreeing with the bytes read is LENGTH_MISMATCH",
          "[proto][kernel_msg]") {
  SECTION("len claims more than was read") {
    const auto bytes = raw_msg(77, CACHEFILES_OP_CLOSE, 1, "", sizeof(cachefiles_msg) + 1);
    const auto& err = error_of(parse(bytes));
    CHECK(err.kind == ParseErrorKind::LENGTH_MISMATCH);
    CHECK(err.msg_id == 77);
  }
  SECTION("len claims less than was read") {
    auto bytes = encode_read(78, 1, 0, 10);
    bytes += "extra";
    const auto& err = error_of(parse(bytes));
    CHECK(err.kind == ParseErrorKind::LENGTH_MISMATCH);
    CHECK(err.msg_id == 78);
    CHECK(err.opcode == CACHEFILES_OP_READ);
  }
  SECTION("an OPEN with a lying len hands back no fd: its payload was not trusted") {
    auto bytes = encode_open(79, 1, 33, "erofs,a", "b");
    bytes.pop_back();
    const auto& err = error_of(parse(bytes));
    CHECK(err.kind == ParseErrorKind::LENGTH_MISMATCH);
    CHECK(err.leaked_fd == -1);
  }
}

TEST_CASE("parse_kernel_msg: a message over CACHEFILES_MSG_MAX_SIZE is TOO_LARGE; exactly the max parses",
          "[proto][kernel_msg]") {
  const std::size_t fixed = sizeof(cachefiles_msg) + sizeof(cachefiles_open);
  const std::string vkey = "erofs,v";  // + NUL
  const std::size_t cookie_len = KERNEL_MSG_MAX_SIZE - fixed - vkey.size() - 1;

  const auto at_max = encode_open(5, 6, 7, vkey, std::string(cookie_len, 'c'));
  REQUIRE(at_max.size() == KERNEL_MSG_MAX_SIZE);
  CHECK(request_of<OpenRequest>(parse(at_max)).cookie_key.size() == cookie_len);

  const auto over = encode_open(5, 6, 7, vkey, std::string(cookie_len + 1, 'c'));
  REQUIRE(over.size() == KERNEL_MSG_MAX_SIZE + 1);
  const auto& err = error_of(parse(over));
  CHECK(err.kind == ParseErrorKind::TOO_LARGE);
  CHECK(err.msg_id == 5);
  CHECK(err.leaked_fd == -1);
}

TEST_CASE("parse_kernel_msg: READ payload shorter than struct cachefiles_read is TRUNCATED_PAYLOAD",
          "[proto][kernel_msg]") {
  const auto full = encode_read(21, 2, 4096, 4096);
  const std::string payload = full.substr(sizeof(cachefiles_msg));
  for (std::size_t n = 0; n < sizeof(cachefiles_read); ++n) {
    INFO("payload bytes: " << n);
    const auto& err = error_of(parse(raw_msg(21, CACHEFILES_OP_READ, 2, payload.substr(0, n))));
    CHECK(err.kind == ParseErrorKind::TRUNCATED_PAYLOAD);
    CHECK(err.msg_id == 21);
    CHECK(err.leaked_fd == -1);
  }
}

TEST_CASE("parse_kernel_msg: OPEN payload shorter than struct cachefiles_open has no fd to leak",
          "[proto][kernel_msg]") {
  const auto payload = raw_open_payload(2, 0, 44, "");
  for (std::size_t n = 0; n < sizeof(cachefiles_open); ++n) {
    INFO("payload bytes: " << n);
    const auto& err = error_of(parse(raw_msg(31, CACHEFILES_OP_OPEN, 2, payload.substr(0, n))));
    CHECK(err.kind == ParseErrorKind::TRUNCATED_PAYLOAD);
    CHECK(err.leaked_fd == -1);
  }
}

TEST_CASE("parse_kernel_msg: OPEN key sizes overflowing the payload are KEY_OVERFLOW and return the fd",
          "[proto][kernel_msg]") {
  struct Case {
    const char* what;
    std::uint32_t vsize, csize;
    std::string keys;
  };
  const Case cases[] = {
      {"cookie key one byte too long", 4, 3, std::string("abc\0de", 6)},
      {"volume key one byte too long", 5, 0, std::string("abc\0", 4)},
      {"volume_key_size = 0xffffffff", 0xffffffffu, 0, std::string("abc\0", 4)},
      // 0xffffffff + 2 wraps to 1 in u32 arithmetic, which would "fit".
      {"u32 sum wraps around", 0xffffffffu, 2, std::string("a\0", 2)},
      {"cookie_key_size = 0xffffffff", 2, 0xffffffffu, std::string("a\0", 2)},
      {"both huge", 0x80000000u, 0x80000000u, std::string("a\0", 2)},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const auto bytes = raw_msg(41, CACHEFILES_OP_OPEN, 3, raw_open_payload(c.vsize, c.csize, 57, c.keys));
    const auto& err = error_of(parse(bytes));
    CHECK(err.kind == ParseErrorKind::KEY_OVERFLOW);
    CHECK(err.msg_id == 41);
    CHECK(err.opcode == CACHEFILES_OP_OPEN);
    CHECK(err.leaked_fd == 57);
  }
}

TEST_CASE("parse_kernel_msg: a volume key that is empty or not NUL-terminated is BAD_VOLUME_KEY and returns the fd",
          "[proto][kernel_msg]") {
  SECTION("size 0") {
    const auto bytes = raw_msg(51, CACHEFILES_OP_OPEN, 3, raw_open_payload(0, 3, 58, "abc"));
    const auto& err = error_of(parse(bytes));
    CHECK(err.kind == ParseErrorKind::BAD_VOLUME_KEY);
    CHECK(err.leaked_fd == 58);
  }
  SECTION("last byte is not NUL") {
    const auto bytes = raw_msg(52, CACHEFILES_OP_OPEN, 3, raw_open_payload(5, 1, 59, "erofsX"));
    const auto& err = error_of(parse(bytes));
    CHECK(err.kind == ParseErrorKind::BAD_VOLUME_KEY);
    CHECK(err.msg_id == 52);
    CHECK(err.leaked_fd == 59);
  }
  SECTION("NUL in the middle but not at the end") {
    const auto bytes =
        raw_msg(53, CACHEFILES_OP_OPEN, 3, raw_open_payload(4, 0, 60, std::string("a\0bc", 4)));
    CHECK(error_of(parse(bytes)).kind == ParseErrorKind::BAD_VOLUME_KEY);
  }
}

TEST_CASE("parse_kernel_msg: an unknown opcode is UNKNOWN_OPCODE carrying msg_id and opcode",
          "[proto][kernel_msg]") {
  const auto bytes = raw_msg(61, 0x99, 3, std::string(16, '\0'));
  const auto& err = error_of(parse(bytes));
  CHECK(err.kind == ParseErrorKind::UNKNOWN_OPCODE);
  CHECK(err.msg_id == 61);
  CHECK(err.opcode == 0x99);
  CHECK(err.leaked_fd == -1);
}

TEST_CASE("to_string names every parse error kind", "[proto][kernel_msg]") {
  for (auto k : {ParseErrorKind::TRUNCATED_HEADER, ParseErrorKind::LENGTH_MISMATCH,
                 ParseErrorKind::TOO_LARGE, ParseErrorKind::TRUNCATED_PAYLOAD,
                 ParseErrorKind::KEY_OVERFLOW, ParseErrorKind::BAD_VOLUME_KEY,
                 ParseErrorKind::UNKNOWN_OPCODE})
    CHECK(to_string(k) != "?");
}

TEST_CASE("format_copen writes the kernel's `copen <msg_id>,<size>` command", "[proto][kernel_msg]") {
  CHECK(format_copen(5, 1234) == "copen 5,1234");
  CHECK(format_copen(0, 0) == "copen 0,0");
  CHECK(format_copen(7, -2) == "copen 7,-2");
  CHECK(format_copen(std::numeric_limits<std::uint32_t>::max(), std::int64_t{1} << 40) ==
        "copen 4294967295,1099511627776");
  CHECK(RESTORE_COMMAND == "restore");
}

}  // namespace ondemand::proto
