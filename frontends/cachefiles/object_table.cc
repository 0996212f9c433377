#include "frontends/cachefiles/object_table.h"

namespace ondemand::worker {

std::shared_ptr<Object> ObjectTable::insert(std::shared_ptr<Object> object) {
  auto& slot = objects_[object->object_id];
  auto previous = std::move(slot);
  slot = std::move(object);
  return previous;
}

std::shared_ptr<Object> ObjectTable::find(std::uint32_t object_id) const {
  auto it = objects_.find(object_id);
  return it == objects_.end() ? nullptr : it->second;
}

std::shared_ptr<Object> ObjectTable::erase(std::uint32_t object_id) {
  auto it = objects_.find(object_id);
  if (it == objects_.end()) return nullptr;
  auto object = std::move(it->second);
  objects_.erase(it);
  return object;
}

}  // namespace ondemand::worker
