// The CUDA emulator's <cuda_runtime_api.h> (tests/cuda_emu/README.md).
#pragma once
#include "tests/cuda_emu/cuda_emu.h"
