#include "supervisor/seccomp_report.h"

#include <catch2/catch.hpp>

namespace ondemand::supervisor {

TEST_CASE("seccomp_syscall_of reads the syscall of a seccomp audit record for the pid", "[supervisor][seccomp]") {
  // As /dev/kmsg gives it (prefix "level,seq,usec,flags;"), from this host.
  const std::string record =
      "5,2171,1234567890,-;audit: type=1326 audit(1764700000.123:42): auid=4294967295 uid=65534 gid=65534 "
      "ses=4294967295 subj=unconfined pid=4242 comm=\"ondemand-worker\" exe=\"/usr/bin/ondemand-worker\" sig=31 "
      "arch=c000003e syscall=101 compat=0 ip=0x7f0000001234 code=0x80000000\n";
  CHECK(seccomp_syscall_of(record, 4242) == 101);
  CHECK_FALSE(seccomp_syscall_of(record, 424));   // another pid, a prefix of it
  CHECK_FALSE(seccomp_syscall_of(record, 42420));
  // ppid= must not be taken for pid=.
  CHECK_FALSE(seccomp_syscall_of("audit: type=1326 ppid=7 pid=8 syscall=9", 7));
  CHECK(seccomp_syscall_of("audit: type=1326 ppid=7 pid=8 syscall=9", 8) == 9);
  // Another audit type, no syscall field, garbage.
  CHECK_FALSE(seccomp_syscall_of("audit: type=1300 pid=4242 syscall=101", 4242));
  CHECK_FALSE(seccomp_syscall_of("audit: type=1326 pid=4242 sig=31", 4242));
  CHECK_FALSE(seccomp_syscall_of("audit: type=1326 pid=4242 syscall=", 4242));
  CHECK_FALSE(seccomp_syscall_of("", 4242));
}

TEST_CASE("describe_seccomp_kill names the call when it is known", "[supervisor][seccomp]") {
  CHECK(describe_seccomp_kill(101) == "killed by seccomp (SIGSYS) in system call 101 (ptrace)");
  CHECK(describe_seccomp_kill(std::nullopt) == "killed by seccomp (SIGSYS)");
  CHECK(describe_seccomp_kill(99999) == "killed by seccomp (SIGSYS) in system call 99999");
}

}  // namespace ondemand::supervisor
