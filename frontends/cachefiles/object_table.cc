#include "frontends/cachefiles/object_table.h"

namespace ondemand::worker {

std::shared_ptr<Object> ObjectTable::insert(std::shared_ptr<Object> object) {
  const auto id = object->object_id;
  auto [it, fresh] = objects_.try_emplace(id);
  std::shared_ptr<Object> previous;
  if (fresh) {
    it->second.position = order_.insert(order_.end(), id);
  } else {
    previous = std::move(it->second.object);
    order_.splice(order_.end(), order_, it->second.position);
  }
  it->second.object = std::move(object);
  return previous;
}

std::shared_ptr<Object> ObjectTable::find(std::uint32_t object_id) const {
  auto it = objects_.find(object_id);
  return it == objects_.end() ? nullptr : it->second.object;
}

std::shared_ptr<Object> ObjectTable::use(std::uint32_t object_id) {
  auto it = objects_.find(object_id);
  if (it == objects_.end()) return nullptr;
  order_.splice(order_.end(), order_, it->second.position);
  return it->second.object;
}

std::shared_ptr<Object> ObjectTable::erase(std::uint32_t object_id) {
  auto it = objects_.find(object_id);
  if (it == objects_.end()) return nullptr;
  auto object = std::move(it->second.object);
  order_.erase(it->second.position);
  objects_.erase(it);
  return object;
}

}  // namespace ondemand::worker
