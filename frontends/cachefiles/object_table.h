// Objects the kernel has opened with us: object id -> anonymous fd + blob,
// in order of last use.
//
// Entries are shared: a READ in flight holds its Object, so a CLOSE that
// erases the entry closes the anonymous fd only once the last in-flight READ
// on it has finished (the fd's release is what tells the kernel the object is
// closed). Owned by the event loop thread; pool threads only see Objects
// they were handed.
//
// The order of use serves the fd budget (`max_open_objects`): the front end
// closes the least recently used idle objects beyond it (cachefiles_frontend.cc,
// enforce_budget).
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "engine/engine.h"

namespace ondemand::worker {

// An engine Target (blob reference, blob, and `fd`: the OPEN's anonymous
// fd) plus what cachefiles needs per object.
struct Object : Target {
  std::uint32_t object_id = 0;
  // Set by the first READ job (cachefiles_frontend.cc, fill_whole_blob): -1
  // not known yet, 1 the blob is a compressed EROFS image and every READ
  // fills all of it, 0 READs fill their window.
  std::atomic<int> fill_whole{-1};
  // Loop thread only (handle_read): which fill a READ gets.
  ReadAhead read_ahead;
  FillAheadStreams fill_ahead;
};

class ObjectTable {
 public:
  // Returns the entry it replaced, if any (a duplicate OPEN for a live id
  // means our table is stale; the old entry is dropped, logged by caller).
  // The new entry is the most recently used.
  std::shared_ptr<Object> insert(std::shared_ptr<Object> object);
  std::shared_ptr<Object> find(std::uint32_t object_id) const;
  // find(), and the entry becomes the most recently used.
  std::shared_ptr<Object> use(std::uint32_t object_id);
  std::shared_ptr<Object> erase(std::uint32_t object_id);
  std::size_t size() const { return objects_.size(); }
  template <typename F> void for_each(F&& f) const {
    for (const auto& [id, entry] : objects_) f(entry.object);
  }
  // Object ids from the least recently used on.
  const std::list<std::uint32_t>& by_use() const { return order_; }

 private:
  struct Entry {
    std::shared_ptr<Object> object;
    std::list<std::uint32_t>::iterator position;  // in order_
  };
  std::unordered_map<std::uint32_t, Entry> objects_;
  std::list<std::uint32_t> order_;  // least recently used first
};

}  // namespace ondemand::worker
