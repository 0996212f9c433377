// The worker's system call allow-list (config sandbox_seccomp).
//
// The worker applies it to itself (all threads: SCMP_FLTATR_CTL_TSYNC) once
// it has its fds and before it reads a kernel message; any call not on the
// list kills the whole process with SIGSYS (SCMP_ACT_KILL_PROCESS), which
// the supervisor reports as `killed by seccomp (SIGSYS)` with the call's
// number and name when the kernel's audit record is in /dev/kmsg
// (supervisor/seccomp_report.h). A filter cannot be lifted: an upgrade's
// new binary starts from a fresh exec, so the list only has to fit the
// binary that installs it.
//
// The list was taken from strace runs of the worker under the host harness
// and the VM chaos/upgrade scenarios (serving, failover, spare promotion,
// rolling upgrade, adoption, culling as root), plus what the logging path
// (stderr or sd_journal) and the registry backend (libcurl: sockets,
// name resolution, poll) need; a registry request by host name (libcurl's
// resolver thread, glibc's DNS over UDP and over TCP) runs under it in the
// [worker][sandbox] unit tests. What it leaves out on purpose: execve and
// the other ways to a new program, ptrace/process_vm_*, mount and
// namespaces, module and kexec loading, keyrings, bpf/perf, changing ids or
// capabilities, io_uring, userfaultfd.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ondemand::worker {

// The system call names on the allow-list (for tests and the log line).
const std::vector<std::string_view>& seccomp_allowed_syscalls();

// Installs the filter on every thread of the calling process. Throws
// std::runtime_error naming the step (and, for a name libseccomp does not
// know on this architecture, the call) when it cannot; the caller decides
// whether that is fatal. Needs no_new_privs or CAP_SYS_ADMIN, as the kernel
// does for any unprivileged filter; sets no_new_privs itself.
//
// `network`: a network backend (registries) is configured. Without one,
// socket(2) is allowed only for AF_UNIX (the channel, worker.sock, the
// journal); any other family kills, which closes what Landlock cannot:
// UDP, and TCP where the kernel has no Landlock network rules (ABI < 4).
void apply_seccomp_filter(bool network);

}  // namespace ondemand::worker
