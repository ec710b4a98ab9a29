// The d2seg edge runtime: header-only C++17 kernels the generated model code (NAME.cpp from
// deploy/lower_to_cpp.py) is built against. No allocation, exceptions or I/O.
#ifndef D2SEG_KERNELS_H
#define D2SEG_KERNELS_H

#include "d2seg_conv.h"
#include "d2seg_ops.h"
#include "d2seg_quant.h"

#endif  // D2SEG_KERNELS_H
