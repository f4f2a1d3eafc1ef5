// flintd: the gRPC and HTTP daemon. SIGTERM or SIGINT drains it (a second one cuts the
// drain short); it exits 0 after a drain, 1 when it cannot start or its backend failed
// for good (a faulted GPU: health goes NOT_SERVING first), 2 on bad flags.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "common/error.h"
#include "server/daemon.h"

int main(int argc, char** argv) {
  flint::server::FlintdOptions options;
  if (const char* key = std::getenv("FLINT_API_KEY")) options.api_key = key;  // --api-key overrides it
  bool help = false;
  if (auto error = flint::server::parse_flintd_args(std::vector<std::string>(argv + 1, argv + argc), options, help)) {
    std::cerr << "flintd: " << *error << "\n" << flint::server::flintd_usage();
    return 2;
  }
  if (help) {
    std::cout << flint::server::flintd_usage();
    return 0;
  }
  // Every thread started from here on inherits the mask: only the waiter below sees the signals.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A client that closes its connection must fail our write, not end the process.
  signal(SIGPIPE, SIG_IGN);
  try {
    flint::server::Daemon daemon(options);
    std::thread waiter([&] {
      for (int received = 0; received < 2;) {
        int signal = 0;
        if (sigwait(&signals, &signal) != 0) continue;
        ++received;
        std::fprintf(stderr, "flintd: %s received%s\n", signal == SIGTERM ? "SIGTERM" : "SIGINT",
                     received == 1 ? ", draining" : " again, stopping now");
        daemon.request_stop();
      }
    });
    waiter.detach();  // it may still wait for a second signal when we exit
    daemon.run_until_stopped();
    return daemon.failed() ? 1 : 0;
  } catch (const std::exception& e) {
    std::cerr << "flintd: error: " << e.what() << "\n";
    return 1;
  }
}
