// harness-seccomp-victim: stands in for ondemand-worker (as `worker_binary`),
// installs the worker's own system call filter (worker/seccomp_filter.h, the
// function the worker calls) and then makes one call that is not on its
// list, so the supervisor's report of a seccomp kill is checked against the
// real filter. ptrace: a call the worker has no business making.
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>

#include "worker/seccomp_filter.h"

int main() {
  ondemand::worker::apply_seccomp_filter(/*network=*/false);
  std::fprintf(stderr, "seccomp victim pid=%d: filter on, calling ptrace\n", static_cast<int>(::getpid()));
  ::syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
  std::fprintf(stderr, "seccomp victim: ptrace was let through\n");
  return 70;
}
