// Worker exit codes: the contract between ondemand-worker and the supervisor.
//
// The supervisor decides what to do with a dead worker from this code alone
// (classify_exit), so a configuration error parks the worker instead of
// turning into a crash loop, and a clean stop is not counted as a crash.
// Values follow sysexits.h where one fits. Changing a value is a protocol
// change: old supervisors must keep classifying new workers correctly.
#pragma once

#include <cstdint>
#include <string>

namespace ondemand::proto {

enum class ExitCode : std::uint8_t {
  OK = 0,             // asked to stop (SIGTERM, handed over on upgrade)
  USAGE = 64,         // bad command line: a deployment error, never transient
  HANDOFF_FAILED = 69,// no device fd from the supervisor (EX_UNAVAILABLE)
  INTERNAL = 70,      // bug or broken invariant (EX_SOFTWARE): restart
  // read() on the device failed with nothing but errors for a while (EMFILE
  // at the fd limit, EIO): a fresh process may cure it (EX_OSERR): restart.
  DEVICE_READ_FAILING = 71,
  DEVICE_LOST = 74,   // device I/O failed in a way restore may cure (EX_IOERR)
  TEMPORARY = 75,     // transient start failure (EX_TEMPFAIL): restart
  CONFIG = 78,        // configuration rejected (EX_CONFIG): do not spin
  // cachefiles marked the cache dead after an I/O error on cache_dir
  // (cachefiles_io_error: CACHEFILES_DEAD, every device write then fails
  // with EIO). Nothing a new worker does can revive it while the device stays
  // bound: park. No sysexits.h value fits.
  CACHE_DEAD = 79,
};

// What the supervisor should do about a worker that ended.
enum class ExitClass {
  STOPPED,      // clean exit: restart only if the supervisor still wants one
  CRASHED,      // killed by a signal or failed at run time: restart, with backoff
  FATAL_CONFIG, // will fail the same way again: park until told otherwise
  CACHE_DEAD,   // the kernel's cache is dead: park; the operator must unbind and fix cache_dir
};

// `wait_status` is the raw status from waitid/waitpid-style reaping, given as
// (exited, code_or_signal): exited=false means killed by signal code_or_signal.
ExitClass classify_exit(bool exited, int code_or_signal);

std::string describe_exit(bool exited, int code_or_signal);

}  // namespace ondemand::proto
