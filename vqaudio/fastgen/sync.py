"""Two-thread hand-off inside numba kernels: acquire/release counters and a polite spin.

numba has no atomics; these intrinsics emit LLVM's atomic load (acquire) and
store (release), so a counter published after writing a buffer makes the
buffer visible to the thread that sees the counter (and the compiler cannot
hoist the load out of a spin loop). The spin pauses the core (x86 `pause`)
and, after `SPINS_BEFORE_YIELD` turns, gives the CPU away with `sched_yield`
(POSIX), so two threads on a busy machine (the other one descheduled) cost a
context switch per hand-off instead of a whole time slice. (On Windows,
without sched_yield, the spin only pauses.)

numba's cache tracks the timestamp of the file of the cached function only:
kernel.py inlines `wait_for`, so after editing this file, touch kernel.py (a
pip install gives every file a new timestamp).
"""

from __future__ import annotations

import os
import platform

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

SPINS_BEFORE_YIELD = 2000  # ~10-50 µs of pause; a hand-off on an idle machine takes 30-300 ns
_MACHINE = platform.machine().lower()


def _item_pointer(context, builder, sig, args):
    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])


@intrinsic
def load_acquire(typingctx, arr, idx):
    """arr[idx] as an atomic load with acquire ordering (arr: 1-D int64 array)."""
    def codegen(context, builder, sig, args):
        return builder.load_atomic(_item_pointer(context, builder, sig, args), "acquire", 8)
    return arr.dtype(arr, idx), codegen


@intrinsic
def store_release(typingctx, arr, idx, val):
    """arr[idx] = val as an atomic store with release ordering (arr: 1-D int64 array)."""
    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
        builder.store_atomic(v, _item_pointer(context, builder, sig, args), "release", 8)
        return context.get_dummy_value()
    return types.void(arr, idx, val), codegen


@intrinsic
def _cpu_relax(typingctx):
    def codegen(context, builder, sig, args):
        # x86 only: the one intrinsic tested here; elsewhere the loop spins on the atomic load alone
        if _MACHINE in ("x86_64", "amd64", "i386", "i686"):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _sched_yield(typingctx):
    def codegen(context, builder, sig, args):
        if os.name == "posix":  # POSIX sched_yield (libc); elsewhere the spin only pauses
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(cache=True, inline="always", nogil=True)
def wait_for(sync, slot, count, abort):
    """Spin until sync[slot] >= count (the other thread has published its count-th hand-off).

    Returns 1 if the wait outlasted the spin and yielded the CPU (the other
    thread was most likely descheduled: the machine is busy), else 0; -1 as
    soon as sync[abort] is non-zero (the other thread will never publish).
    """
    spins = 0
    while load_acquire(sync, slot) < count:
        if load_acquire(sync, abort) != 0:
            return -1
        _cpu_relax()
        spins += 1
        if spins > SPINS_BEFORE_YIELD:
            _sched_yield()
    return 1 if spins > SPINS_BEFORE_YIELD else 0


@njit(cache=True, inline="always", nogil=True)
def publish_and_wait(sync, mine, theirs, count, abort):
    """sync[mine] = count (release), then `wait_for(sync, theirs, count, abort)`: a two-way hand-off."""
    store_release(sync, mine, count)
    return wait_for(sync, theirs, count, abort)
