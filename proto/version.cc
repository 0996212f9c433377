#include "proto/channel.h"

namespace ondemand::proto {

// ONDEMAND_VERSION comes from proto/CMakeLists.txt, for this file only.
const std::string_view VERSION = ONDEMAND_VERSION;

}  // namespace ondemand::proto
