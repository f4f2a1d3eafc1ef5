// Helpers shared by the unit tests.
#pragma once
#include <gtest/gtest.h>

#include <initializer_list>
#include <string>

#include "common/error.h"

namespace flint::test {

// Runs f, which must throw flint::Error whose message holds every one of `parts`.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no flint::Error thrown";
  } catch (const Error& e) {
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

}  // namespace flint::test
