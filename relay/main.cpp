#include "relay/cli.hpp"

int main(int argc, char** argv) {
  return stsrelay::relay::run_cli(argc, argv);
}
