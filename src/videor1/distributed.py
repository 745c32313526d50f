"""The end of a multi-process run: tear the process group down while the interpreter is still whole.

Why a barrier plus `destroy_process_group()` was not enough (a rank aborting with "terminate called without
an active exception" after all its work was done): gloo runs collectives on the group's worker threads
(`pt_gloo_runloop`). A worker marks a collective done, which wakes the caller, and only then drops its own
reference to it; a barrier's work even holds the collectives issued before it (the last `gather_object`),
so the worker that ran the final barrier releases their tensors after the main thread has moved on.
Releasing a tensor that Python has seen takes the GIL. On a busy machine the main thread reaches interpreter
exit first; once finalization has begun CPython ends a thread that asks for the GIL (pthread_exit), the
unwind meets a noexcept destructor (~AsyncBarrierWork -> ~AsyncAllgatherWork) and std::terminate aborts.
`destroy_process_group()` only makes torch forget the group; the group and its workers live on while
anything references it: a DDP-wrapped model (which accelerate also keeps), or `torch.distributed.nn.
functional`, whose `group=group.WORLD` default arguments capture the group when the module is first
imported after the group exists (DDP imports it). Only the group's destructor stops the workers: it drains
the queue and joins them with the GIL released, so they finish while Python can still serve them.
`shutdown` makes that destructor run inside it, before anything can start finalizing.
"""

from __future__ import annotations

import gc
import sys
import warnings
import weakref
from typing import Any


def shutdown(accelerator: Any) -> None:
    """End a multi-process run cleanly: meet, release the group's users, destroy it and join its threads."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return  # a single process, or already shut down
    # every rank is past its last collective: destroying the group closes its connections, which would fail
    # a peer still inside a collective with this rank ("Connection closed by peer")
    accelerator.wait_for_everyone()
    # the prepared models (their DDP wrappers hold the group), optimizers, schedulers and dataloaders: drop
    # accelerate's references, then collect the cycles they sit in; collecting later, after the destroy,
    # would let DDP's reducer drop the group's last reference while holding the GIL the workers may need
    accelerator.free_memory()
    gc.collect()
    group = dist.group.WORLD
    _release_default_arguments(group)
    gone = weakref.ref(group)
    del group
    # the last reference goes here: the group's destructor (run without the GIL) drains gloo's queue and joins
    # its worker threads, so none is left to touch Python objects once the interpreter starts finalizing;
    # end_training also finishes any accelerate trackers
    accelerator.end_training()
    if gone() is not None and not dist.is_initialized():
        warnings.warn(
            "videor1.distributed.shutdown: the process group is still referenced after it was destroyed (is a "
            "trainer or a DDP-wrapped model still alive?), so its gloo worker threads outlive the run and can "
            "abort the process at exit; drop those references before calling shutdown",
            RuntimeWarning,
            stacklevel=2,
        )


def _release_default_arguments(group: Any) -> None:
    """Point default arguments that captured `group` back at None (which means the default group anyway)."""
    # torch.distributed.nn.functional evaluates `group=group.WORLD` at import time: imported after init (DDP
    # does), ten of its functions hold the group for the life of the process
    functional = sys.modules.get("torch.distributed.nn.functional")
    for function in list(vars(functional).values()) if functional is not None else []:
        defaults = getattr(function, "__defaults__", None)
        if defaults and any(value is group for value in defaults):
            function.__defaults__ = tuple(None if value is group else value for value in defaults)


def abandon() -> None:
    """End the process group of a failed run without meeting: a peer may be dead or inside another collective."""
    import torch.distributed as dist

    # no barrier (it could pair with a failing peer's unrelated collective); the launcher reports the failure
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
