// flint::Error, the one exception library code throws, and helpers that build
// its message. The server turns it into a status in one place.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace flint {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// fail("tensor ", name, ": offset ", off, " past end of file") throws Error.
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw Error(os.str());
}

}  // namespace flint
