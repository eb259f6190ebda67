/* mproc.h - multi-process and multi-thread work for C.  Include this. */
#ifndef MPROC_H
#define MPROC_H

#include "mproc/common.h"
#include "mproc/error.h"
#include "mproc/log.h"
#include "mproc/worker.h"
#include "mproc/pool.h"
#include "mproc/task.h"
#include "mproc/tpool.h"
#include "mproc/async.h"
#include "mproc/limiter.h"
#include "mproc/group.h"
#include "mproc/state.h"
#include "mproc/context.h"
#include "mproc/super.h"

#endif
