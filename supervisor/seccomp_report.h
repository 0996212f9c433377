// Which system call got a worker killed by its seccomp filter.
//
// SCMP_ACT_KILL_PROCESS leaves the supervisor only "killed by SIGSYS" in
// waitid(); the number of the call is in the kernel's audit record
// (kernel/seccomp.c seccomp_log -> audit_seccomp, logged for KILL_PROCESS
// by default), which reaches /dev/kmsg as
//   audit: type=1326 audit(...): ... pid=<pid> comm=... sig=31 arch=c000003e
//   syscall=<nr> compat=0 ip=... code=0x80000000
// when the kernel has CONFIG_AUDITSYSCALL and no audit daemon takes the
// records (kauditd prints them instead). Without that (the VM test kernel
// has no audit) only the signal is known, and the report says so.
// kauditd prints asynchronously, so the record may land a moment after the
// death is seen: the supervisor looks again once, later.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

namespace ondemand::supervisor {

// The syscall number of a seccomp audit record (type=1326) for `pid` in one
// /dev/kmsg record (or dmesg line); nullopt for any other text.
std::optional<long> seccomp_syscall_of(std::string_view kmsg_record, pid_t pid);

// The last seccomp audit record for `pid` in /dev/kmsg (read without
// blocking); nullopt when there is none or the log cannot be read.
std::optional<long> find_seccomp_syscall(pid_t pid);

// "ptrace" for 101 on x86-64 (libseccomp's table for this architecture),
// "" when unknown.
std::string syscall_name(long nr);

// The exit description for a worker killed by SIGSYS: "killed by seccomp
// (SIGSYS) in system call 101 (ptrace)", or without the call when it is not
// known (yet).
std::string describe_seccomp_kill(std::optional<long> syscall);

}  // namespace ondemand::supervisor
