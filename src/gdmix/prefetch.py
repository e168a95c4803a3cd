"""A software prefetch for compiled loops that gather at random (numba intrinsic).

A loop that reads ``table[key[i]]`` for millions of random keys waits on a cache miss,
and often a TLB miss, at every row. Asking for row ``i + PREFETCH_DISTANCE``'s entry
while row ``i`` is computed overlaps those waits: scoring 20M rows against 1M entities'
coefficients took 0.33-0.38 s instead of 0.54-0.62 s inside ``gdmix train`` on 2 cores
(``benchmarks/pipeline.py``'s job). Where the table fits in cache (key lookups into 1M
codes) or the loop is bound by writes (the counting sort), it gained nothing and is not
used. A prefetch is only a hint: it never faults, so an address past the end of an
array is harmless, and results do not change.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["PREFETCH_DISTANCE", "prefetch"]

#: How many rows ahead a gathering loop asks for its entries.
PREFETCH_DISTANCE = 16


@intrinsic
def prefetch(typingctx: Any, array: Any, flat_index: Any) -> Any:
    """Hint that ``array``'s element at ``flat_index`` (counted from its first element
    in memory, as in a C-ordered array) will be read soon; returns nothing."""
    if not isinstance(array, types.Array) or not isinstance(flat_index, types.Integer):
        return None
    sig = types.void(array, flat_index)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", fnty=fnty)
        # read (0), high temporal locality (3), data cache (1)
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen
