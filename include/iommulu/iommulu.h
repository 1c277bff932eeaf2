/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Umbrella header: everything libiommulu exports. */
#include "common.h"
#include "fdclass.h"
#include "iommufd.h"
#include "luo.h"
#include "manifest.h"
#include "memfd.h"
#include "pci.h"
#include "plan.h"
#include "vfio.h"
